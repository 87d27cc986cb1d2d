"""How each layer of a ``tf_keras`` model is quantized during QAT, and tfmot applying it.

:func:`plan_quantization` decides a :class:`LayerPlan` per layer; :func:`quantize_model`
annotates the layers accordingly and applies ``tfmot.quantization.keras.quantize_apply``,
moving a layer tfmot still refuses to ``float``.

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
  layers doing math): left unquantized during training; the converter calibrates them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeq.errors import QATError

__all__ = ["LayerPlan", "plan_quantization", "quantize_model"]

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
# A SeparableConv2D is split by tfmot into DepthwiseConv2D + Conv2D; the batch norm after it then
# matches tfmot's Conv2D + BatchNormalization pattern and folds, as the converter folds it after PTQ.
_BN_FOLDED_AFTER = {"Conv2D", "DepthwiseConv2D", "Dense", "SeparableConv2D"}


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
        """A JSON-ready form."""
        return {"layer": self.layer, "kind": self.kind, "how": self.how, "reason": self.reason}


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
    m = re.search(r"Layer ([^\s:]+):", message)
    if m and m.group(1) in names:
        return m.group(1)
    hits = [n for n in names if f"'{n}'" in message or f" {n}:" in message or f" {n} " in message]
    return max(hits, key=len) if hits else None


def reserve_layer_names(model: Any) -> None:
    """Make tf_keras's automatic layer names skip the names ``model``'s layers already have.

    tfmot's transforms create layers without names (a SeparableConv2D becomes a new
    ``DepthwiseConv2D`` and ``Conv2D``); tf_keras names them from a counter that layers named
    in a file (``conv2d_3`` in a model loaded from .h5, or rebuilt from Keras 3) never moved. A
    new layer then takes an existing layer's name and the rebuilt graph wires the wrong tensors
    (``Inputs have incompatible shapes`` on fer's mini-Xception). Advancing the counter past every
    ``prefix_N`` name the model holds keeps the new names unique.
    """
    from tf_keras.src import backend  # the per-graph name counters (not in tf_keras.backend)

    uids = backend.get_default_graph_uid_map()
    inner = [getattr(layer, "layer", None) for layer in model.layers]  # an annotation wrapper's layer
    for name in [layer.name for layer in model.layers] + [layer.name for layer in inner if layer is not None]:
        prefix, number = re.fullmatch(r"(.*?)(?:_(\d+))?", name).groups()  # type: ignore[union-attr]  # always matches
        key = ("", prefix)  # unique_object_name's key: (namespace, prefix)
        uids[key] = max(uids[key], int(number) + 1 if number else 1)


def quantize_model(model: Any, plan: Sequence[LayerPlan] | None = None,
                   scheme: Any = None) -> tuple[Any, tuple[LayerPlan, ...]]:
    """Annotate a ``tf_keras`` model per ``plan`` and apply tfmot's quantization.

    ``scheme`` is tfmot's quantize scheme (default: its 8-bit one); the cluster- and
    pruning-preserving schemes keep a clustered or pruned model's weights so.

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
                reserve_layer_names(annotated)
                applied = qk.quantize_apply(annotated) if scheme is None else qk.quantize_apply(annotated, scheme)
                return applied, tuple(plans.values())
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
