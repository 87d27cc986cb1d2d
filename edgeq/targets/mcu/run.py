"""Run a ``.tflite`` in TFLM's own interpreter, in a child process.

:func:`run_tflm` hands the model and its inputs to :mod:`edgeq.targets.mcu._tflm_worker`, run
by path with this Python: the interpreter of the ``tflite-micro`` package (``edgeq[mcu]``),
the same C++ code that runs on the board, built for the host. A crash or an abort in it ends
the child, and comes back as :class:`~edgeq_device.errors.RuntimeCrashError`; an operator TFLM lacks
or refuses comes back as the interpreter's own words (:attr:`TFLMRun.messages`, parsed by
:func:`refusals`).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeq_device.errors import RuntimeCrashError

from edgeq.errors import InvalidArgumentError, RuntimeNotFoundError

__all__ = ["TFLM_TIMEOUT_S", "ModelIO", "TFLMRun", "model_io", "refusals", "run_tflm", "tflm_version"]

_WORKER = str(Path(__file__).with_name("_tflm_worker.py"))
TFLM_TIMEOUT_S = 600.0
"""A TFLM run (the arena search and every sample) that takes longer than this counts as hung."""


def tflm_version() -> str:
    """The installed ``tflite-micro`` build.

    Raises:
        RuntimeNotFoundError: tflite-micro is not installed.
    """
    try:
        import tflite_micro
    except ImportError as e:
        raise RuntimeNotFoundError("TFLM's interpreter (the tflite-micro package) is not installed",
                                   fix="pip install 'edgeq[mcu]'") from e
    return str(tflite_micro.__version__)


@dataclass(frozen=True)
class ModelIO:
    """A model's inputs or outputs as TFLM sees them: numpy dtype names and shapes, in order."""

    dtypes: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    ops: tuple[tuple[str, str | None], ...] = ()
    """``(builtin name, custom code)`` of every operator of the first subgraph, in order."""


def model_io(model_bytes: bytes, which: str = "inputs") -> ModelIO:
    """The first subgraph's inputs (or ``"outputs"``) and operators, read with TFLM's own schema.

    TFLM's schema reads what ``edgeq_device``'s validator refuses on purpose: a compressed
    model keeps a per-channel scale on tensors whose data are now lookup-table indices.
    """
    tflm_version()
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    try:
        m = fb.Model.GetRootAsModel(model_bytes, 0)
        sg = m.Subgraphs(0)
        idx = [sg.Inputs(i) for i in range(sg.InputsLength())] if which == "inputs" else \
            [sg.Outputs(i) for i in range(sg.OutputsLength())]
        tensors = [sg.Tensors(i) for i in idx]
        dtypes = tuple(np.dtype(types[t.Type()].lower()).name for t in tensors)
        shapes = tuple(tuple(int(d) for d in t.ShapeAsNumpy()) for t in tensors)
        ops = []
        for i in range(sg.OperatorsLength()):
            code = m.OperatorCodes(sg.Operators(i).OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            custom = code.CustomCode()
            ops.append((names.get(builtin, str(builtin)), custom.decode() if custom else None))
    except Exception as e:
        raise InvalidArgumentError("not a .tflite flatbuffer TFLM can read", argument="model",
                                   received=f"<{len(model_bytes)} bytes>", fix="pass a .tflite file") from e
    return ModelIO(dtypes, shapes, tuple(ops))


@dataclass(frozen=True)
class TFLMRun:
    """What TFLM's interpreter did with a model: ran it, or said why not."""

    ok: bool
    tflm_version: str
    messages: str = ""
    smallest_arena: int = 0
    arena_total: int = 0
    arena_head: int = 0
    arena_tail: int = 0
    below_message: str = ""
    outputs: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)
    tensors: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)


def run_tflm(model_bytes: bytes, inputs: Sequence[np.ndarray], *, max_arena: int | None = None,
             timeout: float = TFLM_TIMEOUT_S, dump_sample: int | None = None,
             alt_decompression: int = 0) -> TFLMRun:
    """Load and run ``model_bytes`` in TFLM with the smallest arena that works, in a child process.

    Args:
        model_bytes: the ``.tflite`` flatbuffer.
        inputs: one array per model input, samples on the first axis (shape ``[N, ...]`` for an
            input of shape ``[1, ...]``), in the input's own dtype.
        max_arena: the largest arena tried, in bytes (default: 16 MiB, or 10x the model).
        timeout: seconds before the child counts as hung and is stopped.
        dump_sample: instead, run only this sample with every tensor kept, and return them all in
            :attr:`TFLMRun.tensors` (by tensor index; TFLM's ``kPreserveAllTensors``).
        alt_decompression: bytes of memory apart from the arena that TFLM decodes compressed
            tensors into (its ``alt_decompression_memory_size``); 0: they are decoded into the arena.

    Raises:
        RuntimeNotFoundError: tflite-micro is not installed.
        RuntimeCrashError: TFLM crashed (a signal) or hung; ``signal`` says which.
    """
    version = tflm_version()
    if not inputs:
        raise InvalidArgumentError("at least one input array is needed", argument="inputs", received=inputs)
    max_arena = int(max_arena or max(16 << 20, 10 * len(model_bytes)))
    with tempfile.TemporaryDirectory(prefix="edgeq-tflm-") as tmp:
        folder = Path(tmp)
        (folder / "model.tflite").write_bytes(model_bytes)
        named: dict[str, Any] = {f"x{i}": np.asarray(x) for i, x in enumerate(inputs)}
        np.savez(folder / "inputs.npz", **named)
        (folder / "request.json").write_text(json.dumps({"max_arena": max_arena, "dump_sample": dump_sample,
                                                         "alt_decompression": int(alt_decompression)}))
        try:
            proc = subprocess.run([sys.executable, _WORKER, str(folder)], capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise RuntimeCrashError(f"TFLM did not finish within {timeout:.0f} s", argument="model",
                                    fix="check the model runs in LiteRT first") from e
        result_path = folder / "result.json"
        if proc.returncode != 0 or not result_path.is_file():
            sig = -proc.returncode if proc.returncode < 0 else None
            name = signal.Signals(sig).name if sig else f"exit status {proc.returncode}"
            tail = " ".join(proc.stderr.strip().splitlines()[-3:])[:400]
            raise RuntimeCrashError(f"TFLM's interpreter crashed ({name}) on this model: {tail}".rstrip(": "),
                                    signal=sig, argument="model",
                                    fix="TFLM does not check a model's structure: check the file loads in LiteRT "
                                    "(edgeq analyze MODEL) and that its ops are ones TFLM has")
        data: dict[str, Any] = json.loads(result_path.read_text())
        outputs: tuple[np.ndarray, ...] = ()
        if (folder / "outputs.npz").is_file():
            with np.load(folder / "outputs.npz") as z:
                outputs = tuple(z[f"y{i}"] for i in range(len(z.files)))
        tensors: dict[int, np.ndarray] = {}
        if (folder / "tensors.npz").is_file():
            with np.load(folder / "tensors.npz") as z:
                tensors = {int(k[1:]): z[k] for k in z.files}
    rec = data.get("recorded", {})
    return TFLMRun(ok=bool(data["ok"]), tflm_version=str(data.get("version") or version),
                   messages=str(data.get("messages", "")), smallest_arena=int(data.get("smallest_arena", 0)),
                   arena_total=int(rec.get("total", 0)), arena_head=int(rec.get("head", 0)),
                   arena_tail=int(rec.get("tail", 0)), below_message=str(data.get("below_message", "")),
                   outputs=outputs, tensors=tensors)


_MISSING = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'|Didn't find (?:custom )?op for "
                      r"custom opcode '([^']+)'|Failed to get registration from op code ([A-Z0-9_]+)")
_NODE = re.compile(r"Node (\S+) \(number (\d+)\w*\) failed to (prepare|invoke)")


def refusals(messages: str) -> tuple[tuple[str, str], ...]:
    """``(op, reason)`` for each operator TFLM's messages name as missing or failing."""
    out: dict[str, str] = {}
    lines = [ln.strip() for ln in messages.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        m = _MISSING.search(line)
        if m:
            op = next(g for g in m.groups() if g)
            out.setdefault(op, "TFLM has no kernel for it (not registered in its op resolver)")
            continue
        n = _NODE.search(line)
        if n:
            before = [ln for ln in lines[max(0, i - 3):i] if not _NODE.search(ln)]
            why = "; ".join(before) or f"failed to {n.group(3)}"
            out.setdefault(n.group(1), f"operator {n.group(2)} failed to {n.group(3)} in TFLM: {why}")
    return tuple(out.items())
