"""Start a QAT model's activation ranges where the data puts them, not at tfmot's ±6.

tfmot's activation quantizers (``MovingAverageQuantizer``) start every range at [-6, 6] and
move it by an exponential moving average with decay 0.999 per training step; its input
quantizer (``AllValuesQuantizer``) starts at [0, 0]. A fine-tune of a trained model is a few
dozen or hundred steps, after which 0.999^steps of each range is still the starting value:
activations beyond ±6 (logits, the sums of a residual network, pre-activation outputs of a
model trained elsewhere) are clipped for the whole fine-tune and in the exported int8 model,
and small ones get a coarse step. On fer's mini-Xception the prepared model agreed with the
float model on 27% of held-out photos before training and QAT lost 41 points of agreement.

:func:`start_ranges` runs the float model (every quantize wrapper replaced by a copy of the
layer it wraps, with its weights and activation) on a seeded subset of the training samples and sets each
activation range to the mean over batches of the batch's [min, max] (0 included, as
TFLite requires) — where tfmot's moving average would settle — and the input range to the
samples' [min, max]. Training then moves them on as tfmot always does.

:func:`freeze_batch_norms` keeps batch normalization on its learnt statistics during the
fine-tune (the default of :func:`edgeq.qat`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

# Variables of tfmot's activation quantizers, by the suffix of their names: a wrapped layer's
# activation (``post_activation``), an output quantizer (``output``), the model's input
# quantizer (``<QuantizeLayer name>_min``, below).
_ACTIVATION_SUFFIXES = ("post_activation", "output")


def _range_vars(layer: Any, stems: Sequence[str]) -> list[tuple[Any, Any]]:
    """``(min_var, max_var)`` pairs of ``layer``'s scalar quantizer ranges named ``<stem>_min``/``_max``."""
    found = {}
    for var in layer.non_trainable_weights:
        base = var.name.split("/")[-1].split(":")[0]
        for stem in stems:
            for end in ("min", "max"):
                if base == f"{stem}_{end}" and tuple(var.shape) == ():
                    found[(stem, end)] = var
    return [(found[(s, "min")], found[(s, "max")]) for s in stems if (s, "min") in found and (s, "max") in found]


def start_ranges(qmodel: Any, x: Sequence[np.ndarray], *, samples: int = 256, batch_size: int = 32,
                 seed: int = 0) -> int:
    """Set ``qmodel``'s activation and input ranges from ``x`` (one array per model input).

    Args:
        qmodel: a model from :func:`edgeq.quantize.qat.plan.quantize_model`.
        x: the training inputs, one array per model input, samples first.
        samples: how many samples (a seeded subset) to measure on.
        batch_size: the batch size the ranges are averaged over (as training's would be).
        seed: the subset's seed.

    Returns:
        How many ranges were set.
    """
    import tf_keras
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import QuantizeLayer
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import (
        QuantizeWrapperV2,
    )

    count = len(x[0])
    pick = np.sort(np.random.default_rng(seed).choice(count, size=min(samples, count), replace=False))
    arrays = [np.asarray(a[pick]) for a in x]

    fresh: dict[str, Any] = {}  # wrapper name -> a new layer of the wrapped one's config and weights

    def unwrap(layer: Any) -> Any:
        # A new layer, not the wrapped one: the wrapper swaps its weights for fake-quantized tensors.
        if isinstance(layer, QuantizeWrapperV2):
            inner = layer.layer
            config = inner.get_config()
            wrapped = getattr(getattr(inner, "activation", None), "activation", None)  # QuantizeAwareActivation's
            if wrapped is not None:
                config["activation"] = ("linear" if type(wrapped).__name__ == "NoOpActivation"
                                        else tf_keras.activations.serialize(wrapped))
            fresh[layer.name] = inner.__class__.from_config(config)
            return fresh[layer.name]
        if isinstance(layer, QuantizeLayer):
            return tf_keras.layers.Activation("linear", name=f"{layer.name}_float")
        return layer

    targets = {w.name: pairs for w in qmodel.layers
               if isinstance(w, QuantizeWrapperV2) and (pairs := _range_vars(w, _ACTIVATION_SUFFIXES))}
    wrappers = [w for w in qmodel.layers if w.name in targets]
    if not wrappers:
        return 0
    try:
        shadow = tf_keras.models.clone_model(qmodel, clone_function=unwrap)
        for layer in qmodel.layers:
            if layer.name in fresh:  # the wrapper holds the wrapped layer's variables (``<layer>/kernel:0``)
                own = {v.name.rsplit("/", 1)[-1]: v for v in layer.weights
                       if v.name.startswith(f"{layer.layer.name}/")}
                names = [v.name.rsplit("/", 1)[-1] for v in fresh[layer.name].weights]
                if any(n not in own for n in names):
                    raise ValueError(f"{layer.name} keeps its variables elsewhere")
                fresh[layer.name].set_weights([own[n].numpy() for n in names])
        probe = tf_keras.Model(shadow.inputs, [fresh[w.name].output for w in wrappers])
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # a model this does not know how to copy
        warnings.warn(f"QAT's activation ranges start at tfmot's defaults: {exc}", stacklevel=2)
        return 0
    # All the activations of a few samples at a time: at most ~256 MB of them at once.
    per_sample = sum(int(np.prod([d or 1 for d in o.shape[1:]])) * 4 for o in probe.outputs)
    step = max(1, min(batch_size, (256 << 20) // max(per_sample, 1)))
    lows: list[list[float]] = [[] for _ in wrappers]
    highs: list[list[float]] = [[] for _ in wrappers]
    for start in range(0, len(pick), batch_size):  # each training batch's [min, max], as tfmot's EMA sees it
        low, high = [0.0] * len(wrappers), [0.0] * len(wrappers)  # 0 is always in range
        for part in range(start, min(start + batch_size, len(pick)), step):
            batch = [a[part:part + step] for a in arrays]
            values = probe(batch[0] if len(batch) == 1 else batch, training=False)
            for i, v in enumerate(values if len(wrappers) > 1 else [values]):
                v = np.asarray(v)
                low[i], high[i] = min(low[i], float(v.min())), max(high[i], float(v.max()))
        for i in range(len(wrappers)):
            lows[i].append(low[i])
            highs[i].append(high[i])
    done = 0
    for w, lo, hi in zip(wrappers, lows, highs):
        for min_var, max_var in targets[w.name]:
            min_var.assign(float(np.mean(lo)))
            max_var.assign(float(np.mean(hi)))
            done += 1
    inputs = [layer for layer in qmodel.layers if isinstance(layer, QuantizeLayer)]
    by_input = dict(zip(qmodel.input_names, arrays))
    for layer in inputs:
        source = layer.inbound_nodes[0].inbound_layers
        array = by_input.get(getattr(source, "name", None))
        if array is None:
            continue
        for min_var, max_var in _range_vars(layer, (layer.name,)):
            min_var.assign(min(float(array.min()), 0.0))
            max_var.assign(max(float(array.max()), 0.0))
            done += 1
    return done


def freeze_batch_norms(qmodel: Any) -> int:
    """Keep every batch normalization of ``qmodel`` (wrapped or not) in inference mode while training.

    A short fine-tune in training mode normalizes with the statistics of each batch of the
    fine-tuning data and drags the learnt moving statistics toward them: on fer's
    mini-Xception with a learning rate of 1e-7 (weights unchanged) that alone cost 5 points
    of int8 agreement. Frozen (``trainable = False``), batch normalization uses its learnt
    statistics, as the exported int8 model does. Returns how many were frozen.
    """
    frozen = 0
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", layer)
        if type(inner).__name__ in ("BatchNormalization", "SyncBatchNormalization"):
            inner.trainable = False
            frozen += 1
    return frozen
