"""The accuracy budget: the smallest conversion whose top-1 accuracy stays within a drop.

``budget_search(model, max_drop=0.5, calibration=..., evaluation=...)`` measures the
float32 ``.tflite``'s top-1 accuracy on the evaluation data, then tries, in order,
stopping at the first candidate whose drop is at most ``max_drop`` points:

1. full ``int8``;
1b. with training data (``qat_step``, given by the converter, which sits above both this module and
   :mod:`edgeq.quantize.qat`): ``int8+qat``, int8 after a couple of epochs of quantization-aware
   fine-tuning. It keeps int8's size and speed, so it is tried before anything that costs either;
   the report's reason names the training it took;
2. ``int8`` with the worst layers' activations at 16 bits (a16w8), a few more each time
   (1, 2, 4 by default; :mod:`edgeq.quantize.precision.mixed`): the layer and the ops reading its
   output run int16 kernels (reference ones, slower: the latency column shows the cost),
   the file stays about the int8 size;
3. ``int8`` keeping the worst layers in float, a few more each time (1, 2, 4 by
   default). The worst layers come from the quantization debugger
   (:mod:`edgeq.quantize.layer_error`, lowest SQNR first). Keeping a layer in float keeps its output
   tensor in float: the layer and the ops reading that tensor run in float, so the
   damaged tensor is never re-quantized;
4. ``int16x8`` (int16 activations, int8 weights);
5. ``float16``.

The candidates come in order of size, so the first within budget is the smallest
of those tried. Every candidate tried is reported with its size, latency on this
machine, accuracy and drop, its fidelity to the float32 model (arg-max agreement and
output SQNR on the evaluation data), and why the search chose what it chose. When none is
within budget, the most accurate is returned and the report says so.

``edgeq.convert(model, "int8", max_drop=..., evaluation=...)`` runs this search and
returns the chosen :class:`~edgeq.quantize.result.ConversionResult` with the report as ``.budget``
(:mod:`edgeq.quantize.precision.budget_report`); accuracy and latency are measured by
:mod:`edgeq.quantize.precision.accuracy`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgeq_device.model.preprocess import Preprocess
from edgeq_device.tasks.evaluation import output_classes

from edgeq.deprecation import renamed_arguments
from edgeq.errors import CalibrationError, ConversionError, DataError, EdgeqError, InvalidArgumentError
from edgeq.inputs.data import as_source
from edgeq.inputs.models import load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import _console, progress_enabled
from edgeq.quantize.calibration import default_preprocess, warnings_once
from edgeq.quantize.conversion import convert_mode
from edgeq.quantize.modes import IOType, Mode, enum_arg
from edgeq.quantize.precision.accuracy import EvalData, latency_ms, top1_accuracy
from edgeq.quantize.precision.budget_report import BudgetReport, Candidate
from edgeq.quantize.precision.budget_steps import SharedDebugSession, a16_candidates, fidelity
from edgeq.quantize.result import ConversionResult, int8_variant

__all__ = ["DEFAULT_A16_STEPS", "DEFAULT_FLOAT_STEPS", "BudgetReport", "Candidate", "QATStep", "budget_search",
           "top1_accuracy"]

QATStep = Callable[[Any], "tuple[ConversionResult, str]"]
"""The budget's training step: given the calibration source, the int8 result of quantization-aware
fine-tuning and a phrase naming the training it took (e.g. ``2 epochs of QAT on 1000 samples, 9 s``)."""

DEFAULT_FLOAT_STEPS = (1, 2, 4)
DEFAULT_A16_STEPS = (1, 2, 4, 8)
# 16-bit activations keep int8 weights, so even eight such layers stay near int8's size, where each
# layer kept in float grows the file: the search tries them further before it spends float layers.


def _from_bytes(raw: bytes, base: ConversionResult, io_: IOType, float_nodes: Sequence[str],
                float_layers: Sequence[str], seconds: float, samples: int) -> ConversionResult:
    return int8_variant(base, raw, io_, {"float_nodes": list(float_nodes), "float_layers": list(float_layers)},
                        seconds, samples)


def _say(show: bool, text: str) -> None:
    if show:
        _console.print(text, highlight=False, soft_wrap=True)


@renamed_arguments(show_progress="progress")
@quiet_native_logs()
@warnings_once
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
    progress: bool | None = None,
    a16_steps: Sequence[int] = DEFAULT_A16_STEPS,
    max_slowdown: float | None = None,
    max_latency_ms: float | None = None,
    qat_step: QATStep | None = None,
) -> ConversionResult:
    """Convert ``model`` to the first candidate (int8, int8 with 16-bit layers, int8 with float layers,
    int16x8, float16)
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
        a16_steps: how many of the worst layers to give 16-bit activations, one candidate per count.
        progress: progress on stderr (default: on unless ``EDGEQ_PROGRESS=0``).
        max_slowdown: a candidate must also run within this many times int8's latency, measured
            here (16-bit kernels are reference ones: several times slower).
        max_latency_ms: a candidate must also run one inference within this many milliseconds here.
        qat_step: with training data, the step that fine-tunes with simulated int8 and exports int8
            (:data:`QATStep`); tried right after int8 (``int8+qat``). None: not tried.

    Within the constraints the smallest candidate is chosen, then the fastest; the report lists
    the Pareto set (no candidate better on drop, size and latency together).

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
    for arg, value in (("max_slowdown", max_slowdown), ("max_latency_ms", max_latency_ms)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise InvalidArgumentError("must be a positive number", argument=arg, received=value,
                                       fix="give e.g. max_slowdown=1.2 (times int8's latency) or max_latency_ms=5")
    io_ = enum_arg(IOType, io, "io")
    if io_ not in (IOType.FLOAT, IOType.INT8):
        raise InvalidArgumentError("the budget search converts int8 candidates with float or int8 I/O",
                                   argument="io", received=io, fix="use io='float' or io='int8'")
    steps = sorted({int(k) for k in float_steps if int(k) > 0})
    a16 = sorted({int(k) for k in a16_steps if int(k) > 0})
    show = progress_enabled(progress)
    loaded = load_model(model)
    if preprocess is None and len(loaded.inputs) == 1:
        preprocess = default_preprocess(loaded.inputs[0])
    calib = as_source(calibration, preprocess)
    # The float32 baseline settles the labels (given, or the calibration folder's classes, one per
    # output); the evaluation folder's class folders are then matched to them by name.
    base = convert_mode(loaded, Mode.FLOAT32, calibration=calib, batch_size=batch_size, preprocess=preprocess,
                   labels=labels, progress=progress)
    labels = base.metadata.labels
    common: dict[str, Any] = dict(preprocess=preprocess, labels=labels or (), progress=progress)
    eval_src = as_source(evaluation, preprocess, argument="evaluation", labels=labels)
    data = EvalData(eval_src, loaded, eval_samples, seed, output_classes(base.model_bytes))
    base_out, _ = data.outputs(base.model_bytes)
    base_acc = data.top1(base.model_bytes)
    base_lat = latency_ms(base.model_bytes)
    _say(show, f"budget: float32 top-1 {base_acc * 100:.2f}% on {data.count} samples; "
               f"allowed drop {max_drop:g} points")
    tried: list[Candidate] = []
    slow: list[str] = []  # within the drop, too slow

    def fast_enough(name: str, latency: float) -> bool:
        int8_lat = next((c.latency_ms for c in tried if c.name == "int8" and c.latency_ms), None)
        ok = (max_latency_ms is None or latency <= max_latency_ms) and (
            max_slowdown is None or int8_lat is None or latency <= max_slowdown * int8_lat)
        if not ok:
            slow.append(f"{name} ({latency / int8_lat:.1f}x int8's latency)" if int8_lat else
                        f"{name} ({latency:.2f} ms)")
        return ok

    def measure(name: str, mode: Mode, result: ConversionResult, float_layers: Sequence[str] = (),
                float_readers: Sequence[str] = (), float_nodes: Sequence[str] = ()) -> Candidate:
        out, y = data.outputs(result.model_bytes)
        acc = float((out.argmax(axis=1) == y).mean()) if len(y) else 0.0
        drop = (base_acc - acc) * 100.0
        agreement, sqnr = fidelity(base_out, out)
        extra = result.metadata.extra.get("a16") or {}
        lat = latency_ms(result.model_bytes)
        within = drop <= max_drop + 1e-9 and fast_enough(name, lat)
        cand = Candidate(name, mode.value, tuple(float_layers), tuple(float_readers), tuple(float_nodes),
                         result.size_bytes, lat, acc, drop, within,
                         None, result, tuple(result.metadata.extra.get("a16_layers") or ()),
                         tuple(extra.get("a16_nodes", ())), agreement, sqnr)
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
        int8_result = convert_mode(loaded, Mode.INT8, calibration=calib, samples=samples, seed=seed, io=io_,
                              batch_size=batch_size, allow_float_fallback=allow_float_fallback, **common)
        done = measure("int8", Mode.INT8, int8_result).within_budget
    except CalibrationError:  # bad calibration data is the user's to fix, not a candidate's failure
        raise
    except EdgeqError as exc:
        failed("int8", Mode.INT8, exc)

    trained = ""
    if not done and qat_step is not None:
        try:
            qat_result, trained = qat_step(calib)
            done = measure("int8+qat", Mode.INT8, qat_result).within_budget
        except (CalibrationError, DataError, InvalidArgumentError):  # the user's data or options to fix
            raise
        except EdgeqError as exc:
            failed("int8+qat", Mode.INT8, exc)
    sessions = SharedDebugSession(loaded, calib, samples, seed, preprocess, batch_size, progress, failed)
    if not done and a16:
        done = a16_candidates(sessions, base, io_, a16, measure, failed)
    if not done and steps:
        done = _float_layer_candidates(sessions, io_, int8_result or base, steps, measure, failed)
    if not done:
        try:
            done = measure("int16x8", Mode.INT16X8, convert_mode(
                loaded, Mode.INT16X8, calibration=calib, samples=samples, seed=seed, batch_size=batch_size,
                allow_float_fallback=allow_float_fallback, **common)).within_budget
        except CalibrationError:
            raise
        except EdgeqError as exc:
            failed("int16x8", Mode.INT16X8, exc)
    if not done:
        try:
            measure("float16", Mode.FLOAT16, convert_mode(loaded, Mode.FLOAT16, batch_size=batch_size, **common))
        except EdgeqError as exc:
            failed("float16", Mode.FLOAT16, exc)

    ok = [i for i, c in enumerate(tried) if c.within_budget]
    measured = [i for i, c in enumerate(tried) if c.accuracy is not None]
    if ok:
        chosen = min(ok, key=lambda i: (tried[i].size_bytes or 0, tried[i].latency_ms or 0.0, i))
        c = tried[chosen]
        too_slow = {s.split(" (")[0] for s in slow}
        over = [t.name for t in tried[:chosen] if t.error is None and not t.within_budget and t.name not in too_slow]
        why = f"; {', '.join(over)} lost more than {max_drop:g} points" if over else ""
        why += f"; too slow: {', '.join(slow)}" if slow else ""
        limits = "".join([f", <= {max_slowdown:g}x int8's latency" if max_slowdown else "",
                          f", <= {max_latency_ms:g} ms" if max_latency_ms else ""])
        reason = (f"chose {c.name}: the smallest candidate within the budget ({c.drop:+.2f} points <= "
                  f"{max_drop:g}{limits}), {c.size_bytes / 1024:.1f} KiB{why}")  # type: ignore[operator]
        first = tried[0]
        if c.name == "int8+qat" and trained:
            reason += f"; traded {trained} for int8's size and speed"
        if c.a16_layers and first.latency_ms and c.latency_ms:  # int16 kernels are reference ones
            reason += f"; its 16-bit layers make it {c.latency_ms / first.latency_ms:.1f}x int8's latency here"
    elif measured:
        chosen = max(measured, key=lambda i: (tried[i].accuracy or 0.0, -(tried[i].size_bytes or 0)))
        c = tried[chosen]
        reason = (f"no candidate is within {max_drop:g} points" + (" at the latency asked" if slow else "")
                  + f"; chose the most accurate, {c.name} ({c.drop:+.2f} points)"
                  + (f"; too slow: {', '.join(slow)}" if slow else ""))
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
    return ConversionError("every candidate conversion failed: " + "; ".join(
        f"{c.name}: {c.error}" for c in tried), argument="model",
        fix="check the model converts with edgeq convert --mode float16")


def _float_layer_candidates(sessions: SharedDebugSession, io_: IOType, base: ConversionResult, steps: Sequence[int],
                            measure: Any, failed: Any) -> bool:
    """Try int8 with the worst 1, 2, 4... layers in float; True once one is within budget."""
    got = sessions.get("int8+float layers")
    if got is None:
        return False
    session, report, setup = got
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
