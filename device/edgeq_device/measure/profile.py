"""``edgeq-device profile``: the time of every operator of a model on this machine.

The run:

1. The whole model is timed as ``bench`` times it (same interpreter options, the
   loop of :func:`edgeq_device.measure.bench.time_invocations`), on seeded random inputs.
2. One run without delegates and with ``experimental_preserve_all_tensors`` records
   the value of every tensor for those inputs.
3. Each operator of the primary subgraph is cut into a model of its own
   (:mod:`edgeq_device.measure.opcut`), fed the values its inputs had in step 2, and timed
   with the same loop and interpreter options. What one ``invoke()`` costs beyond the
   arithmetic (the Python call, the interpreter's loop, a delegate's setup: about 1 µs on
   a laptop) is measured on a one-element ``ADD`` and taken off each operator's p50, then
   counted once in the sum, as a run of the whole model pays it once.

The table then adds up: the operators' p50 times, their sum, the whole model's p50
and the residual between them. The residual is what single-operator timing cannot
see: work the interpreter does once per run (not per operator), operators a
delegate fuses or runs as one partition, cache effects between operators, and the
operators that could not be isolated (control flow, custom operators the runtime
lacks), each listed with the reason.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._version import __version__
from ..errors import EdgeqError, InvalidArgumentError
from ..model.analysis import op_display_name, op_macs
from ..model.flatbuffer import FlatModel, ModelSource, Tensor, load_model_bytes, read_flat_model
from ..model.metadata import read_metadata
from ..model.preprocess_choice import choose_preprocess
from ..results.report_json import JsonResult
from ..run.loadcheck import check_loads_in_child
from ..run.runtime import ModelRunner, Runtime, one_line, resolve_runtime
from .bench import random_inputs, random_preprocessing, time_invocations
from .opcut import CutError
from .opcut_raw import overhead_model
from .profile_inputs import Cutter, make_cutter, record_stepwise, record_tensors, static_tensors
from .profile_view import format_profile
from .sysinfo import BoardInfo, board_info

__all__ = ["OpProfile", "ProfileParams", "ProfileResult", "format_profile", "profile_model"]

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ProfileParams:
    """What ``profile`` was asked to do.

    Args:
        runs, min_secs, max_secs: each operator's timing loop (see :func:`time_invocations`).
        warmup: untimed runs of each operator before its loop.
        whole_runs, whole_min_secs: the whole model's timing loop (``max_secs`` 150 s).
        threads: interpreter threads (None: the runtime's default).
        xnnpack: False runs without the runtime's default delegate (XNNPACK).
        delegate: ``"edgetpu"``, a delegate library path, or None.
        delegate_options: options passed to the delegate.
        runtime: the runtime asked for (None: the first found).
        seed: seed of the random inputs.
        cutter: ``"schema"`` (the TFLite schema's object API, :mod:`edgeq_device.measure.opcut`), ``"raw"``
            (``flatbuffers`` only, :mod:`edgeq_device.measure.opcut_raw`) or None: the first that is installed.
    """

    runs: int = 20
    min_secs: float = 0.02
    max_secs: float = 2.0
    warmup: int = 2
    whole_runs: int = 50
    whole_min_secs: float = 1.0
    threads: int | None = None
    xnnpack: bool = True
    delegate: str | None = None
    delegate_options: dict[str, str] = field(default_factory=dict)
    runtime: str | None = None
    seed: int = 0
    cutter: str | None = None

    def __post_init__(self) -> None:
        def bad(arg: str, value: object, fix: str) -> InvalidArgumentError:
            return InvalidArgumentError("out of range", argument=arg, received=value, fix=fix)

        for name in ("runs", "whole_runs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, v, "give a count of at least 1, e.g. 20")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise bad("warmup", self.warmup, "give a count of 0 or more, e.g. 2")
        for name in ("min_secs", "max_secs", "whole_min_secs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise bad(name, v, "give a number of seconds, 0 or more")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise bad("threads", self.threads, "give a positive integer, e.g. 1 or 4")
        object.__setattr__(self, "delegate_options", dict(self.delegate_options or {}))


@dataclass(frozen=True)
class OpProfile:
    """One operator's row of the profile.

    ``p50_us`` is None where the operator was not isolated; ``note`` then says why.
    ``inputs`` is ``"recorded"`` (the values of a full run), ``"random"``, or ``"constant"``: an
    operator that reads only stored constants (e.g. ``DEQUANTIZE`` of float16 weights) is
    computed once by the interpreter (and folded into the weights by XNNPACK), so its time
    per run is 0 and it is not timed.
    """

    index: int
    op: str
    output_shape: tuple[int, ...]
    macs: int
    p50_us: float | None
    runs: int
    inputs: str
    note: str | None = None

    @property
    def isolated(self) -> bool:
        return self.p50_us is not None

    @property
    def macs_per_second(self) -> float | None:
        """Achieved multiply-accumulates per second (None without MACs or a time)."""
        if not self.macs or not self.p50_us:
            return None
        return self.macs / (self.p50_us * 1e-6)


@dataclass(frozen=True)
class ProfileResult(JsonResult):
    """What ``edgeq-device profile`` measured (:func:`profile_model`)."""

    KIND = "profile"

    model: str | None
    model_sha256: str
    mode: str | None
    runtime: str
    runtime_version: str
    threads: int | None
    xnnpack: bool
    delegate: str | None
    params: ProfileParams
    operators: tuple[OpProfile, ...]
    whole_p50_us: float | None
    whole_runs: int
    whole_note: str | None
    cut_note: str | None
    invoke_overhead_us: float | None
    seconds: float
    board: BoardInfo
    started: str
    edgeq_device_version: str
    #: what the random inputs stand for (profile always runs on seeded random inputs)
    preprocessing: str = ""

    @property
    def timed(self) -> tuple[OpProfile, ...]:
        """The operators that were timed alone."""
        return tuple(o for o in self.operators if o.p50_us is not None)

    @property
    def coverage(self) -> float:
        """Share of the operators timed alone (1.0 for a model without operators)."""
        return len(self.timed) / len(self.operators) if self.operators else 1.0

    @property
    def sum_us(self) -> float:
        """The sum of the timed operators' p50 times, plus the invoke overhead once (as a run pays it)."""
        timed = [o.p50_us for o in self.operators if o.p50_us is not None]
        return float(sum(timed)) + (self.invoke_overhead_us or 0.0 if timed else 0.0)

    @property
    def residual_us(self) -> float | None:
        """The whole model's p50 minus :attr:`sum_us` (None without a whole-model time)."""
        return None if self.whole_p50_us is None else self.whole_p50_us - self.sum_us

    def share(self, op: OpProfile) -> float | None:
        """The operator's share of :attr:`sum_us`."""
        total = self.sum_us
        return None if op.p50_us is None or total <= 0 else op.p50_us / total

    def __str__(self) -> str:
        """The table ``edgeq-device profile`` prints (:func:`format_profile`)."""
        return format_profile(self)


def _np_dtype(t: Tensor) -> np.dtype:
    try:
        return np.dtype(t.dtype.lower())
    except TypeError:
        return np.dtype(np.float32)


def _random_value(t: Tensor, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    dtype = _np_dtype(t)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127), size=shape, endpoint=True).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.uniform(0.0, 1.0, size=shape).astype(dtype)


def _whole_model(model_bytes: bytes, runtime: Runtime, params: ProfileParams,
                 flat: FlatModel) -> tuple[ModelRunner | None, dict[int, np.ndarray], str | None]:
    """The whole model's runner and its inputs (tensor index -> array), or None and the reason."""
    try:
        if params.delegate is None:
            check_loads_in_child(model_bytes, runtime, xnnpack=params.xnnpack)
        runner = ModelRunner(model_bytes, runtime=runtime, threads=params.threads, xnnpack=params.xnnpack,
                             delegate=params.delegate, delegate_options=params.delegate_options, probe=False)
    except EdgeqError as exc:
        if params.delegate is not None and "delegate" in (exc.argument or ""):
            raise
        rng = np.random.default_rng(params.seed)
        sg = flat.main
        inputs = {i: _random_value(sg.tensors[i], tuple(max(d, 1) for d in sg.tensors[i].shape), rng)
                  for i in sg.inputs}
        return None, inputs, exc.message
    arrays = random_inputs(runner.input_details, choose_preprocess(flat, warn=False).preprocess, params.seed)
    inputs = {int(d["index"]): a for d, a in zip(runner.input_details, arrays)}
    try:
        for idx, value in inputs.items():
            runner.interpreter.set_tensor(idx, value)
        runner.interpreter.invoke()
    except (RuntimeError, ValueError) as exc:
        return None, inputs, f"the model fails to run: {one_line(exc)}"
    return runner, inputs, None


def _time(invoke: Callable[[], object], warmup: int, runs: int, min_secs: float,
          max_secs: float) -> tuple[float, int]:
    for _ in range(warmup):
        invoke()
    samples, _ = time_invocations(invoke, runs, min_secs, max_secs)
    return float(np.percentile(np.asarray(samples, np.float64) / 1000.0, 50)), len(samples)


def _time_op(cutter: Cutter, index: int, values: dict[int, np.ndarray], static: set[int],
             flat: FlatModel, runtime: Runtime, params: ProfileParams,
             rng: np.random.Generator) -> tuple[float, int, str]:
    cut = cutter.cut(index, values, sorted(static))
    runner = ModelRunner(cut.content, runtime=runtime, threads=params.threads, xnnpack=params.xnnpack,
                         delegate=params.delegate, delegate_options=params.delegate_options, probe=False)
    interp = runner.interpreter
    fed = "recorded"
    for new_idx, full_idx in cut.inputs:
        value = values.get(full_idx)
        if value is None:
            t = flat.main.tensors[full_idx]
            value = _random_value(t, tuple(max(d, 1) for d in t.shape), rng)
            fed = "random"
        interp.set_tensor(new_idx, value)
    p50, n = _time(interp.invoke, params.warmup, params.runs, params.min_secs, params.max_secs)
    return p50, n, fed


class _WholeTimer:
    """Times the whole model in rounds spread over the operators' timing, so that both see the
    same machine (a load that comes and goes moves both); the p50 is over every round's runs."""

    ROUNDS = 10

    def __init__(self, runner: ModelRunner | None, inputs: dict[int, np.ndarray], params: ProfileParams,
                 op_count: int) -> None:
        self.runner, self.params = runner, params
        self.samples: list[int] = []
        self.every = max(1, -(-op_count // self.ROUNDS))
        if runner is not None:
            for idx, value in inputs.items():
                runner.interpreter.set_tensor(idx, value)
            for _ in range(5):
                runner.interpreter.invoke()

    def round(self, runs: int | None = None, min_secs: float | None = None) -> None:
        if self.runner is None:
            return
        p = self.params
        runs = runs if runs is not None else max(1, -(-p.whole_runs // (self.ROUNDS + 1)))
        min_secs = min_secs if min_secs is not None else p.whole_min_secs / (self.ROUNDS + 1)
        got, _ = time_invocations(self.runner.interpreter.invoke, runs, min_secs, 150.0)
        self.samples.extend(got)

    def after_op(self, index: int) -> None:
        if (index + 1) % self.every == 0:
            self.round()

    def finish(self) -> tuple[float | None, int]:
        if self.runner is None:
            return None, 0
        if len(self.samples) < self.params.whole_runs:
            self.round(runs=self.params.whole_runs - len(self.samples), min_secs=0.0)
        self.runner = None
        return float(np.percentile(np.asarray(self.samples, np.float64) / 1000.0, 50)), len(self.samples)


def profile_model(
    model: ModelSource,
    params: ProfileParams | None = None,
    *,
    log: Callable[[str], None] | None = None,
    progress: ProgressCallback | None = None,
    **kwargs: Any,
) -> ProfileResult:
    """Time every operator of a ``.tflite`` on this machine, and the whole model in the same run.

    Args:
        model: path or bytes of the model.
        params: a :class:`ProfileParams`, or its fields as keyword arguments.
        log: called with a line at each stage (the CLI passes a stderr printer).
        progress: called as ``progress(done, total)`` after each operator.

    Raises:
        ModelFileError, RuntimeNotFoundError, DelegateError, InvalidArgumentError.
    """
    if params is None:
        params = ProfileParams(**kwargs)
    elif kwargs:
        raise InvalidArgumentError("give either params or keyword arguments, not both", argument="params",
                                   received=sorted(kwargs), fix="use dataclasses.replace(params, ...)")
    say = log or (lambda _line: None)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    t_start = _dt.datetime.now().timestamp()
    model_bytes = load_model_bytes(model)
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    flat = read_flat_model(model if path is None else path)
    runtime = resolve_runtime(params.runtime)
    meta = read_metadata(model_bytes)

    runner, inputs, whole_note = _whole_model(model_bytes, runtime, params, flat)
    whole = _WholeTimer(runner, inputs, params, len(flat.main.operators))
    if runner is not None:
        say("timing the whole model (in rounds between the operators)")
    whole.round()

    static = static_tensors(flat)
    folded = {op.index for op in flat.main.operators if op.outputs and all(o in static for o in op.outputs if o >= 0)}
    cut_note: str | None = None
    try:
        cutter = make_cutter(model_bytes, flat, params.cutter)
    except CutError as exc:
        cut_note = str(exc)
    values: dict[int, np.ndarray] = dict(inputs)
    recorded = False
    if whole_note is None:
        say("recording every tensor's value")
        try:
            values = record_tensors(model_bytes, runtime, inputs, len(flat.main.tensors))
            recorded = True
        except (RuntimeError, ValueError) as exc:
            say(f"the model fails to run without delegates ({one_line(exc)})")
    if not recorded and cut_note is None:
        say("recording tensor values operator by operator")
        values = record_stepwise(cutter, flat, runtime, inputs, static)
    overhead: float | None = None
    if cut_note is None:
        try:
            oh = ModelRunner(overhead_model(), runtime=runtime, threads=params.threads, xnnpack=params.xnnpack,
                             probe=False)
            oh.interpreter.set_tensor(0, np.ones([1], np.float32))
            overhead = _time(oh.interpreter.invoke, params.warmup, max(params.runs, 100), params.min_secs,
                             params.max_secs)[0]
        except (EdgeqError, RuntimeError, ValueError) as exc:
            say(f"the invoke overhead could not be measured ({exc}); operators' times include it")
    rows = []
    sg = flat.main
    rng = np.random.default_rng(params.seed + 1)
    total = len(sg.operators)
    if cut_note is None:
        say(f"timing {total} operators one by one")
    for op in sg.operators:
        out_shape: tuple[int, ...] = ()
        if op.outputs and op.outputs[0] >= 0:
            o = op.outputs[0]
            out_shape = tuple(values[o].shape) if o in values else sg.tensors[o].shape
        p50: float | None = None
        n, fed, note = 0, "recorded", cut_note
        if cut_note is None and op.index in folded:
            p50, fed, note = 0.0, "constant", "computed once from constants, not on every run"
        elif cut_note is None:
            try:
                p50, n, fed = _time_op(cutter, op.index, values, static, flat, runtime, params, rng)
                p50 = max(0.0, p50 - (overhead or 0.0))
            except CutError as exc:
                note = f"not isolated: {exc}"
            except EdgeqError as exc:
                note = f"not isolated: {exc.message}"
            except (RuntimeError, ValueError) as exc:
                note = f"not isolated: the operator failed alone: {one_line(exc)}"
        rows.append(OpProfile(index=op.index, op=op_display_name(op), output_shape=tuple(int(d) for d in out_shape),
                              macs=op_macs(sg, op), p50_us=p50, runs=n, inputs=fed, note=note))
        whole.after_op(op.index)
        if progress is not None:
            progress(op.index + 1, total)
    whole_p50, whole_runs = whole.finish()
    return ProfileResult(
        model=path, model_sha256=hashlib.sha256(model_bytes).hexdigest(), mode=meta.mode if meta else None,
        runtime=runtime.name, runtime_version=runtime.version, threads=params.threads, xnnpack=params.xnnpack,
        delegate=params.delegate, params=params, operators=tuple(rows), whole_p50_us=whole_p50,
        whole_runs=whole_runs, whole_note=whole_note, cut_note=cut_note, invoke_overhead_us=overhead,
        seconds=_dt.datetime.now().timestamp() - t_start, board=board_info(), started=started,
        edgeq_device_version=__version__,
        preprocessing=random_preprocessing(runner.input_details, choose_preprocess(flat, warn=False))
        if runner is not None else "none: random integers in -128..127, floats in [0, 1)")
