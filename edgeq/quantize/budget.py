"""The accuracy budget: the smallest conversion whose top-1 accuracy stays within a drop.

``budget_search(model, max_drop=0.5, calibration=..., evaluation=...)`` measures the
float32 ``.tflite``'s top-1 accuracy on the evaluation data, then tries, in order,
stopping at the first candidate whose drop is at most ``max_drop`` points:

1. full ``int8``;
2. ``int8`` keeping the worst layers in float, a few more each time (1, 2, 4 by
   default). The worst layers come from the quantization debugger
   (:mod:`edgeq.debug`, lowest SQNR first). Keeping a layer in float keeps its output
   tensor in float: the layer and the ops reading that tensor run in float, so the
   damaged tensor is never re-quantized;
3. ``int16x8`` (int16 activations, int8 weights);
4. ``float16``.

The candidates come in order of size, so the first within budget is the smallest
of those tried. Every candidate tried is reported with its size, latency on this
machine, accuracy and drop, and why the search chose what it chose. When none is
within budget, the most accurate is returned and the report says so.

``edgeq.convert(model, "int8", max_drop=..., evaluation=...)`` runs this search and
returns the chosen :class:`~edgeq.convert.ConversionResult` with the report as ``.budget``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeq_device.evaluate import output_classes
from edgeq_device.flatbuffer import read_flat_model
from edgeq_device.preprocess import Preprocess

from edgeq.errors import CalibrationError, DataError, EdgeqError, InvalidArgumentError
from edgeq.inputs.data import DataSource, ImageFolder, as_source, check_label_range
from edgeq.inputs.models import LoadedModel, load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import _console, progress_enabled
from edgeq.quantize.converter import (
    ConversionResult,
    IOType,
    Mode,
    _details,
    _enum_arg,
    _warnings_once,
    convert,
    default_preprocess,
    float_ops,
)
from edgeq.quantize.converter import embed_metadata as _embed

__all__ = ["BudgetReport", "Candidate", "budget_search", "top1_accuracy"]

DEFAULT_FLOAT_STEPS = (1, 2, 4)


@dataclass(frozen=True)
class Candidate:
    """One conversion the budget search tried.

    Attributes:
        name: ``int8``, ``int8+float(k)``, ``int16x8`` or ``float16``.
        mode: the conversion mode.
        float_layers: the worst layers, kept in float (int8 with float layers only).
        float_readers: the layers reading their outputs, kept in float with them so the
            damaged tensors are never re-quantized.
        float_nodes: every op (by output tensor) kept in float.
        size_bytes: the ``.tflite`` size (None if the conversion failed).
        latency_ms: median latency of one inference on this machine.
        accuracy: top-1 accuracy (0..1) on the evaluation data.
        drop: accuracy lost against the float32 baseline, in percentage points.
        within_budget: whether ``drop <= max_drop``.
        error: why the conversion failed, if it did.
        result: the conversion itself (not in ``to_dict``).
    """

    name: str
    mode: str
    float_layers: tuple[str, ...] = ()
    float_readers: tuple[str, ...] = ()
    float_nodes: tuple[str, ...] = ()
    size_bytes: int | None = None
    latency_ms: float | None = None
    accuracy: float | None = None
    drop: float | None = None
    within_budget: bool = False
    error: str | None = None
    result: ConversionResult | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "float_layers": list(self.float_layers),
                "float_readers": list(self.float_readers), "float_nodes": list(self.float_nodes), "size_bytes": self.size_bytes,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 4),
                "accuracy": self.accuracy, "drop_points": None if self.drop is None else round(self.drop, 4),
                "within_budget": self.within_budget, "error": self.error}


@dataclass(frozen=True)
class BudgetReport:
    """What the accuracy budget search tried and what it chose.

    Attributes:
        model: the model's name.
        max_drop: the budget, in top-1 percentage points.
        baseline_accuracy: top-1 (0..1) of the float32 ``.tflite`` on the evaluation data.
        baseline_size_bytes, baseline_latency_ms: the float32 model's size and latency.
        evaluation: what the accuracy was measured on, and ``samples`` how many.
        candidates: every candidate tried, in order.
        chosen: index of the chosen candidate in ``candidates``.
        reason: why it was chosen.
    """

    model: str
    max_drop: float
    baseline_accuracy: float
    baseline_size_bytes: int
    baseline_latency_ms: float
    evaluation: str
    samples: int
    candidates: tuple[Candidate, ...]
    chosen: int
    reason: str

    @property
    def choice(self) -> Candidate:
        """The chosen candidate."""
        return self.candidates[self.chosen]

    @property
    def within_budget(self) -> bool:
        """Whether the chosen candidate meets the budget."""
        return self.choice.within_budget

    def table(self) -> str:
        """The candidates as a text table, followed by the reason for the choice."""
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"accuracy budget for {self.model}: top-1 drop <= {self.max_drop:g} points "
                        f"({self.samples} samples of {self.evaluation})", title_justify="left")
        for col in ("candidate", "size KiB", "latency ms", "top-1 %", "drop pts", "budget", "kept in float"):
            t.add_column(col, justify="left" if col in ("candidate", "budget", "kept in float") else "right",
                         overflow="fold")
        t.add_row("float32 (baseline)", f"{self.baseline_size_bytes / 1024:.1f}",
                  f"{self.baseline_latency_ms:.3f}", f"{self.baseline_accuracy * 100:.2f}", "-", "-", "")
        for i, c in enumerate(self.candidates):
            mark = "chosen" if i == self.chosen else ("ok" if c.within_budget else ("failed" if c.error else "over"))
            t.add_row(c.name, "-" if c.size_bytes is None else f"{c.size_bytes / 1024:.1f}",
                      "-" if c.latency_ms is None else f"{c.latency_ms:.3f}",
                      "-" if c.accuracy is None else f"{c.accuracy * 100:.2f}",
                      "-" if c.drop is None else f"{c.drop:+.2f}", mark,
                      c.error[:80] if c.error else _float_text(c))
        buf = io.StringIO()
        Console(file=buf, width=140, color_system=None, force_jupyter=False, force_terminal=False).print(t)
        buf.write(self.reason + "\n")
        return buf.getvalue()

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"schema": "edgeq/budget/1", "model": self.model, "max_drop_points": self.max_drop,
                "baseline": {"mode": "float32", "accuracy": self.baseline_accuracy,
                             "size_bytes": self.baseline_size_bytes,
                             "latency_ms": round(self.baseline_latency_ms, 4)},
                "evaluation": self.evaluation, "samples": self.samples,
                "candidates": [c.to_dict() for c in self.candidates], "chosen": self.choice.name,
                "within_budget": self.within_budget, "reason": self.reason}


def _float_text(c: Candidate) -> str:
    text = ", ".join(c.float_layers)
    if c.float_readers:
        text += f" (+ read by {', '.join(c.float_readers)})"
    return text


# --- evaluation ---------------------------------------------------------------------------------

class _EvalData:
    """The labeled evaluation data, read once: an image folder (streamed through the shared
    ``edgeq_device.evaluate.predict`` loop) or arrays held in memory."""

    def __init__(self, source: DataSource, loaded: LoadedModel, limit: int | None, seed: int,
                 outputs: int) -> None:
        if not source.has_labels:
            raise DataError("evaluation data needs labels", argument="evaluation", received=source.description,
                            fix="give an image folder with one subfolder per class, or (x, y) arrays")
        self.description = source.description
        self.listing = None
        self.preprocess: Preprocess | None = None
        if isinstance(source, ImageFolder):
            listing = source.listing.fit_outputs(outputs, "evaluation")
            self.listing = listing.sample(limit, seed) if limit is not None else listing
            self.preprocess = source.preprocess
            self.count = len(self.listing)
            return
        xs, ys = [], []
        names = [s.name for s in loaded.inputs]
        for sample in source.samples(limit=limit, seed=seed):
            x = sample.inputs
            if isinstance(x, dict):
                x = [x[n] for n in names]
            xs.append(x)
            ys.append(sample.label)
        if not xs:
            raise DataError("the evaluation source gave no sample", argument="evaluation",
                            received=source.description, fix="give a source with labeled samples")
        self.x = [np.stack([np.asarray(x[i]) for x in xs]).astype(np.float32) for i in range(len(names))] \
            if isinstance(xs[0], list) else [np.stack([np.asarray(x) for x in xs]).astype(np.float32)]
        self.y = np.asarray(ys, np.int64)
        self.count = len(self.y)
        check_label_range(self.y, outputs, "evaluation", source.description)

    def outputs(self, model_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
        if self.listing is not None:
            from edgeq_device.evaluate import predict

            assert self.preprocess is not None
            out, labels = predict(model_bytes, self.listing, self.preprocess)
            assert labels is not None
            return out, labels
        from edgeq_device.runtime import ModelRunner

        runner = ModelRunner(model_bytes)
        dynamic = any(int(s) < 0 for d in runner.input_details
                      for s in d.get("shape_signature", d["shape"])[:1])
        step = 64 if dynamic else 1
        outs = []
        for i in range(0, self.count, step):
            batch = [x[i:i + step] for x in self.x]
            outs.append(np.asarray(runner.run(batch)[0]).reshape(len(batch[0]), -1))
        return np.concatenate(outs), self.y

    def top1(self, model_bytes: bytes) -> float:
        out, y = self.outputs(model_bytes)
        return float((out.argmax(axis=1) == y).mean()) if len(y) else 0.0


def top1_accuracy(model: bytes, evaluation: Any, *, source_model: Any = None, preprocess: Preprocess | None = None,
                  limit: int | None = None, seed: int = 0) -> float:
    """Top-1 accuracy (0..1) of ``.tflite`` bytes on labeled data (an image folder, ``(x, y)`` arrays...).

    An image folder's class folders are matched to the model's metadata labels by name, else
    numbered as :mod:`edgeq_device.images` says.

    ``source_model`` (the Keras model) tells input names and the default preprocessing;
    without it, the ``.tflite``'s own input shape does.
    """
    loaded = load_model(source_model) if source_model is not None else None
    if preprocess is None and loaded is not None and len(loaded.inputs) == 1:
        preprocess = default_preprocess(loaded.inputs[0])
    if preprocess is None and loaded is None:
        from edgeq_device.evaluate import model_preprocess

        preprocess = model_preprocess(model)
    from edgeq_device.metadata import read_metadata

    meta = read_metadata(model)
    src = as_source(evaluation, preprocess, argument="evaluation", labels=meta.labels if meta is not None else None)
    if loaded is None:
        from edgeq.inputs.models import InputSpec

        loaded = LoadedModel("tflite", None, "model", [InputSpec("input", (None,))], 1)
    return _EvalData(src, loaded, limit, seed, output_classes(model)).top1(model)


def _latency_ms(model_bytes: bytes) -> float:
    """Median latency of one inference (batch 1, random input) on this machine, in milliseconds."""
    from edgeq_device.bench import LatencyStats, random_inputs, time_invocations
    from edgeq_device.runtime import ModelRunner

    runner = ModelRunner(model_bytes)
    runner.set_inputs(random_inputs(runner.input_details, seed=0))
    for _ in range(3):
        runner.invoke()
    samples, _ = time_invocations(runner.invoke, runs=20, min_secs=0.05, max_secs=1.0)
    return LatencyStats.from_ns(samples).p50_us / 1000.0


# --- the search ---------------------------------------------------------------------------------

def _from_bytes(raw: bytes, base: ConversionResult, io_: IOType, float_nodes: Sequence[str],
                float_layers: Sequence[str], seconds: float, samples: int) -> ConversionResult:
    meta = dataclasses.replace(base.metadata, mode=Mode.INT8.value, io=io_.value,
                               extra={**base.metadata.extra, "float_nodes": list(float_nodes),
                                      "float_layers": list(float_layers), "calibration_samples": samples})
    data = _embed(raw, meta)
    flat = read_flat_model(data)
    return ConversionResult(
        mode=Mode.INT8, io=io_, model_bytes=data, source_name=base.source_name,
        inputs=_details(flat, "inputs"), outputs=_details(flat, "outputs"), conversion_seconds=seconds,
        calibration_samples=samples, float_ops=float_ops(flat, Mode.INT8), op_counts=flat.op_counts(),
        metadata=meta)


def _say(show: bool, text: str) -> None:
    if show:
        _console.print(text, highlight=False, soft_wrap=True)


@quiet_native_logs()
@_warnings_once
def budget_search(
    model: Any,
    *,
    max_drop: float,
    calibration: Any,
    evaluation: Any,
    samples: int = 200,
    seed: int = 0,
    io: str | IOType = "float",
    batch_size: int | None = None,
    preprocess: Preprocess | None = None,
    labels: Sequence[str] | None = None,
    allow_float_fallback: bool = False,
    eval_samples: int | None = None,
    float_steps: Sequence[int] = DEFAULT_FLOAT_STEPS,
    show_progress: bool | None = None,
) -> ConversionResult:
    """Convert ``model`` to the first candidate (int8, int8 with float layers, int16x8, float16)
    whose top-1 accuracy drop is at most ``max_drop`` points; the report is attached as ``.budget``.

    Args:
        model: a Keras model, a model file or SavedModel folder.
        max_drop: the budget: top-1 accuracy points that may be lost against the float32 ``.tflite``.
        calibration: calibration data, as for ``convert``.
        evaluation: labeled data the accuracy is measured on (an image folder with class
            subfolders, ``(x, y)`` arrays, a ``.npz`` with ``x``/``y``, a ``tf.data.Dataset`` of ``(x, y)``).
        samples, seed, batch_size, preprocess, labels, allow_float_fallback: as for ``convert``.
        io: I/O type of the int8 candidates (``float`` or ``int8``); others keep float I/O.
        eval_samples: evaluate on a seeded subset of this many samples (default: all).
        float_steps: how many of the worst layers to keep in float, one candidate per count.
        show_progress: progress on stderr (default: on unless ``EDGEQ_PROGRESS=0``).

    Raises:
        InvalidArgumentError: a bad budget or option; DataError: unlabeled evaluation data;
        CalibrationError (NonFiniteCalibrationError: a sample with NaN or Inf) stops the search;
        and what ``convert`` raises for the baseline.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) \
            or max_drop < 0:
        raise InvalidArgumentError("must be a number of top-1 points, 0 or more", argument="max_drop",
                                   received=max_drop, fix="give e.g. max_drop=0.5 (half a point)")
    if evaluation is None:
        raise InvalidArgumentError("the accuracy budget needs labeled evaluation data", argument="evaluation",
                                   received=None, fix="pass evaluation= an image folder with class subfolders "
                                                      "or (x, y) arrays (--eval at the CLI)")
    if calibration is None:
        raise InvalidArgumentError("the accuracy budget needs calibration data", argument="calibration",
                                   received=None, fix="pass calibration= an image folder or arrays (--calib)")
    io_ = _enum_arg(IOType, io, "io")
    if io_ not in (IOType.FLOAT, IOType.INT8):
        raise InvalidArgumentError("the budget search converts int8 candidates with float or int8 I/O",
                                   argument="io", received=io, fix="use io='float' or io='int8'")
    steps = sorted({int(k) for k in float_steps if int(k) > 0})
    show = progress_enabled(show_progress)
    loaded = load_model(model)
    if preprocess is None and len(loaded.inputs) == 1:
        preprocess = default_preprocess(loaded.inputs[0])
    calib = as_source(calibration, preprocess)
    # The float32 baseline settles the labels (given, or the calibration folder's classes, one per
    # output); the evaluation folder's class folders are then matched to them by name.
    base = convert(loaded, Mode.FLOAT32, calibration=calib, batch_size=batch_size, preprocess=preprocess,
                   labels=labels, show_progress=show_progress)
    labels = base.metadata.labels
    common: dict[str, Any] = dict(preprocess=preprocess, labels=labels or (), show_progress=show_progress)
    eval_src = as_source(evaluation, preprocess, argument="evaluation", labels=labels)
    data = _EvalData(eval_src, loaded, eval_samples, seed, output_classes(base.model_bytes))
    base_acc = data.top1(base.model_bytes)
    base_lat = _latency_ms(base.model_bytes)
    _say(show, f"budget: float32 top-1 {base_acc * 100:.2f}% on {data.count} samples; "
               f"allowed drop {max_drop:g} points")
    tried: list[Candidate] = []

    def measure(name: str, mode: Mode, result: ConversionResult, float_layers: Sequence[str] = (),
                float_readers: Sequence[str] = (), float_nodes: Sequence[str] = ()) -> Candidate:
        acc = data.top1(result.model_bytes)
        drop = (base_acc - acc) * 100.0
        cand = Candidate(name, mode.value, tuple(float_layers), tuple(float_readers), tuple(float_nodes),
                         result.size_bytes,
                         _latency_ms(result.model_bytes), acc, drop, drop <= max_drop + 1e-9,
                         None, result)
        tried.append(cand)
        _say(show, f"budget: {name}: top-1 {acc * 100:.2f}% (drop {drop:+.2f} points), "
                   f"{result.size_bytes / 1024:.1f} KiB -> {'within budget' if cand.within_budget else 'over'}")
        return cand

    def failed(name: str, mode: Mode, exc: Exception) -> None:
        tried.append(Candidate(name, mode.value, error=str(exc).splitlines()[0][:300]))
        _say(show, f"budget: {name}: failed ({str(exc).splitlines()[0][:160]})")

    done = False
    int8_result: ConversionResult | None = None
    try:
        int8_result = convert(loaded, Mode.INT8, calibration=calib, samples=samples, seed=seed, io=io_,
                              batch_size=batch_size, allow_float_fallback=allow_float_fallback, **common)
        done = measure("int8", Mode.INT8, int8_result).within_budget
    except CalibrationError:  # bad calibration data is the user's to fix, not a candidate's failure
        raise
    except EdgeqError as exc:
        failed("int8", Mode.INT8, exc)

    if not done and steps:
        done = _float_layer_candidates(loaded, calib, samples, seed, batch_size, preprocess, io_,
                                       int8_result or base, steps, measure, failed, show_progress)
    if not done:
        try:
            done = measure("int16x8", Mode.INT16X8, convert(
                loaded, Mode.INT16X8, calibration=calib, samples=samples, seed=seed, batch_size=batch_size,
                allow_float_fallback=allow_float_fallback, **common)).within_budget
        except CalibrationError:
            raise
        except EdgeqError as exc:
            failed("int16x8", Mode.INT16X8, exc)
    if not done:
        try:
            measure("float16", Mode.FLOAT16, convert(loaded, Mode.FLOAT16, batch_size=batch_size, **common))
        except EdgeqError as exc:
            failed("float16", Mode.FLOAT16, exc)

    ok = [i for i, c in enumerate(tried) if c.within_budget]
    measured = [i for i, c in enumerate(tried) if c.accuracy is not None]
    if ok:
        chosen = min(ok, key=lambda i: (tried[i].size_bytes or 0, i))
        c = tried[chosen]
        over = [t.name for t in tried[:chosen] if t.error is None and not t.within_budget]
        why = f"; {', '.join(over)} lost more than {max_drop:g} points" if over else ""
        reason = (f"chose {c.name}: the smallest candidate within the budget ({c.drop:+.2f} points <= "
                  f"{max_drop:g}), {c.size_bytes / 1024:.1f} KiB{why}")  # type: ignore[operator]
    elif measured:
        chosen = max(measured, key=lambda i: (tried[i].accuracy or 0.0, -(tried[i].size_bytes or 0)))
        c = tried[chosen]
        reason = (f"no candidate is within {max_drop:g} points; chose the most accurate, {c.name} "
                  f"({c.drop:+.2f} points)")
    else:
        raise _all_failed(tried)
    chosen_result = tried[chosen].result
    assert chosen_result is not None
    report = BudgetReport(loaded.name, float(max_drop), base_acc, base.size_bytes, base_lat, data.description,
                          data.count, tuple(tried), chosen, reason)
    _say(show, f"budget: {reason}")
    return dataclasses.replace(chosen_result, budget=report)


def _all_failed(tried: Sequence[Candidate]) -> EdgeqError:
    """The error raised when no candidate could even be converted."""
    from edgeq.errors import ConversionError

    return ConversionError("every candidate conversion failed: " + "; ".join(
        f"{c.name}: {c.error}" for c in tried), argument="model",
        fix="check the model converts with edgeq convert --mode float16")


def _float_layer_candidates(loaded: LoadedModel, calib: DataSource, samples: int, seed: int,
                            batch_size: int | None, preprocess: Preprocess | None, io_: IOType,
                            base: ConversionResult, steps: Sequence[int], measure: Any, failed: Any,
                            show_progress: bool | None) -> bool:
    """Try int8 with the worst 1, 2, 4... layers in float; True once one is within budget."""
    from edgeq.quantize.layer_error import QuantDebugSession

    start = time.perf_counter()
    try:
        session = QuantDebugSession(loaded, calib, samples=samples, seed=seed, preprocess=preprocess,
                                    batch_size=batch_size, show_progress=show_progress)
        report = session.report()
    except CalibrationError:
        raise
    except EdgeqError as exc:
        failed("int8+float layers", Mode.INT8, exc)
        return False
    setup = time.perf_counter() - start
    ranked = [r for r in report.layers if r.sqnr_db < 120.0]
    seen: set[frozenset[str]] = set()
    for k in steps:
        worst = ranked[:k]
        if not worst:
            break
        names = [r.name for r in worst]
        readers = [n for n in session.consumers(names) if n not in names]
        nodes = tuple(dict.fromkeys([*names, *readers]))
        if frozenset(nodes) in seen:
            continue
        seen.add(frozenset(nodes))
        layers = tuple(dict.fromkeys(r.layer if r.layer != "-" else r.op for r in worst))
        reader_layers = tuple(dict.fromkeys(session.layer_of(n) for n in readers))
        name = f"int8+float({len(worst)})"
        t0 = time.perf_counter()
        try:
            raw = session.quantized_model(nodes, fully_quantize=io_ is IOType.INT8)
            result = _from_bytes(raw, base, io_, nodes, layers, setup + time.perf_counter() - t0,
                                 session.samples)
        except (EdgeqError, ValueError, RuntimeError) as exc:
            failed(name, Mode.INT8, exc)
            continue
        if measure(name, Mode.INT8, result, layers, reader_layers, nodes).within_budget:
            return True
        if len(worst) < k:
            break
    return False
