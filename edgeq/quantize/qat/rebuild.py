"""Rebuild a Keras 3 model in ``tf_keras`` (Keras 2) with the same weights, and prove it.

tensorflow-model-optimization only works with ``tf_keras``, while TensorFlow >= 2.16
ships Keras 3. :func:`rebuild` walks a Keras 3 Sequential or Functional model's
graph, creates the same layers in ``tf_keras`` from their configs, calls them on
the same connections, copies every layer's weights, then checks that both models
give the same outputs (within ``tolerance``) on sample inputs.

What is rebuilt: built-in Keras layers (nested Sequential/Functional models are
inlined, shared layers stay shared) and the few ``keras.ops`` calls a functional
graph records for Python operators (``x[...]``, ``x + y``, ``x * 2``, ``-``, ``/``) and
common activations. Anything else (a custom layer class, another ``keras.ops``
call) raises :class:`~edgeq.errors.QATError` naming the layer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import QATError

__all__ = ["Rebuild", "check_equal", "rebuild", "sample_inputs"]

DEFAULT_TOLERANCE = 1e-5

# Layer-call keyword arguments that Keras 3 records but that must not be frozen into the rebuild.
_CALL_KWARGS_DROPPED = ("training", "mask")
_BASE_KEYS = ("name", "trainable", "dtype")


@dataclass(frozen=True)
class Rebuild:
    """A ``tf_keras`` model rebuilt from a Keras 3 model, and how closely it matches.

    Attributes:
        model: the ``tf_keras.Model``.
        max_abs_diff: the largest absolute output difference on the check inputs.
        checked_samples: how many inputs the check ran on (0 when not checked).
        layers: how many layers were rebuilt (nested models inlined).
    """

    model: Any
    max_abs_diff: float
    checked_samples: int
    layers: int


def _is_keras_tensor(x: Any) -> bool:
    import keras

    return isinstance(x, keras.KerasTensor)


def _flatten(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in _flatten(item)]
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in _flatten(x[k])]
    return [x]


def _map(fn: Callable[[Any], Any], x: Any) -> Any:
    if isinstance(x, list):
        return [_map(fn, v) for v in x]
    if isinstance(x, tuple):
        return tuple(_map(fn, v) for v in x)
    if isinstance(x, dict):
        return {k: _map(fn, v) for k, v in x.items()}
    return fn(x)


def _describe(op: Any) -> str:
    return f"{getattr(op, 'name', '?')!r} ({type(op).__name__})"


# --- keras.ops operations a functional graph records for Python operators -----------------------

def _op_table() -> dict[str, Callable[..., Any]]:
    import tensorflow as tf

    return {
        "GetItem": lambda x, key: x[key],
        "Add": tf.math.add,
        "Subtract": tf.math.subtract,
        "Multiply": tf.math.multiply,
        "Divide": tf.math.divide,
        "TrueDivide": tf.math.truediv,
        "Negative": tf.math.negative,
        "Relu": tf.nn.relu,
        "Relu6": tf.nn.relu6,
        "Sigmoid": tf.math.sigmoid,
        "Tanh": tf.math.tanh,
    }


# --- layer configs: Keras 3 -> tf_keras ------------------------------------------------------------

def _translate_value(value: Any) -> Any:
    """Keras 3 serialized objects ({module, class_name, config, registered_name}) to tf_keras's form."""
    if isinstance(value, dict) and "class_name" in value and "config" in value:
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return value["config"].get("name", "float32")
        cfg = value["config"]
        return {"class_name": value["class_name"],
                "config": {k: _translate_value(v) for k, v in cfg.items()} if isinstance(cfg, dict) else cfg}
    if isinstance(value, dict):
        return {k: _translate_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_translate_value(v) for v in value]
    return value


def _tf_keras_class(layer: Any) -> type:
    import tf_keras

    cls = type(layer)
    module = cls.__module__ or ""
    target = getattr(tf_keras.layers, cls.__name__, None) if module.startswith("keras.") else None
    if target is None:
        raise QATError(
            f"layer {_describe(layer)} from module {module!r} has no tf_keras counterpart, so it cannot "
            "be rebuilt for quantization-aware training", argument="model", received=layer.name,
            fix="replace it with built-in keras.layers, or build the model in tf_keras and pass that")
    return target  # type: ignore[no-any-return]


def _tf_keras_config(layer: Any, cls: type) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    accepted = {n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    accepted.update(_BASE_KEYS)
    config = {}
    for key, value in layer.get_config().items():
        if key.endswith("_initializer"):
            continue  # weights are copied; initializers are not needed and differ between versions
        if key not in accepted:
            continue  # a Keras 3-only option; a difference it makes is caught by the output check
        config[key] = _translate_value(value)
    return config


def _new_layer(layer: Any) -> Any:
    cls = _tf_keras_class(layer)
    if cls.__name__ == "Lambda" and callable(getattr(layer, "function", None)):
        # The function object itself (not its serialized form); the output check proves it works.
        return cls(layer.function, name=layer.name, arguments=dict(getattr(layer, "arguments", None) or {}))
    config = _tf_keras_config(layer, cls)
    try:
        return cls.from_config(config)  # type: ignore[attr-defined]
    except Exception as exc:
        raise QATError(
            f"layer {_describe(layer)} cannot be created in tf_keras: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}", argument="model", received=layer.name,
            fix="use built-in layers with built-in activations/regularizers, or build the model in tf_keras"
        ) from None


def _input_tensor(kt: Any, name: str) -> Any:
    import tf_keras

    shape = tuple(kt.shape)
    return tf_keras.Input(shape=shape[1:], batch_size=shape[0], dtype=str(kt.dtype), name=name)


class _Builder:
    """Creates tf_keras tensors for Keras 3 tensors, node by node, without recursion."""

    def __init__(self) -> None:
        self.layer_map: dict[int, tuple[Any, Any]] = {}  # id(keras layer) -> (keras layer, tf_keras layer)
        self.ops = _op_table()

    def tensors_for(self, outputs: Sequence[Any], memo: dict[int, Any]) -> list[Any]:
        """tf_keras tensors for ``outputs``; ``memo`` holds the ones known (the inputs at first)."""
        import keras

        stack: list[Any] = list(outputs)
        while stack:
            kt = stack[-1]
            if id(kt) in memo:
                stack.pop()
                continue
            op, node_index, _ = kt._keras_history
            if isinstance(op, keras.layers.InputLayer):
                raise QATError(f"input {op.name!r} is not one of the model's inputs", argument="model",
                               received=op.name, fix="build the model with keras.Model(inputs, outputs)")
            node = op._inbound_nodes[node_index]
            pending = [a for a in _flatten((node.arguments.args, node.arguments.kwargs))
                       if _is_keras_tensor(a) and id(a) not in memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            self._call(op, node, memo)
            if id(kt) not in memo:  # pragma: no cover - a graph Keras built itself is consistent
                raise QATError(f"cannot trace the output of {_describe(op)}", argument="model", received=op.name,
                               fix="build the model in tf_keras and pass that")
        return [memo[id(o)] for o in outputs]

    def _call(self, op: Any, node: Any, memo: dict[int, Any]) -> None:
        import keras

        def sub(a: Any) -> Any:
            return memo[id(a)] if _is_keras_tensor(a) else a

        args = _map(sub, tuple(node.arguments.args))
        kwargs = {k: _map(sub, v) for k, v in node.arguments.kwargs.items() if k not in _CALL_KWARGS_DROPPED}
        if isinstance(op, keras.Model):
            inner_inputs = list(getattr(op, "inputs", None) or [])
            given = [memo[id(a)] for a in _flatten((node.arguments.args, node.arguments.kwargs))
                     if _is_keras_tensor(a)]
            if not inner_inputs or len(inner_inputs) != len(given):
                raise QATError(f"nested model {_describe(op)} has no defined inputs", argument="model",
                               received=op.name, fix="build nested models with keras.Input(...)")
            inner_memo = {id(k): t for k, t in zip(inner_inputs, given)}
            outs: Any = self.tensors_for(list(op.outputs), inner_memo)
        elif isinstance(op, keras.layers.Layer):
            if id(op) not in self.layer_map:
                self.layer_map[id(op)] = (op, _new_layer(op))
            try:
                outs = self.layer_map[id(op)][1](*args, **kwargs)
            except QATError:
                raise
            except Exception as exc:
                raise QATError(
                    f"layer {_describe(op)} fails when rebuilt in tf_keras: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:200] if str(exc) else ''}", argument="model", received=op.name,
                    fix="use built-in layers (a Lambda must work on TensorFlow tensors), or build the model "
                        "in tf_keras") from None
        else:
            fn = self.ops.get(type(op).__name__)
            if fn is None:
                raise QATError(
                    f"operation {_describe(op)} (a keras.ops call in the model's graph) cannot be rebuilt in "
                    "tf_keras", argument="model", received=op.name,
                    fix=f"use a layer instead (supported operations: {', '.join(sorted(self.ops))}), or build "
                        "the model in tf_keras")
            outs = fn(*args, **kwargs)
        for kt, t in zip(_flatten(node.outputs), _flatten(outs)):
            memo[id(kt)] = t


def _copy_weights(pairs: Sequence[tuple[Any, Any]]) -> None:
    for old, new in pairs:
        weights = old.get_weights()
        targets = new.weights
        shapes_old = [tuple(w.shape) for w in weights]
        shapes_new = [tuple(int(d) for d in w.shape) for w in targets]
        if shapes_old != shapes_new:
            raise QATError(
                f"layer {_describe(old)} has weights {shapes_old} but its tf_keras rebuild has {shapes_new}",
                argument="model", received=old.name,
                fix="use built-in layers with their default options, or build the model in tf_keras")
        new.set_weights(weights)


def sample_inputs(model: Any, count: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Random inputs (one array per model input) shaped like the model's inputs, unknown dims as 8."""
    rng = np.random.default_rng(seed)
    out = []
    for t in model.inputs:
        shape = [count] + [8 if d is None else int(d) for d in tuple(t.shape)[1:]]
        out.append(rng.uniform(0.0, 1.0, size=shape).astype(np.float32))
    return out


def _outputs(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    out = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
    if isinstance(out, dict):
        out = [out[k] for k in sorted(out)]
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]


def check_equal(original: Any, rebuilt: Any, inputs: list[np.ndarray],
                tolerance: float = DEFAULT_TOLERANCE) -> float:
    """Run both models on ``inputs``; returns the largest absolute output difference.

    Outputs of magnitude above 1 are compared relative to their magnitude.

    Raises:
        QATError: an output differs by more than ``tolerance``.
    """
    ref, got = _outputs(original, inputs), _outputs(rebuilt, inputs)
    worst = 0.0
    for i, (a, b) in enumerate(zip(ref, got)):
        if a.shape != b.shape:
            raise QATError(f"rebuilt model's output {i} has shape {b.shape}, the original's {a.shape}",
                           argument="model", received=getattr(original, "name", None),
                           fix="build the model in tf_keras and pass that")
        diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
        scale = max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0
        worst = max(worst, diff)
        if not diff <= tolerance * scale:
            raise QATError(
                f"the tf_keras rebuild's output {i} differs from the original by {diff:.3g} "
                f"(tolerance {tolerance:g})", argument="model", received=getattr(original, "name", None),
                fix="a layer option has no tf_keras equivalent; build the model in tf_keras and pass that")
    return worst


def rebuild(model: Any, inputs: list[np.ndarray] | None = None, *, check: bool = True,
            tolerance: float = DEFAULT_TOLERANCE) -> Rebuild:
    """Rebuild a Keras 3 Sequential/Functional model in ``tf_keras`` with the same weights.

    Args:
        model: a built Keras 3 model with defined inputs.
        inputs: inputs for the equality check (one array per model input, batch first);
            default: a few random inputs.
        check: compare both models' outputs and raise if they differ by more than ``tolerance``.
        tolerance: the largest allowed absolute difference (relative for outputs above 1).

    Raises:
        QATError: a layer or operation cannot be rebuilt (named in the message), or the check failed.
    """
    import keras
    import tf_keras

    if not isinstance(model, keras.Model):
        raise QATError("not a Keras 3 model", argument="model", received=type(model).__name__,
                       fix="give a keras.Model (Sequential or Functional)")
    k_inputs = list(getattr(model, "inputs", None) or [])
    if not k_inputs:
        raise QATError("the model has no defined inputs (a subclassed or unbuilt model)", argument="model",
                       received=model.name, fix="build it with keras.Input(...) as a Sequential or Functional model")
    builder = _Builder()
    memo: dict[int, Any] = {}
    t_inputs = []
    for kt in k_inputs:
        op = kt._keras_history[0]
        t = _input_tensor(kt, op.name)
        memo[id(kt)] = t
        t_inputs.append(t)
    t_outputs = builder.tensors_for(list(model.outputs), memo)
    rebuilt = tf_keras.Model(t_inputs[0] if len(t_inputs) == 1 else t_inputs,
                             t_outputs[0] if len(t_outputs) == 1 else t_outputs, name=model.name)
    _copy_weights(list(builder.layer_map.values()))
    diff, n = 0.0, 0
    if check:
        check_inputs = inputs if inputs is not None else sample_inputs(model)
        diff = check_equal(model, rebuilt, check_inputs, tolerance)
        n = len(check_inputs[0])
    return Rebuild(rebuilt, diff, n, len(builder.layer_map))
