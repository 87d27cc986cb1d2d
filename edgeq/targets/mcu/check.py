"""A model on a microcontroller, measured in TFLM's interpreter: :func:`check_mcu` → :class:`MCUReport`.

What it says, none of it needing a board:

- whether TFLM runs every operator, and if not which ones and why, in TFLM's own words;
- the tensor arena in bytes: what TFLM's recording allocator printed (total, head, tail) with
  the smallest arena that loads and runs the model, found by bisection (the total is the arena
  stated; it equals that smallest arena on the models tried);
- flash: the model's bytes, plus an estimate of the interpreter's code for the ops used
  (:data:`CODE_CORE_BYTES` + :data:`CODE_PER_OP_BYTES` per operator type; both stated, not measured);
- the outputs against LiteRT's reference kernels (``BUILTIN_REF``) on the same inputs: the largest
  difference (in the output's own units: quantization steps for int8) and the arg-max agreement;
- with a board, whether it fits (:mod:`edgeq.targets.mcu.boards`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgeq.errors import InvalidArgumentError
from edgeq.targets.mcu.boards import Board, BoardFit, board_fit
from edgeq.targets.mcu.ops import op_key
from edgeq.targets.mcu.run import TFLMRun, model_io, refusals, run_tflm

__all__ = ["CODE_CORE_BYTES", "CODE_ESTIMATE_SOURCE", "CODE_PER_OP_BYTES", "MCU_SCHEMA", "MCUReport",
           "ReferenceMatch", "check_mcu", "check_mcu_args", "first_difference", "mcu_cell", "random_inputs", "reference_outputs"]

MCU_SCHEMA = "edgeq/mcu/1"
CODE_CORE_BYTES = 16 * 1024
CODE_PER_OP_BYTES = 4 * 1024
CODE_ESTIMATE_SOURCE = ("interpreter core 16 KiB: TFLM's documentation (tensorflow.org/lite/microcontrollers, "
                        "\"the core runtime just fits in 16 KB on an Arm Cortex M3\"); kernels 4 KiB per operator "
                        "type: an assumption of edgeq, not a measurement (reference kernels range from under 1 KiB "
                        "to tens of KiB with optimized libraries such as CMSIS-NN)")


@dataclass(frozen=True)
class ReferenceMatch:
    """TFLM's outputs against LiteRT's reference kernels on the same inputs."""

    samples: int
    max_abs_diff: float
    argmax_agreement: float
    bit_exact: bool
    against: str = "LiteRT BUILTIN_REF"
    max_abs_reference: float = 0.0
    """The largest ``|output|`` of the reference: the scale the difference is read against."""
    first_difference: str = ""
    """Where the two first part: the first operator whose output differs, and by how much."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"samples": self.samples, "max_abs_diff": self.max_abs_diff,
                "argmax_agreement": self.argmax_agreement, "bit_exact": self.bit_exact, "against": self.against,
                "max_abs_reference": self.max_abs_reference, "first_difference": self.first_difference}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceMatch:
        """Read :meth:`to_dict`'s form back."""
        return cls(int(data["samples"]), float(data["max_abs_diff"]), float(data["argmax_agreement"]),
                   bool(data["bit_exact"]), str(data.get("against", "LiteRT BUILTIN_REF")),
                   float(data.get("max_abs_reference", 0.0)), str(data.get("first_difference", "")))

    def summary(self) -> str:
        """One line."""
        if self.bit_exact:
            return f"bit-exact with {self.against} on {self.samples} inputs"
        text = (f"differs from {self.against} on {self.samples} inputs: max |diff| {self.max_abs_diff:.6g} "
                f"(largest |output| {self.max_abs_reference:.6g}), arg-max agreement {self.argmax_agreement:.1%}")
        return text + (f"; first difference: {self.first_difference}" if self.first_difference else "")


@dataclass(frozen=True)
class MCUReport:
    """One model in TFLM's interpreter: support, arena, flash, fidelity to LiteRT, board fit."""

    tflm_version: str
    ops: tuple[str, ...]
    supported: bool
    unsupported: tuple[tuple[str, str], ...] = ()
    messages: str = ""
    arena_bytes: int = 0
    arena_head: int = 0
    arena_tail: int = 0
    smallest_arena: int = 0
    model_bytes: int = 0
    code_estimate_bytes: int = 0
    reference: ReferenceMatch | None = None
    fit: BoardFit | None = None
    reference_note: str = ""

    @property
    def arena_needed(self) -> int:
        """The arena a firmware must give: the larger of the recorded total and the smallest arena that ran.

        They are equal on most models; where TFLM needs room while preparing that it gives back
        before the recording ends, the smallest arena that runs is larger than the total.
        """
        return max(self.arena_bytes, self.smallest_arena)

    @property
    def flash_bytes(self) -> int:
        """Model bytes plus the interpreter's code estimate."""
        return self.model_bytes + self.code_estimate_bytes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, versioned by ``schema``."""
        return {"schema": MCU_SCHEMA, "tflm_version": self.tflm_version, "ops": list(self.ops),
                "supported": self.supported, "unsupported": [list(u) for u in self.unsupported],
                "messages": self.messages, "arena_bytes": self.arena_bytes, "arena_head": self.arena_head,
                "arena_tail": self.arena_tail, "smallest_arena": self.smallest_arena,
                "arena_needed": self.arena_needed, "model_bytes": self.model_bytes,
                "code_estimate_bytes": self.code_estimate_bytes, "code_estimate_source": CODE_ESTIMATE_SOURCE,
                "flash_bytes": self.flash_bytes,
                "reference": self.reference.to_dict() if self.reference else None,
                "fit": self.fit.to_dict() if self.fit else None, "reference_note": self.reference_note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MCUReport:
        """Read :meth:`to_dict`'s form back."""
        return cls(str(data["tflm_version"]), tuple(data["ops"]), bool(data["supported"]),
                   tuple((str(o), str(r)) for o, r in data.get("unsupported", ())), str(data.get("messages", "")),
                   int(data.get("arena_bytes", 0)), int(data.get("arena_head", 0)), int(data.get("arena_tail", 0)),
                   int(data.get("smallest_arena", 0)), int(data.get("model_bytes", 0)), int(data.get("code_estimate_bytes", 0)),
                   ReferenceMatch.from_dict(data["reference"]) if data.get("reference") else None,
                   BoardFit.from_dict(data["fit"]) if data.get("fit") else None, str(data.get("reference_note", "")))

    def summary(self) -> str:
        """A few lines: what TFLM said, arena, flash, fidelity, fit."""
        if not self.supported:
            if self.unsupported:
                named = "; ".join(f"{op}: {why}" for op, why in self.unsupported)
            else:
                named = self.messages.strip().splitlines()[-1] if self.messages.strip() else "no reason given"
            return f"TFLM {self.tflm_version} cannot run this model: {named}"
        smallest = ("the same as the smallest arena that runs, found by bisection"
                    if self.smallest_arena == self.arena_bytes else
                    f"the smallest arena that runs, found by bisection, is {self.smallest_arena:,}: give "
                    f"{self.arena_needed:,}")
        lines = [f"TFLM {self.tflm_version}: runs all {len(self.ops)} operator types ({', '.join(self.ops)})",
                 f"arena: {self.arena_bytes:,} bytes ({self.arena_bytes / 1024:.1f} KiB; head {self.arena_head:,}, "
                 f"tail {self.arena_tail:,}; {smallest})",
                 f"flash: {self.flash_bytes:,} bytes ({self.flash_bytes / 1024:.1f} KiB) = model {self.model_bytes:,} "
                 f"+ interpreter code estimate {self.code_estimate_bytes:,}"]
        if self.reference is not None:
            lines.append(f"outputs: {self.reference.summary()}")
        elif self.reference_note:
            lines.append(f"outputs: not compared ({self.reference_note})")
        if self.fit is not None:
            lines.append(self.fit.summary())
        return "\n".join(lines)


def random_inputs(model_bytes: bytes, samples: int = 8, seed: int = 0) -> list[np.ndarray]:
    """``samples`` seeded random inputs per model input, over the dtype's range (floats in [-1, 1])."""
    io = model_io(model_bytes)
    rng = np.random.default_rng(seed)
    out = []
    for dtype, shape in zip(io.dtypes, io.shapes):
        dt = np.dtype(dtype)
        full = (samples, *(max(1, d) for d in shape[1:]))
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            lo, hi = max(int(info.min), -32768), min(int(info.max), 32767)
            out.append(rng.integers(lo, hi + 1, size=full).astype(dt))
        elif dt == np.bool_:
            out.append(rng.integers(0, 2, size=full).astype(bool))
        else:
            out.append(rng.uniform(-1, 1, size=full).astype(dt))
    return out


def reference_outputs(model_bytes: bytes, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """The model's outputs from LiteRT's reference kernels (``BUILTIN_REF``), one sample at a time."""
    from ai_edge_litert import interpreter as litert

    interp = litert.Interpreter(model_content=model_bytes, num_threads=1,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    ins, outs = interp.get_input_details(), interp.get_output_details()
    for d, x in zip(ins, inputs):
        if tuple(d["shape"]) != (1, *x.shape[1:]):
            interp.resize_tensor_input(d["index"], (1, *x.shape[1:]))
    interp.allocate_tensors()
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for s in range(len(inputs[0])):
        for d, x in zip(ins, inputs):
            interp.set_tensor(d["index"], x[s:s + 1])
        interp.invoke()
        for k, d in enumerate(outs):
            results[k].append(np.array(interp.get_tensor(d["index"])))
    return tuple(np.concatenate(r) for r in results)


def _match(tflm: Sequence[np.ndarray], ref: Sequence[np.ndarray], against: str) -> ReferenceMatch:
    diffs, agree = [], []
    for a, b in zip(tflm, ref):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        diffs.append(float(np.max(np.abs(a64 - b64))) if a.size else 0.0)
        if a.ndim >= 2 and a.shape[-1] > 1:
            agree.append(float(np.mean(a64.reshape(len(a), -1).argmax(1) == b64.reshape(len(b), -1).argmax(1))))
    exact = all(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b) for a, b in zip(tflm, ref))
    scale = max((float(np.max(np.abs(b.astype(np.float64)))) for b in ref if b.size), default=0.0)
    return ReferenceMatch(len(tflm[0]) if tflm else 0, max(diffs, default=0.0),
                          float(np.mean(agree)) if agree else 1.0, exact, against, scale)


def first_difference(model: bytes, inputs: Sequence[np.ndarray]) -> str:
    """The first operator whose output differs between TFLM and LiteRT's reference kernels.

    Runs the sample of ``inputs`` whose final outputs differ most with every tensor kept, in both
    interpreters, and walks the operators in order. "" when no tensor differs.
    """
    from ai_edge_litert import interpreter as litert
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    tflm_all = run_tflm(model, inputs).outputs
    ref_all = reference_outputs(model, inputs)
    per_sample = np.zeros(len(inputs[0]))
    for a, b in zip(tflm_all, ref_all):
        per_sample = np.maximum(per_sample, np.abs(a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1)
                                .max(1))
    sample = int(per_sample.argmax())
    dumped = run_tflm(model, inputs, dump_sample=sample).tensors
    interp = litert.Interpreter(model_content=model, num_threads=1, experimental_preserve_all_tensors=True,
                                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], x[sample:sample + 1])
    interp.invoke()
    m = fb.Model.GetRootAsModel(model, 0)
    sg = m.Subgraphs(0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        code = m.OperatorCodes(op.OpcodeIndex())
        opname = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        for k in range(op.OutputsLength()):
            t = op.Outputs(k)
            if t not in dumped:
                continue
            ref = np.asarray(interp.get_tensor(t)).astype(np.float64).ravel()
            got = dumped[t].astype(np.float64).ravel()
            if ref.size == got.size and not np.array_equal(ref, got):
                diff = np.abs(ref - got)
                name = sg.Tensors(t).Name().decode(errors="replace")
                return (f"op {i} {opname} (output tensor {t} {name!r}): max |diff| {diff.max():.6g} on "
                        f"{int((diff > 0).sum())} of {diff.size} values (sample {sample})")
    return ""


def check_mcu(model: bytes, inputs: Sequence[np.ndarray] | None = None, *, samples: int = 8, seed: int = 0,
              board: Board | None = None, reserve_ram: int = 0, reserve_flash: int = 0,
              reference: bool = True, against: Sequence[np.ndarray] | None = None,
              against_name: str = "LiteRT BUILTIN_REF", max_arena: int | None = None) -> MCUReport:
    """Load and run ``model`` in TFLM: support, smallest arena, flash, outputs vs LiteRT, board fit.

    Args:
        model: the ``.tflite`` bytes.
        inputs: one array per model input (samples first, the input's dtype); default
            ``samples`` seeded random inputs (:func:`random_inputs`).
        board: say whether the model fits this board, keeping ``reserve_ram`` and
            ``reserve_flash`` bytes for the rest of the application.
        reference: compare the outputs with LiteRT's reference kernels on the same inputs.
        against: compare with these outputs instead (e.g. the uncompressed model's in TFLM).
        max_arena: the largest arena tried, in bytes (default 16 MiB, or 10x the model's size).

    Raises:
        RuntimeNotFoundError: tflite-micro is not installed.
        RuntimeCrashError: TFLM's interpreter crashed on the model (in a child process).
    """
    xs = list(inputs) if inputs is not None else random_inputs(model, samples, seed)
    io = model_io(model)
    ops = tuple(sorted({op_key(op, custom) for op, custom in io.ops}))
    run: TFLMRun = run_tflm(model, xs, max_arena=max_arena)
    if not run.ok:
        named = refusals(run.messages)
        if "Failed to allocate" in run.messages and not any("no kernel" in why for _, why in named):
            # An operator that fails to prepare for want of memory is not the operator's fault.
            tried = int(max_arena or max(16 << 20, 10 * len(model)))
            named = (("arena", f"the model does not run with {tried:,} bytes of arena, the most tried: too big for "
                               "a microcontroller's RAM"),)
        return MCUReport(run.tflm_version, ops, False, named, run.messages, model_bytes=len(model))
    match, note = None, ""
    if against is not None:
        match = _match(run.outputs, against, against_name)
    elif reference:
        try:
            match = _match(run.outputs, reference_outputs(model, xs), "LiteRT BUILTIN_REF")
            if not match.bit_exact:
                match = replace(match, first_difference=first_difference(model, xs))
        except (ValueError, RuntimeError) as e:  # LiteRT refuses what TFLM ran (e.g. a TFLM-only custom op)
            note = f"LiteRT cannot run it: {str(e).strip().splitlines()[0][:200]}"

    code = CODE_CORE_BYTES + CODE_PER_OP_BYTES * len(ops)
    fit = board_fit(board, max(run.arena_total, run.smallest_arena), len(model) + code, reserve_ram, reserve_flash) if board else None
    return MCUReport(run.tflm_version, ops, True, (), "", run.arena_total, run.arena_head, run.arena_tail,
                     run.smallest_arena, len(model), code, match, fit, note)


def check_mcu_args(mode: Any, batch_size: int | None, allow_float_fallback: bool) -> None:
    """Refuse conversion options a microcontroller build cannot take, each with its fix.

    Raises:
        InvalidArgumentError: a mode other than int8, a batch other than 1, or float fallback.
    """
    value = str(getattr(mode, "value", mode)).lower()
    if value != "int8":
        raise InvalidArgumentError("the mcu target converts to full-integer int8 (what TFLM's optimized kernels run)",
                                   argument="mode", received=value, fix="use mode='int8' (--mode int8) with calibration "
                                   "data; check another .tflite with analyze(path, target='mcu')")
    if batch_size not in (None, 1):
        raise InvalidArgumentError("a microcontroller runs one sample at a time (static batch 1)",
                                   argument="batch_size", received=batch_size, fix="use batch_size=1 or leave it out")
    if allow_float_fallback:
        raise InvalidArgumentError("float fallback leaves float ops, slow or missing in TFLM",
                                   argument="allow_float_fallback", received=True,
                                   fix="leave float fallback off for the mcu target")


def mcu_cell(model: bytes, board: Board | None = None, reserve_ram: int = 0, reserve_flash: int = 0) -> dict[str, Any]:
    """What a comparison row shows for the mcu target: TFLM support, arena, flash, board fit (a plain dict).

    Keys: ``supported``, ``unsupported`` (op names), ``arena_bytes`` (what a firmware must give),
    ``flash_bytes`` (model + code estimate), ``board`` and ``fits`` (None without a board).
    """
    rep = check_mcu(model, board=board, reserve_ram=reserve_ram, reserve_flash=reserve_flash, reference=False)
    return {"supported": rep.supported, "unsupported": [op for op, _ in rep.unsupported],
            "arena_bytes": rep.arena_needed if rep.supported else None,
            "flash_bytes": rep.flash_bytes if rep.supported else None,
            "board": board.name if board else None, "fits": rep.fit.fits if rep.fit else None}
