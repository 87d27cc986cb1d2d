"""Quantization-aware training (QAT): fine-tune with simulated int8, then export int8.

``qat(model, train, validation=..., epochs=2)`` is built from public steps:

1. :func:`to_tf_keras`: tensorflow-model-optimization works on ``tf_keras`` models only, so
   a Keras 3 model is rebuilt in ``tf_keras`` with the same weights and checked to give
   the same outputs (:mod:`edgeq.rebuild`); a ``tf_keras`` model is used as it is.
2. :func:`plan_quantization`: decides, layer by layer, how it is quantized (see below).
3. :func:`quantize_model`: annotates the layers accordingly and applies
   ``tfmot.quantization.keras.quantize_apply``.
4. training with ``fit`` on the same data sources as calibration (image folders with
   class subfolders, arrays, tf.data), progress per epoch on stderr; under a
   ``tf.distribute`` strategy's scope when one is given.

The result's :meth:`QATResult.convert` exports an int8 ``.tflite`` through :func:`edgeq.convert`.

How layers are quantized (:class:`LayerPlan`):

- ``default``: layers tfmot's 8-bit scheme supports (Conv2D, Dense, DepthwiseConv2D, Add,
  Concatenate, pooling, ReLU, UpSampling2D..., BatchNormalization after a convolution,
  which tfmot folds);
- ``output``: layers tfmot does not know but whose output is an ordinary tensor
  (Rescaling, Normalization, Multiply, Subtract, a standalone BatchNormalization,
  LayerNormalization), and Conv2DTranspose, whose tfmot form cannot be exported: only
  their output is fake-quantized, the way an int8 kernel sees it;
- ``passthrough``: layers that only move values (slicing, padding, cropping, reshaping,
  max pooling, dropout): no quantizer, the output keeps the input's range;
- ``float``: anything else (Lambda, custom layers, unsupported recurrent layers, tf op
  layers doing math): left unquantized during training and listed in
  :attr:`QATResult.float_layers`; the converter calibrates them afterwards.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeq_device.evaluate import read_labels
from edgeq_device.preprocess import Preprocess

from edgeq.errors import DataError, InvalidArgumentError, LabelMismatchError, QATError
from edgeq.inputs.data import DataSource, ImageFolder, as_source, check_label_range, class_labels
from edgeq.inputs.models import InputSpec, LoadedModel, load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import _console, progress_enabled
from edgeq.quantize.converter import ConversionResult, _check_finite, default_preprocess

__all__ = [
    "LayerPlan",
    "QATResult",
    "plan_quantization",
    "qat",
    "quantize_model",
    "to_tf_keras",
]

# Layers whose output is just a rearrangement of input values: no quantizer needed.
_PASSTHROUGH = {
    "Cropping1D", "Cropping2D", "Cropping3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Reshape", "Flatten", "Permute", "RepeatVector", "UpSampling1D", "UpSampling2D", "UpSampling3D",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization",
}
# Layers whose output is an ordinary activation tensor: quantize the output only.
_OUTPUT_ONLY = {
    "Rescaling", "Normalization", "BatchNormalization", "LayerNormalization", "GroupNormalization",
    "UnitNormalization", "Multiply", "Subtract", "Maximum", "Minimum", "Average", "ELU", "PReLU",
    "ThresholdedReLU", "Resizing", "CenterCrop", "AveragePooling3D", "Softmax", "Activation",
}
# tf.* functions (TFOpLambda layers) that only move values.
_PASSTHROUGH_FUNCTIONS = {
    "__operators__.getitem", "strided_slice", "reshape", "transpose", "squeeze", "expand_dims", "identity",
    "compat.v1.squeeze", "gather", "concat", "split", "stack", "unstack", "math.reduce_max", "nn.max_pool2d",
}
# Layers tfmot supports but whose QAT form cannot be saved for conversion: output quantized only.
_EXPORT_BROKEN = {
    "Conv2DTranspose": "tfmot's Conv2DTranspose config cannot be exported (its kernel transpose is captured "
                       "from another graph): output quantized, weights quantized at conversion",
}
_TF_OP_LAYERS = {"TFOpLambda", "SlicingOpLambda"}
_TRANSFORMED = {"SeparableConv1D", "SeparableConv2D"}  # tfmot rewrites these itself
_BN_FOLDED_AFTER = {"Conv2D", "DepthwiseConv2D", "Dense"}


@dataclass(frozen=True)
class LayerPlan:
    """How one layer is quantized during training.

    Attributes:
        layer: the layer's name.
        kind: the layer's class name.
        how: ``default``, ``output``, ``passthrough`` or ``float``.
        reason: why, for anything other than ``default``.
    """

    layer: str
    kind: str
    how: str
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"layer": self.layer, "kind": self.kind, "how": self.how, "reason": self.reason}


@dataclass
class QATResult:
    """A quantization-aware trained ``tf_keras`` model, ready to export as int8.

    Attributes:
        model: the trained ``tf_keras`` model with fake-quantization (tfmot).
        float_model: the ``tf_keras`` model training started from (the rebuild, for Keras 3).
        plan: how each layer was quantized.
        history: per-epoch metrics (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).
        epochs: epochs trained.
        seconds: training time.
        rebuild_max_diff: largest output difference between the Keras 3 model and its
            tf_keras rebuild (None when the model was tf_keras already).
        preprocess: how images became input (stored in the exported model's metadata).
        train_source: the training data (default calibration for :meth:`convert`).
        labels: class names, when the training data has them.
    """

    model: Any
    float_model: Any
    plan: tuple[LayerPlan, ...]
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    rebuild_max_diff: float | None
    preprocess: Preprocess | None
    train_source: DataSource = field(repr=False)
    labels: tuple[str, ...] | None = None

    @property
    def float_layers(self) -> tuple[str, ...]:
        """Layers left unquantized during training (the converter calibrates them)."""
        return tuple(p.layer for p in self.plan if p.how == "float")

    @property
    def special_layers(self) -> tuple[LayerPlan, ...]:
        """Layers tfmot does not support that got an output-only or passthrough config, or stayed float."""
        return tuple(p for p in self.plan if p.how != "default")

    def convert(self, io: str = "float", *, calibration: Any = None, samples: int = 200, seed: int = 0,
                batch_size: int | None = None, allow_float_fallback: bool = False,
                show_progress: bool | None = None) -> ConversionResult:
        """Export the trained model as an int8 ``.tflite`` (see :func:`edgeq.convert`).

        The fake-quantization ranges learnt in training are used; ``calibration`` (default:
        the training data) fills in any tensor training did not quantize.
        """
        from edgeq.quantize.converter import convert

        return convert(self.model, "int8", calibration=self.train_source if calibration is None else calibration,
                       samples=samples, seed=seed, io=io, batch_size=batch_size, preprocess=self.preprocess,
                       labels=self.labels, allow_float_fallback=allow_float_fallback,
                       show_progress=show_progress)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"schema": "edgeq/qat/1", "model": self.model.name, "epochs": self.epochs,
                "seconds": round(self.seconds, 3), "history": self.history,
                "rebuild_max_diff": self.rebuild_max_diff, "float_layers": list(self.float_layers),
                "plan": [p.to_dict() for p in self.plan if p.how != "default"]}


# --- step 1: a tf_keras model ------------------------------------------------------------------

def to_tf_keras(model: Any, inputs: list[np.ndarray] | None = None,
                tolerance: float = 1e-5) -> tuple[Any, float | None]:
    """A ``tf_keras`` model for ``model``: rebuilt (and checked on ``inputs``) if Keras 3.

    Returns:
        ``(tf_keras model, max output difference or None)``.

    Raises:
        QATError: a Keras 3 layer cannot be rebuilt, or the rebuild's outputs differ.
    """
    loaded = load_model(model)
    if loaded.kind == "tf_keras":
        return loaded.obj, None
    if loaded.kind != "keras3":
        raise QATError("a SavedModel has no Keras layers to train", argument="model", received=str(loaded.path),
                       fix="give the Keras model (object, .keras or .h5 file)")
    from edgeq.quantize.qat.rebuild import rebuild

    built = rebuild(loaded.obj, inputs, tolerance=tolerance)
    return built.model, built.max_abs_diff


# --- step 2: a plan per layer ------------------------------------------------------------------

def _inbound_layers(layer: Any) -> list[Any]:
    nodes = getattr(layer, "_inbound_nodes", []) or []
    found: list[Any] = []
    for node in nodes:
        inbound = node.inbound_layers
        found.extend(inbound if isinstance(inbound, (list, tuple)) else [inbound])
    return found


def plan_quantization(model: Any) -> tuple[LayerPlan, ...]:
    """Decide how each layer of a ``tf_keras`` model is quantized (see the module docstring)."""
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_mod,
    )

    registry = registry_mod.Default8BitQuantizeRegistry()
    plans = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "BatchNormalization":
            before = _inbound_layers(layer)
            folded = (len(before) == 1 and type(before[0]).__name__ in _BN_FOLDED_AFTER
                      and len(getattr(before[0], "_outbound_nodes", [])) == 1
                      and getattr(before[0], "activation", None) is not None
                      and getattr(before[0].activation, "__name__", "") == "linear")
            plans.append(LayerPlan(layer.name, kind, "default") if folded else
                         LayerPlan(layer.name, kind, "output", "standalone normalization: output quantized"))
            continue
        if kind in _EXPORT_BROKEN:
            plans.append(LayerPlan(layer.name, kind, "output", _EXPORT_BROKEN[kind]))
        elif registry.supports(layer) or kind in _TRANSFORMED:
            plans.append(LayerPlan(layer.name, kind, "default"))
        elif kind in _PASSTHROUGH:
            plans.append(LayerPlan(layer.name, kind, "passthrough", "moves values only: keeps the input's range"))
        elif kind in _OUTPUT_ONLY:
            plans.append(LayerPlan(layer.name, kind, "output", "not in tfmot's 8-bit scheme: output quantized"))
        elif kind in _TF_OP_LAYERS:
            # A wrapper cannot carry a tf op layer's call arguments (the slice, the constant), so
            # these are never wrapped: slicing needs no quantizer, math is calibrated afterwards.
            fn = str(layer.get_config().get("function", ""))
            if kind == "SlicingOpLambda" or fn in _PASSTHROUGH_FUNCTIONS:
                plans.append(LayerPlan(layer.name, kind, "passthrough", f"tf.{fn} moves values only"))
            else:
                plans.append(LayerPlan(layer.name, kind, "float",
                                       f"tf.{fn} op layer: left unwrapped; the converter calibrates its output"))
        else:
            plans.append(LayerPlan(layer.name, kind, "float",
                                   "no quantization scheme for this layer; the converter calibrates it"))
    return tuple(plans)


# --- step 3: annotate and apply ----------------------------------------------------------------

_CONFIG_CLASSES: dict[str, type] = {}


def _config_classes() -> dict[str, type]:
    """The QuantizeConfig classes for ``passthrough`` and ``output`` layers (tfmot imported lazily)."""
    if _CONFIG_CLASSES:
        return _CONFIG_CLASSES
    import tensorflow_model_optimization as tfmot

    base = tfmot.quantization.keras.QuantizeConfig
    quantizers = tfmot.quantization.keras.quantizers

    class EdgeqPassthroughConfig(base):  # type: ignore[misc, valid-type]
        """No quantizer: the output keeps its input's quantization (slicing, padding...)."""

        def get_weights_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_activations_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: Any) -> None:
            pass

        def set_quantize_activations(self, layer: Any, quantize_activations: Any) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return []

        def get_config(self) -> dict[str, Any]:
            return {}

    class EdgeqOutputConfig(EdgeqPassthroughConfig):
        """Fake-quantize the layer's output (8 bits, asymmetric, moving-average range)."""

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            return [quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                      narrow_range=False)]

    _CONFIG_CLASSES.update({"EdgeqPassthroughConfig": EdgeqPassthroughConfig,
                            "EdgeqOutputConfig": EdgeqOutputConfig})
    return _CONFIG_CLASSES


def _unsafe_lambdas() -> Any:
    try:
        from tf_keras.src.saving.serialization_lib import SafeModeScope
    except ImportError:  # pragma: no cover - other tf_keras layouts
        return contextlib.nullcontext()
    return SafeModeScope(safe_mode=False)


def _failing_layer(message: str, names: Sequence[str]) -> str | None:
    import re

    m = re.search(r"Layer ([^\s:]+):", message)
    if m and m.group(1) in names:
        return m.group(1)
    hits = [n for n in names if f"'{n}'" in message or f" {n}:" in message or f" {n} " in message]
    return max(hits, key=len) if hits else None


def quantize_model(model: Any, plan: Sequence[LayerPlan] | None = None) -> tuple[Any, tuple[LayerPlan, ...]]:
    """Annotate a ``tf_keras`` model per ``plan`` and apply tfmot's quantization.

    A layer tfmot still refuses is moved to ``float`` (and the plan says so), so a
    model never fails with tfmot's own message.

    Returns:
        ``(the QAT model, the plan as applied)``.

    Raises:
        QATError: the model cannot be prepared even with the refused layers left float.
    """
    import tensorflow_model_optimization as tfmot
    import tf_keras

    qk = tfmot.quantization.keras
    classes = _config_classes()
    plans = {p.layer: p for p in (plan if plan is not None else plan_quantization(model))}
    names = [layer.name for layer in model.layers]
    for _attempt in range(len(names) + 1):
        def annotate(layer: Any) -> Any:
            p = plans.get(layer.name)
            if p is None or p.how == "float" or p.kind in _TF_OP_LAYERS:
                return layer
            if p.how == "default":
                return qk.quantize_annotate_layer(layer)
            config = classes["EdgeqOutputConfig" if p.how == "output" else "EdgeqPassthroughConfig"]()
            return qk.quantize_annotate_layer(layer, quantize_config=config)

        try:
            if not any(p.how != "float" for p in plans.values()):
                raise QATError("no layer of the model can be quantized", argument="model", received=model.name,
                               fix="use layers tfmot quantizes (Conv2D, Dense, ...), or convert with PTQ")
            # Cloning re-creates layers from their configs; a Lambda layer's function is the
            # caller's own code, already running in this process, so it may be deserialized.
            with _unsafe_lambdas(), qk.quantize_scope(classes):
                annotated = tf_keras.models.clone_model(model, clone_function=annotate)
                return qk.quantize_apply(annotated), tuple(plans.values())
        except QATError:
            raise
        except Exception as exc:
            text = str(exc)
            bad = _failing_layer(text, names)
            if bad is None or plans.get(bad) is None or plans[bad].how == "float":
                raise QATError(
                    f"tensorflow-model-optimization cannot prepare the model"
                    f"{f' at layer {bad!r}' if bad else ''}: {type(exc).__name__}: {text.splitlines()[0][:200]}",
                    argument="model", received=getattr(model, "name", None),
                    fix="replace that layer with built-in layers, or convert with post-training int8") from None
            p = plans[bad]
            plans[bad] = LayerPlan(p.layer, p.kind, "float", f"tfmot refused it ({type(exc).__name__}); "
                                                             "the converter calibrates it")
    raise QATError("the model cannot be prepared for QAT", argument="model",  # pragma: no cover
                   received=getattr(model, "name", None), fix="convert with post-training int8")


# --- step 4: data and training -----------------------------------------------------------------

def _check_sample(x: np.ndarray, spec: InputSpec, argument: str, where: str) -> np.ndarray:
    want = spec.sample_shape
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == len(want) - 1 and want and want[-1] == 1:
        x = x[..., None]
    if x.ndim != len(want) or any(w is not None and w != a for w, a in zip(want, x.shape)):
        raise DataError(f"sample shape {tuple(x.shape)} does not match input {spec.name!r} shape "
                        f"{tuple('?' if d is None else d for d in want)}", argument=argument, received=where,
                        fix="preprocess to the model's input size and channels (Preprocess(size=..., color=...))")
    return x


def _arrays(source: DataSource, specs: Sequence[InputSpec], argument: str,
            limit: int | None = None, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Read a labeled source into memory: one array per input, and the labels."""
    per_input: list[list[np.ndarray]] = [[] for _ in specs]
    labels: list[int] = []
    for position, sample in enumerate(source.samples(limit=limit, seed=seed)):
        if sample.label is None:
            raise DataError("training data needs labels", argument=argument, received=source.description,
                            fix="give an image folder with one subfolder per class, (x, y) arrays, or a "
                                "tf.data.Dataset of (x, y)")
        x = sample.inputs
        xs = ([x[s.name] for s in specs] if isinstance(x, dict) else list(x) if isinstance(x, list) else [x])
        if len(xs) != len(specs):
            raise DataError(f"samples have {len(xs)} arrays, the model takes {len(specs)} inputs",
                            argument=argument, received=source.description,
                            fix=f"give one array per input: {[s.name for s in specs]}")
        for bucket, a, spec in zip(per_input, xs, specs):
            checked = _check_sample(a, spec, argument, source.description)
            # NaN or Inf would poison the weights and the learnt quantization ranges (and an
            # Inf range crashes the converter): refused by index before training.
            _check_finite(checked, position if sample.index is None else sample.index, spec, len(specs) > 1,
                          source.description, argument)
            bucket.append(checked)
        labels.append(int(sample.label))
    if not labels:
        raise DataError("the data source gave no sample", argument=argument, received=source.description,
                        fix="give a source with labeled samples")
    return [np.stack(b) for b in per_input], np.asarray(labels, np.int64)


def _loss_for(model: Any, x: list[np.ndarray]) -> Any:
    """Sparse categorical cross-entropy on probabilities or logits, as the model's output is."""
    import tf_keras

    out = np.asarray(model(x[0][:16] if len(x) == 1 else [a[:16] for a in x], training=False))
    if out.ndim >= 2 and out.shape[-1] == 1:
        probs = bool(np.all((out >= 0) & (out <= 1)))
        return tf_keras.losses.BinaryCrossentropy(from_logits=not probs)
    probs = bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))
    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)


def _epoch_callback(epochs: int, show: bool) -> Any:
    import tf_keras

    class EpochProgress(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if not show:
                return
            parts = [f"{k} {float(v):.4f}" for k, v in (logs or {}).items()]
            _console.print(f"qat epoch {epoch + 1}/{epochs}: {', '.join(parts)} "
                           f"({time.perf_counter() - self._start:.1f}s)", highlight=False, soft_wrap=True)

    return EpochProgress()


def _positive(value: Any, argument: str, example: str, integer: bool = True) -> None:
    number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not (number and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise InvalidArgumentError("must be a positive number", argument=argument, received=value,
                                   fix=f"give e.g. {argument}={example}")


def _class_names(labels: Sequence[str] | None, source: DataSource, y: np.ndarray,
                 outputs: int) -> tuple[str, ...] | None:
    """The names of the model's outputs, checked against the training labels."""
    if labels is not None and len(labels) != outputs:
        raise LabelMismatchError(f"{len(labels)} labels for a model with {outputs} outputs", argument="labels",
                                 received=len(labels), fix=f"give exactly {outputs} labels, one per model output")
    names = class_labels(source, outputs, "train")
    check_label_range(y, outputs, "train", source.description)
    return tuple(str(n) for n in labels) if labels is not None else names


@quiet_native_logs()
def qat(
    model: Any,
    train: Any,
    *,
    validation: Any = None,
    epochs: int = 2,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
    strategy: Any = None,
    preprocess: Preprocess | None = None,
    loss: Any = None,
    samples: int | None = None,
    seed: int = 0,
    tolerance: float = 1e-5,
    show_progress: bool | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
) -> QATResult:
    """Quantization-aware fine-tuning of a trained Keras classifier.

    Args:
        model: a Keras 3 or tf_keras model, or a ``.keras``/``.h5`` file.
        train: labeled training data: an image folder with class subfolders, ``(x, y)`` arrays,
            a ``.npz`` with ``x``/``y``, a ``tf.data.Dataset`` of ``(x, y)``, or a DataSource.
        validation: labeled validation data, in the same forms (optional).
        epochs: epochs of fine-tuning (1-3 is usual for a trained model).
        learning_rate: Adam's learning rate (small: the model is already trained).
        batch_size: training batch size.
        strategy: a ``tf.distribute`` strategy; the model is prepared under its scope.
        preprocess: how images become input (default: derived from the input shape, pixels to [0, 1]).
        loss: a ``tf_keras`` loss (default: sparse categorical cross-entropy, on probabilities
            or logits as the model's output is).
        samples: train on a seeded subset of this many samples (default: all).
        seed: seed of the subset, the shuffling and the initial weights of quantizers.
        tolerance: largest output difference allowed between a Keras 3 model and its rebuild.
        show_progress: progress per epoch on stderr (default: on unless ``EDGEQ_PROGRESS=0``).
        labels: class names in output order (or a text file, one per line): an image folder's class
            folders are the outputs of their names. Default: integer folder names are their output,
            other names sorted as Keras does (see :mod:`edgeq_device.images`); the validation
            folder is matched to the training folder's classes by name.

    Raises:
        QATError: the model cannot be rebuilt or prepared (the layer is named).
        DataError: the data has no labels or does not fit the model's input;
            NonFiniteCalibrationError (a DataError): a sample holds NaN or Inf.
        LabelMismatchError: a class folder or label is not one of the model's outputs.
        InvalidArgumentError: a bad option.
    """
    import tf_keras

    _positive(epochs, "epochs", "2")
    _positive(batch_size, "batch_size", "32")
    _positive(learning_rate, "learning_rate", "1e-4", integer=False)
    if samples is not None:
        _positive(samples, "samples", "2000")
    if strategy is not None and not hasattr(strategy, "scope"):
        raise InvalidArgumentError("not a tf.distribute strategy", argument="strategy",
                                   received=type(strategy).__name__,
                                   fix="give e.g. tf.distribute.MirroredStrategy(), or leave it out")
    loaded: LoadedModel = load_model(model)
    if loaded.kind == "saved_model":
        raise QATError("a SavedModel has no Keras layers to train", argument="model", received=str(loaded.path),
                       fix="give the Keras model (object, .keras or .h5 file)")
    if preprocess is None and len(loaded.inputs) == 1:
        preprocess = default_preprocess(loaded.inputs[0])
    if isinstance(labels, (str, os.PathLike)):
        labels = read_labels(labels)
    train_src = as_source(train, preprocess, argument="train", labels=labels)
    x, y = _arrays(train_src, loaded.inputs, "train", samples, seed)
    outputs = int(np.prod(np.shape(loaded.predict([a[:1] for a in x])[0])[1:]))
    names = _class_names(labels, train_src, y, outputs)
    val = None
    if validation is not None:
        val_src = as_source(validation, preprocess, argument="validation", labels=names)
        if isinstance(val_src, ImageFolder) and val_src.listing.labels is not None:
            val_src.listing.fit_outputs(outputs, "validation")
        vx, vy = _arrays(val_src, loaded.inputs, "validation")
        check_label_range(vy, outputs, "validation", val_src.description)
        val = (vx[0] if len(vx) == 1 else vx, vy)
    show = progress_enabled(show_progress)
    tf_keras.utils.set_random_seed(seed)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        base, diff = to_tf_keras(loaded, [a[:8] for a in x], tolerance)
        plan = plan_quantization(base)
        qmodel, plan = quantize_model(base, plan)
        qmodel = tf_keras.Model(qmodel.inputs, qmodel.outputs, name=f"{loaded.name}_qat")
        qmodel.compile(optimizer=tf_keras.optimizers.Adam(learning_rate=float(learning_rate)),
                       loss=loss if loss is not None else _loss_for(base, x), metrics=["accuracy"])
    if show:
        unusual = [p for p in plan if p.how != "default"]
        _console.print(f"qat: {len(x[0])} training samples, {epochs} epoch(s), {len(plan)} layers"
                       + (f"; {len(unusual)} handled specially: "
                          + ", ".join(f"{p.layer} ({p.kind}: {p.how})" for p in unusual) if unusual else ""),
                       highlight=False, soft_wrap=True)
    start = time.perf_counter()
    history = qmodel.fit(x[0] if len(x) == 1 else x, y, validation_data=val, epochs=epochs,
                         batch_size=batch_size, shuffle=True, verbose=0,
                         callbacks=[_epoch_callback(epochs, show)])
    seconds = time.perf_counter() - start
    return QATResult(
        model=qmodel, float_model=base, plan=plan,
        history={k: [float(v) for v in vals] for k, vals in history.history.items()},
        epochs=epochs, seconds=seconds, rebuild_max_diff=diff, preprocess=preprocess,
        train_source=train_src, labels=names)

