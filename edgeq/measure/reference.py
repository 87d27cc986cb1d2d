"""The float Keras model's reference outputs, and each ``.tflite``'s fidelity to them through ``edgeq_device``.

:func:`reference_arrays` gives the evaluation inputs and the Keras model's outputs on
them keyed as ``edgeq_device``'s fidelity reads them (the converted model's input and
output names: signature names, ``output_0 ..`` in the Keras model's order), so
``inputs.npz`` and ``reference.npz`` beside a comparison's results let
``edgeq-device eval MODEL --inputs inputs.npz --reference reference.npz`` measure a
board's fidelity to the float model without TensorFlow there. :func:`tflite_fidelity`
runs that very evaluation on this host.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.tasks.eval_options import EvalOptions
from edgeq_device.tasks.fidelity import FidelityResult, evaluate_fidelity
from edgeq_device.tasks.task_loop import input_keys, output_keys

from edgeq.inputs.models import LoadedModel

__all__ = ["fidelity_rows", "keras_all_outputs", "match_outputs", "npz_bytes", "reference_arrays", "tflite_fidelity"]


def keras_all_outputs(loaded: LoadedModel, x: np.ndarray, batch: int = 64) -> list[np.ndarray]:
    """Every output of the Keras model on ``x`` (one array ``[N, ...]`` per output, in the model's order)."""
    parts: list[list[np.ndarray]] = []
    for i in range(0, len(x), batch):
        outs = loaded.predict([x[i:i + batch]])
        n = len(x[i:i + batch])
        parts.append([np.asarray(o, np.float32).reshape(n, *np.asarray(o).shape[1:]) if np.asarray(o).ndim
                      else np.full((n,), float(o), np.float32) for o in outs])
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def match_outputs(model_bytes: bytes, names: Sequence[str] | None, count: int) -> list[str]:
    """The converted model's output name for each Keras output: the same name where the model has it
    (a converted dict-output model keeps the Keras names), else the one at the same position."""
    keys = output_keys(read_flat_model(model_bytes))
    if names is not None and len(names) == len(keys) and set(names) == set(keys):
        return list(names)
    return keys[:count]


def reference_arrays(model_bytes: bytes, x: np.ndarray, outputs: list[np.ndarray],
                     names: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(inputs, reference)`` keyed by the converted model's input and output names.

    ``names`` are the Keras outputs' names (see :func:`match_outputs`). A Keras output whose
    samples hold the same values as the ``.tflite`` output in another shape (a ``[N]`` count
    for a ``[N, 1]`` output) is reshaped to the ``.tflite``'s.
    """
    flat = read_flat_model(model_bytes)
    ins = input_keys(flat)
    keys = output_keys(flat)
    tensors = dict(zip(keys, flat.io_order("outputs")))
    ref: dict[str, np.ndarray] = {}
    for name, arr in zip(match_outputs(model_bytes, names, len(outputs)), outputs):
        tensor_idx = tensors[name]
        want = tuple(int(d) for d in flat.main.tensors[tensor_idx].shape[1:])
        a = np.asarray(arr, np.float32)
        if a.shape[1:] != want and int(np.prod(a.shape[1:])) == int(np.prod(want)):
            a = a.reshape(len(a), *want)
        ref[name] = a
    return {ins[0]: np.asarray(x, np.float32)}, ref


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` file's bytes (``numpy.savez_compressed``)."""
    buf = io.BytesIO()
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez_compressed(buf, **named)
    return buf.getvalue()


def tflite_fidelity(model_bytes: bytes, inputs: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
                    *, progress: bool | None = None) -> FidelityResult:
    """``edgeq-device eval --inputs --reference`` of ``model_bytes`` on this host (the one evaluation loop)."""
    with tempfile.TemporaryDirectory(prefix="edgeq-fidelity-") as tmp:
        x_path, ref_path = Path(tmp) / "inputs.npz", Path(tmp) / "reference.npz"
        x_path.write_bytes(npz_bytes(inputs))
        ref_path.write_bytes(npz_bytes(reference))
        return evaluate_fidelity(model_bytes, x_path, ref_path, preprocess=Preprocess(),
                                 options=EvalOptions(progress=bool(progress)))


def fidelity_rows(result: FidelityResult) -> tuple[dict[str, Any], ...]:
    """Per output: ``name``, ``sqnr_db``, ``cosine``, ``max_abs_error``, ``argmax_agreement`` (what a row keeps)."""
    return tuple({"name": o.name, "sqnr_db": o.sqnr_db, "cosine": o.cosine, "max_abs_error": o.max_abs_error,
                  "argmax_agreement": o.argmax_agreement} for o in result.outputs)
