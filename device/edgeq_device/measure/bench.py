"""``edgeq-device bench``: latency and memory of one model on this machine.

Laid out like TFLite's ``benchmark_model``: the parameters
(:class:`BenchParams`), the timing loop (:func:`time_invocations`), the
results (:class:`BenchResult`, :class:`LatencyStats`) and the reporting
(:func:`format_bench`) are separate.

The run: load and allocate (init time), one first inference (timed alone:
it includes one-time work such as weight packing), warm-up runs (timed
apart), then timed runs until both ``runs`` and ``min_secs`` are reached or
``max_secs`` has passed. Inputs are set once before the loop; the loop times
only ``interpreter.invoke()`` with ``time.perf_counter_ns``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .._version import __version__
from ..errors import DataError, InferenceError, InvalidArgumentError
from ..model.flatbuffer import ModelSource, load_model_bytes, read_flat_model
from ..model.metadata import read_metadata
from ..model.preprocess import Preprocess, load_image
from ..model.preprocess_choice import PreprocessChoice, as_choice, normalization_text
from ..results.report_json import JsonResult
from ..run.images import list_image_folder
from ..run.loadcheck import check_loads_in_child
from ..run.runtime import ModelRunner, one_line, resolve_runtime
from .sysinfo import BoardInfo, board_info, memory_status, soc_temperature, throttling

__all__ = [
    "BenchMemory",
    "BenchParams",
    "BenchResult",
    "LatencyStats",
    "benchmark",
    "format_bench",
    "median_interval",
    "random_inputs",
    "time_invocations",
]


@dataclass(frozen=True)
class BenchParams:
    """What ``bench`` was asked to do.

    Args:
        runs: at least this many timed runs.
        min_secs: and at least this long (both must be met), unless ``max_secs`` passes first.
        max_secs: stop timing once this long has passed, whatever ``runs`` says.
        warmup: untimed-in-the-results runs before the timed ones (timed apart).
        threads: interpreter threads (None: the runtime's default).
        xnnpack: False runs without the runtime's default delegate (XNNPACK).
        delegate: ``"edgetpu"``, a delegate library path, or None.
        delegate_options: options passed to the delegate, e.g. ``{"device": "usb:0"}``.
        runtime: the runtime asked for (None: the first found).
        data: an image folder to take the input from (None: random inputs).
        seed: seed of the random inputs / of the image picked from ``data``.
        keep_samples: also return every timed run's latency (``BenchResult.samples_us``).
    """

    runs: int = 50
    min_secs: float = 1.0
    max_secs: float = 150.0
    warmup: int = 5
    threads: int | None = None
    xnnpack: bool = True
    delegate: str | None = None
    delegate_options: dict[str, str] = field(default_factory=dict)
    runtime: str | None = None
    data: str | None = None
    seed: int = 0
    keep_samples: bool = False

    def __post_init__(self) -> None:
        def bad(arg: str, value: object, fix: str) -> InvalidArgumentError:
            return InvalidArgumentError("out of range", argument=arg, received=value, fix=fix)

        if not isinstance(self.runs, int) or self.runs < 1:
            raise bad("runs", self.runs, "give a count of at least 1, e.g. 50")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise bad("warmup", self.warmup, "give a count of 0 or more, e.g. 5")
        for name in ("min_secs", "max_secs"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise bad(name, v, "give a number of seconds, 0 or more")
        if self.max_secs < self.min_secs:
            raise InvalidArgumentError("max_secs is shorter than min_secs", argument="max_secs",
                                       received=self.max_secs,
                                       fix=f"give max_secs >= min_secs ({self.min_secs})")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise bad("threads", self.threads, "give a positive integer, e.g. 1 or 4")
        object.__setattr__(self, "delegate_options", dict(self.delegate_options or {}))


@dataclass(frozen=True)
class LatencyStats:
    """Statistics of a list of run times, in microseconds."""

    count: int
    total_s: float
    mean_us: float
    std_us: float
    min_us: float
    max_us: float
    p50_us: float
    p90_us: float
    p99_us: float

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int]) -> LatencyStats:
        """Summarize run times given in nanoseconds."""
        if not len(samples_ns):
            raise InvalidArgumentError("no samples to summarize", argument="samples_ns",
                                       received=0, fix="time at least one run")
        us = np.asarray(samples_ns, dtype=np.float64) / 1000.0
        p50, p90, p99 = (float(v) for v in np.percentile(us, [50, 90, 99]))
        return cls(count=int(us.size), total_s=float(us.sum()) / 1e6, mean_us=float(us.mean()),
                   std_us=float(us.std()), min_us=float(us.min()), max_us=float(us.max()),
                   p50_us=p50, p90_us=p90, p99_us=p99)


def median_interval(samples: Sequence[float], confidence: float = 0.95, resamples: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """Seeded bootstrap percentile interval of the median of ``samples`` (e.g. run times in µs).

    ``resamples`` times, draw ``len(samples)`` values with replacement and take their
    median; the interval holds the central ``confidence`` share of those medians. The same
    samples and seed give the same interval. One sample gives ``(x, x)``.

    Raises:
        InvalidArgumentError: no samples, a confidence outside (0, 1), or fewer than 1 resample.
    """
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise InvalidArgumentError("no samples to take an interval of", argument="samples", received=0,
                                   fix="time at least one run (keep_samples=True)")
    if not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise InvalidArgumentError("confidence must lie between 0 and 1", argument="confidence",
                                   received=confidence, fix="give e.g. 0.95")
    if not isinstance(resamples, int) or resamples < 1:
        raise InvalidArgumentError("resamples must be a positive integer", argument="resamples",
                                   received=resamples, fix="give e.g. 1000")
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // x.size)  # bounded memory for long runs
    medians = np.concatenate([np.median(x[rng.integers(0, x.size, size=(min(chunk, resamples - i), x.size))],
                                        axis=1) for i in range(0, resamples, chunk)])
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(medians, [tail, 100 - tail])
    return float(lo), float(hi)


@dataclass(frozen=True)
class BenchMemory:
    """Resident memory in KiB around the benchmark (None where the OS does not tell)."""

    rss_before_kb: int | None
    rss_after_init_kb: int | None
    rss_after_kb: int | None
    peak_rss_kb: int | None
    model_rss_kb: int | None


@dataclass(frozen=True)
class BenchResult(JsonResult):
    """What ``edgeq-device bench`` measured."""

    KIND = "bench"

    model: str | None
    model_sha256: str
    model_size_bytes: int
    mode: str | None
    runtime: str
    runtime_version: str
    delegate: str | None
    threads: int | None
    xnnpack: bool
    inputs: str
    params: BenchParams
    init_ms: float
    interpreter_init_ms: float
    first_inference_us: float
    warmup: LatencyStats | None
    latency: LatencyStats
    stopped_by: str
    memory: BenchMemory
    board: BoardInfo
    temperature_before_c: float | None
    temperature_after_c: float | None
    throttled_before: str | None
    throttled_after: str | None
    started: str
    edgeq_device_version: str
    samples_us: tuple[float, ...] | None = None
    #: one line: the preprocessing used and where each part came from (see :mod:`edgeq_device.model.preprocess_choice`)
    preprocessing: str = ""
    #: where each part came from: ``size``, ``color``, ``normalization`` -> flag, edgeq metadata, TFLite metadata, input, ...
    preprocess_sources: dict[str, str] | None = None

    def __str__(self) -> str:
        """The text ``edgeq-device bench`` prints (:func:`format_bench`)."""
        return format_bench(self)


def time_invocations(invoke: Callable[[], object], runs: int, min_secs: float,
                     max_secs: float) -> tuple[list[int], str]:
    """Call ``invoke`` until ``runs`` calls and ``min_secs`` are both reached, or ``max_secs`` passes.

    Returns:
        The duration of each call in nanoseconds, and what stopped the loop
        (``"runs"``: count and minimum time met; ``"max_secs"``: the time limit).
    """
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    start = clock()
    min_end = start + int(min_secs * 1e9)
    max_end = start + int(max_secs * 1e9)
    n = 0
    while True:
        t0 = clock()
        invoke()
        t1 = clock()
        append(t1 - t0)
        n += 1
        if n >= runs and t1 >= min_end:
            return samples, "runs"
        if t1 >= max_end:
            return samples, "max_secs"


def random_inputs(input_details: Sequence[Mapping[str, object]], preprocess: Preprocess | None = None,
                  seed: int = 0) -> list[np.ndarray]:
    """One random array per input, in each input's own dtype and value range.

    Integer (quantized) inputs are uniform over the whole integer range; float
    inputs uniform in ``[0, 1)``, or over what ``preprocess`` makes of pixels 0..255.
    """
    rng = np.random.default_rng(seed)
    arrays = []
    for d in input_details:
        shape = tuple(int(x) for x in np.asarray(d["shape"]).tolist())
        dtype = np.dtype(d["dtype"])  # type: ignore[call-overload]
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            arrays.append(rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype))
        elif dtype.kind == "f":
            lo, hi = 0.0, 1.0
            if preprocess is not None:
                mean, std = np.asarray(preprocess.mean), np.asarray(preprocess.std)
                ends = np.concatenate([(0.0 - mean) / std, (255.0 - mean) / std])
                lo, hi = float(ends.min()), float(ends.max())
            arrays.append(rng.uniform(lo, hi, size=shape).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.integers(0, 2, size=shape).astype(bool))
        else:
            arrays.append(np.zeros(shape, dtype))
    return arrays


def random_preprocessing(input_details: Sequence[Mapping[str, object]], choice: PreprocessChoice) -> str:
    """What random inputs stand for: the whole integer range, or what the preprocessing makes of pixels."""
    kinds = {np.dtype(d["dtype"]).kind for d in input_details}  # type: ignore[call-overload]
    if "f" not in kinds:
        return "none: random integers over each input's whole range"
    source = choice.sources.get("normalization", "default")
    where = "a guess: no metadata" if source == "default" else f"normalization from {source}"
    return f"none: random floats over what {normalization_text(choice.preprocess)} makes of pixels 0..255 ({where})"


def _data_inputs(runner: ModelRunner, data: str | Path, preprocess: Preprocess,
                 seed: int) -> list[np.ndarray]:
    if len(runner.input_details) != 1:
        raise DataError(f"--data needs a model with one image input; this one has "
                        f"{len(runner.input_details)}", argument="data", received=str(data),
                        fix="benchmark with random inputs (leave out --data)")
    listing = list_image_folder(data).sample(1, seed)
    sample = load_image(listing.paths[0], preprocess)[None]
    return [sample]


def benchmark(
    model: ModelSource,
    params: BenchParams | None = None,
    *,
    preprocess: Preprocess | PreprocessChoice | None = None,
    log: Callable[[str], None] | None = None,
    **kwargs: object,
) -> BenchResult:
    """Benchmark a ``.tflite`` on this machine.

    Args:
        model: path or bytes of the model.
        params: a :class:`BenchParams`; or give its fields as keyword arguments
            (``benchmark("m.tflite", runs=100, threads=2)``).
        preprocess: how ``params.data`` images become input, and the range of random float
            inputs (default: chosen from the model, see :mod:`edgeq_device.model.preprocess_choice`).
        log: called with a line of progress (the CLI passes a stderr printer).

    Raises:
        ModelFileError, RuntimeNotFoundError, DelegateError, DataError, InvalidArgumentError.
    """
    if params is None:
        params = BenchParams(**kwargs)  # type: ignore[arg-type]
    elif kwargs:
        raise InvalidArgumentError("give either params or keyword arguments, not both",
                                   argument="params", received=sorted(kwargs),
                                   fix="use dataclasses.replace(params, ...)")
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_bytes = load_model_bytes(model)
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    read_flat_model(model if path is None else path)  # checked first: errors name the file
    meta = read_metadata(model_bytes)
    runtime = resolve_runtime(params.runtime)
    board = board_info()
    throttled_before = board.throttled

    if params.delegate is None:
        # The first load of a model happens in a child process (see edgeq_device.model.validate); do it
        # before the clock starts so that init time is this process's own.
        check_loads_in_child(model_bytes, runtime, xnnpack=params.xnnpack)

    # Init: read + parse + create the interpreter + allocate tensors.
    mem_before = memory_status()
    t0 = time.perf_counter()
    runner = ModelRunner(path if path is not None else model_bytes, runtime=runtime,
                         threads=params.threads, xnnpack=params.xnnpack, delegate=params.delegate,
                         delegate_options=params.delegate_options, probe=False)  # probed above
    init_s = time.perf_counter() - t0
    mem_init = memory_status()

    choice = as_choice(runner.flat, preprocess, warn=params.data is not None)
    if params.data is not None:
        arrays = _data_inputs(runner, params.data, choice.preprocess, params.seed)
        inputs = f"image from {params.data}"
        preprocessing = choice.summary
    else:
        arrays = random_inputs(runner.input_details, choice.preprocess, params.seed)
        inputs = "random"
        preprocessing = random_preprocessing(runner.input_details, choice)
    runner.set_inputs(arrays)
    invoke = runner.interpreter.invoke

    if log:
        log(f"benchmarking {path or 'model'}: {params.warmup} warm-up runs, then at least "
            f"{params.runs} runs and {params.min_secs:g} s (at most {params.max_secs:g} s)")
    t0n = time.perf_counter_ns()
    runner.invoke()
    first_ns = time.perf_counter_ns() - t0n
    warm = None
    try:
        if params.warmup:
            warm_samples, _ = time_invocations(invoke, params.warmup, 0.0, params.max_secs)
            warm = LatencyStats.from_ns(warm_samples)
        samples, stopped_by = time_invocations(invoke, params.runs, params.min_secs, params.max_secs)
    except (ValueError, RuntimeError) as exc:
        raise InferenceError(f"the model failed running: {one_line(exc)}", argument="model",
                             fix="check the model with edgeq-device info, or convert it again") from exc
    latency = LatencyStats.from_ns(samples)

    mem_after = memory_status()
    model_rss = (mem_after.rss_kb - mem_before.rss_kb
                 if mem_after.rss_kb is not None and mem_before.rss_kb is not None else None)
    return BenchResult(
        model=path,
        model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        model_size_bytes=len(model_bytes),
        mode=meta.mode if meta is not None else None,
        runtime=runtime.name,
        runtime_version=runtime.version,
        delegate=params.delegate,
        threads=params.threads,
        xnnpack=params.xnnpack,
        inputs=inputs,
        params=params,
        init_ms=init_s * 1e3,
        interpreter_init_ms=runner.init_seconds * 1e3,
        first_inference_us=first_ns / 1e3,
        warmup=warm,
        latency=latency,
        stopped_by=stopped_by,
        memory=BenchMemory(rss_before_kb=mem_before.rss_kb, rss_after_init_kb=mem_init.rss_kb,
                           rss_after_kb=mem_after.rss_kb, peak_rss_kb=mem_after.peak_rss_kb,
                           model_rss_kb=model_rss),
        board=board,
        temperature_before_c=board.temperature_c,
        temperature_after_c=soc_temperature(),
        throttled_before=throttled_before,
        throttled_after=throttling(),
        started=started,
        edgeq_device_version=__version__,
        samples_us=tuple(float(v) / 1e3 for v in samples) if params.keep_samples else None,
        preprocessing=preprocessing,
        preprocess_sources=dict(choice.sources) if params.data is not None else None,
    )


def _ms(us: float) -> str:
    return f"{us / 1000:.3f} ms" if us >= 1000 else f"{us:.1f} µs"


def format_bench(r: BenchResult) -> str:
    """The human-readable text ``edgeq-device bench`` prints."""
    lat = r.latency
    threads = "default" if r.threads is None else str(r.threads)
    accel = r.delegate or ("XNNPACK" if r.xnnpack else "builtin kernels")
    lines = [
        f"model        {r.model or '<bytes>'} ({r.model_size_bytes / 1024:.1f} KiB)",
        f"runtime      {r.runtime} {r.runtime_version}, {accel}, threads {threads}",
        f"board        {r.board.name}, {r.board.cores} cores"
        + (f", governor {r.board.governor}" if r.board.governor else ""),
        f"inputs       {r.inputs}",
        *([f"preprocessing  {r.preprocessing}"] if r.preprocessing else []),
        f"init         {r.init_ms:.2f} ms (interpreter {r.interpreter_init_ms:.2f} ms)",
        f"first run    {_ms(r.first_inference_us)}",
    ]
    if r.warmup is not None:
        lines.append(f"warm-up      {r.warmup.count} runs, mean {_ms(r.warmup.mean_us)}")
    lines += [
        f"timed        {lat.count} runs in {lat.total_s:.2f} s (stopped by {r.stopped_by})",
        f"latency      mean {_ms(lat.mean_us)}  std {_ms(lat.std_us)}",
        f"             min {_ms(lat.min_us)}  p50 {_ms(lat.p50_us)}  p90 {_ms(lat.p90_us)}  "
        f"p99 {_ms(lat.p99_us)}  max {_ms(lat.max_us)}",
    ]
    m = r.memory
    if m.peak_rss_kb is not None:
        added = f", model added {m.model_rss_kb / 1024:.1f} MiB" if m.model_rss_kb is not None else ""
        lines.append(f"memory       peak RSS {m.peak_rss_kb / 1024:.1f} MiB{added}")
    if r.temperature_before_c is not None:
        lines.append(f"temperature  {r.temperature_before_c:.1f} °C -> {r.temperature_after_c} °C")
    if r.throttled_after is not None:
        lines.append(f"throttled    {r.throttled_before} -> {r.throttled_after}")
    return "\n".join(lines)
