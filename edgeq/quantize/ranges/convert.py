"""Chosen activation ranges for int8: calibrate, choose each tensor's range, quantize.

The route (TensorFlow 2.21's converter does int8 in two steps, and this module runs them apart):

1. :func:`calibrate_only`: ``TFLiteConverter`` with ``_experimental_calibrate_only`` returns the
   *calibrated* model: the float ``.tflite`` in which the calibrator has written each activation
   tensor's observed range into the flatbuffer's ``QuantizationParameters.min`` and ``.max``
   (one value each: per-tensor; no ``scale``/``zero_point`` yet).
2. Histograms: the calibrated model runs in LiteRT (``experimental_preserve_all_tensors``) over the
   calibration samples once more, one sample at a time, counting each of those tensors' values
   (:class:`~edgeq.quantize.ranges.histograms.TensorHistogram` over its min/max: memory flat in samples).
3. :func:`quantize_calibrated` (the one function that touches TF's quantizer) writes the chosen
   ranges into ``min``/``max`` and calls ``tensorflow.lite.python.convert.mlir_quantize``, as the
   converter's int8 path does (``_quantize`` with ``experimental_new_quantizer``): same per-channel
   options and I/O types, then the converter's read-only buffer de-duplication. ``mlir_quantize``
   imports ``min``/``max`` as each tensor's statistics (``quantfork.stats``) and derives the int8
   scale and zero point from them (the range widened to hold 0, the zero point nudged to an
   integer), except where an op fixes its output's scale (softmax, logistic, tanh) or makes
   operands share one (concatenation, reshape, pooling): those are kept at min/max here.

With ``minmax`` nothing is rewritten, and the result is the converter's int8 model (the same
operators, tensors, scales and weights; ``tests/edgeq/quantize/test_ranges.py`` checks it).
``auto`` holds out every fourth sample, calibrates on the rest, quantizes with every method (and
the percentile method at :data:`AUTO_PERCENTILE` too) and keeps the one whose model output has the
best SQNR against the float model on the held-out samples, of ``minmax`` and the methods better
than it on each of five interleaved parts of them
(:data:`~edgeq.quantize.ranges.result.FOLDS`): a total over a few dozen samples is ruled by the
two or three with the largest error, and a method ahead on the total alone can be behind on new
data (on the digits CNN, mse was ahead on the held-out total and behind on the test images).
``auto`` is never worse than minmax on the held-out samples.
"""

from __future__ import annotations

import contextlib
import io as _io
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import read_flat_model

from edgeq.errors import CalibrationError, ConversionError, EdgeqError, InvalidArgumentError
from edgeq.quantize.flatbuffer import read_model, write_model
from edgeq.quantize.modes import IOType, Mode
from edgeq.quantize.ranges.histograms import METHODS, TensorHistogram, choose_range
from edgeq.quantize.ranges.result import FOLDS, RANGES_METHODS, RangesChoice
from edgeq.quantize.tflite import run_converter

__all__ = ["AUTO_PERCENTILE", "HOLD_OUT_EVERY", "LiteRunner", "auto_candidates", "calibrate_only", "check_ranges",
           "choose_ranges", "collect_histograms", "convert_with_ranges", "model_facts", "output_sqnr", "sample_errors", "quantize_calibrated", "rewrite_ranges", "scan",
           "tensor_ranges"]

HOLD_OUT_EVERY = 4
"""``auto`` holds out every fourth calibration sample to compare the methods."""
AUTO_PERCENTILE = 99.999
"""``auto`` also tries the percentile method at this percentile: it clips a tail ten times thinner than
99.99 does, and on a ResNet-8 (batch norm, residual adds) it was the held-out winner that 99.99 was not
(+1.8 dB on test images against +1.1 dB for the next best)."""

# Ops whose int8 output range TFLite fixes (the quantizer ignores the statistics).
_FIXED_OUTPUT = {"SOFTMAX", "LOGISTIC", "TANH", "LOG_SOFTMAX"}
# Ops whose int8 kernels take their operands and results at one scale.
_SAME_SCALE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "MAX_POOL_2D", "AVERAGE_POOL_2D", "TRANSPOSE", "PAD",
               "PADV2", "GATHER", "SLICE", "STRIDED_SLICE", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "SPLIT",
               "SPLIT_V", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND", "TILE", "BROADCAST_TO",
               "RESIZE_NEAREST_NEIGHBOR", "MAXIMUM", "MINIMUM", "CONCATENATION", "PACK", "UNPACK"}
# Of those, the ones joining several tensors: their group keeps min/max (never shrunk).
_JOINING = {"CONCATENATION", "PACK", "UNPACK", "SPLIT", "SPLIT_V"}


def check_ranges(ranges: Any, percentile: Any, mode: Mode) -> str:
    """``ranges`` as a method name, checked with ``percentile`` against ``mode``.

    Raises:
        InvalidArgumentError: an unknown method, a percentile outside (0, 100], or a method other
            than minmax for a mode that does not quantize activations to int8.
    """
    name = str(getattr(ranges, "value", ranges)).lower()
    if name not in RANGES_METHODS:
        raise InvalidArgumentError("unknown activation ranges method", argument="ranges", received=ranges,
                                   fix=f"use one of: {', '.join(RANGES_METHODS)}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise InvalidArgumentError("a percentile must be in (0, 100]", argument="percentile", received=percentile,
                                   fix="give e.g. percentile=99.99 (--percentile 99.99)")
    if name != "minmax" and mode is not Mode.INT8:
        raise InvalidArgumentError(
            f"mode {mode.value!r} has no int8 activation ranges to choose", argument="ranges", received=name,
            fix="use mode='int8' (--mode int8) with ranges, or leave ranges='minmax'")
    return name


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(_io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def calibrate_only(converter: Any, failures: Sequence[EdgeqError] = ()) -> bytes:
    """The converter's calibrated float model (each activation's min/max in its flatbuffer)."""
    converter._experimental_calibrate_only = True  # the documented route above
    try:
        return run_converter(converter, Mode.INT8, False, failures)
    finally:
        converter._experimental_calibrate_only = False


def tensor_ranges(calibrated: bytes) -> dict[int, tuple[float, float]]:
    """``{tensor index: (min, max)}`` of the main subgraph's calibrated (per-tensor) activations."""
    model = read_model(calibrated)
    found = {}
    for i, t in enumerate(model.subgraphs[0].tensors):
        q = t.quantization
        if q is not None and q.min is not None and q.max is not None and len(q.min) == 1 and len(q.max) == 1:
            found[i] = (float(q.min[0]), float(q.max[0]))
    return found


def rewrite_ranges(calibrated: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """The calibrated model with ``ranges`` (``{tensor index: (min, max)}``) in its min/max."""
    if not ranges:
        return calibrated
    model = read_model(calibrated)
    tensors = model.subgraphs[0].tensors
    for i, (low, high) in ranges.items():
        tensors[i].quantization.min = np.array([low], np.float32)
        tensors[i].quantization.max = np.array([high], np.float32)
    return write_model(model)


def quantize_calibrated(calibrated: bytes, ranges: dict[int, tuple[float, float]], converter: Any,
                        io: IOType) -> bytes:
    """Write ``ranges`` into the calibrated model's min/max and quantize it as the converter would."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python import lite as tf_lite

    data = rewrite_ranges(calibrated, ranges)
    io_type = {IOType.FLOAT: tf.float32, IOType.INT8: tf.int8, IOType.UINT8: tf.uint8}[io]
    try:
        with _quiet():
            quantized = tf_convert.mlir_quantize(
                data, converter._experimental_disable_per_channel,
                input_data_type=io_type, output_data_type=io_type, enable_variable_quantization=False,
                disable_per_channel_for_dense_layers=(
                    converter._experimental_disable_per_channel_quantization_for_dense_layers))
            return bytes(tf_lite._deduplicate_readonly_buffers(quantized))
    except Exception as exc:  # the quantizer raises many kinds
        raise ConversionError(f"quantizing with chosen ranges failed: {str(exc).splitlines()[0][:300]}",
                              argument="ranges", fix="convert with ranges='minmax'") from exc


class LiteRunner:
    """A ``.tflite`` model in LiteRT fed dicts keyed by input name; with ``preserve`` every tensor stays
    readable after invoke (the calibrated model's histograms)."""

    def __init__(self, model: bytes, input_names: Sequence[str], preserve: bool = True) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - the host always has TF's copy
            from tensorflow.lite import Interpreter  # type: ignore[no-redef]
        with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": here it is the point
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = Interpreter(model_content=model, experimental_preserve_all_tensors=preserve)
        self.interpreter.allocate_tensors()
        details = self.interpreter.get_input_details()
        self.inputs = []
        for n, d in enumerate(details):
            match = [x for x in input_names if d["name"] in (f"serving_default_{x}:0", x)]
            self.inputs.append((d["index"], match[0] if match else input_names[n]))
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]

    def run(self, item: dict[str, np.ndarray]) -> list[np.ndarray]:
        for index, name in self.inputs:
            self.interpreter.set_tensor(index, item[name])
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.outputs]

    def tensor(self, index: int) -> np.ndarray:
        return self.interpreter.get_tensor(index)


def collect_histograms(calibrated: bytes, samples: Iterable[dict[str, np.ndarray]], input_names: Sequence[str],
                       minmax: dict[int, tuple[float, float]]) -> tuple[dict[int, TensorHistogram], int]:
    """One streamed pass: each calibrated tensor's histogram over its min/max, and the samples seen."""
    hists, seen, _, _ = scan(calibrated, lambda: iter(samples), input_names, minmax, hold_out=False)
    return hists, seen


def scan(calibrated: bytes, rep: Callable[[], Iterator[dict[str, np.ndarray]]], input_names: Sequence[str],
         minmax: dict[int, tuple[float, float]], hold_out: bool
         ) -> tuple[dict[int, TensorHistogram], int, list[dict[str, np.ndarray]], list[list[np.ndarray]]]:
    """One streamed pass of the calibrated (float) model over ``rep()``.

    Returns the histograms of the samples calibrated on and how many they were; with
    ``hold_out``, every :data:`HOLD_OUT_EVERY`-th sample is held out instead (not counted),
    and kept with the float model's outputs on it, so ``auto`` scores every method on them
    without reading the calibration data again.
    """
    runner = LiteRunner(calibrated, input_names)
    hists = {i: TensorHistogram(low, high) for i, (low, high) in minmax.items()}
    seen = 0
    held: list[dict[str, np.ndarray]] = []
    reference: list[list[np.ndarray]] = []
    for n, item in enumerate(rep()):
        outputs = runner.run(item)
        if hold_out and n % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1:
            held.append({k: np.array(v) for k, v in item.items()})  # a copy: a source may reuse its buffers
            reference.append([o.copy() for o in outputs])
            continue
        seen += 1
        for i, h in hists.items():
            h.add(runner.tensor(i))
    return hists, seen, held, reference


def _constraints(calibrated: bytes, minmax: dict[int, tuple[float, float]]) -> tuple[dict[int, str], list[set[int]]]:
    """Tensors kept at min/max (with why) and the groups of tensors that share one scale."""
    sg = read_flat_model(calibrated).main
    kept: dict[int, str] = {i: "model input" for i in sg.inputs if i in minmax}
    parent = {i: i for i in minmax}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    joined: set[int] = set()
    for op in sg.operators:
        if op.opcode in _FIXED_OUTPUT:
            kept.update({i: f"range fixed by {op.opcode}" for i in op.outputs if i in minmax})
        if op.opcode in _SAME_SCALE:
            members = [i for i in (*op.inputs, *op.outputs) if i in minmax]
            for m in members[1:]:
                parent[find(m)] = find(members[0])
            if op.opcode in _JOINING and members:
                joined.add(members[0])
    groups: dict[int, set[int]] = {}
    for i in minmax:
        groups.setdefault(find(i), set()).add(i)
    joined_roots = {find(i) for i in joined}
    for root in joined_roots:
        kept.update({i: "shares its scale with a concatenation" for i in groups[root] if i not in kept})
    return kept, [g for r, g in groups.items() if len(g) > 1 and r not in joined_roots]


def choose_ranges(calibrated: bytes, hists: dict[int, TensorHistogram], method: str, percentile: float,
                  facts: tuple[dict[int, str], list[set[int]], list[str]] | None = None
                  ) -> tuple[dict[int, tuple[float, float]], RangesChoice]:
    """The ranges ``method`` chooses for each tensor, constraints applied, and what was decided.

    ``facts`` is :func:`model_facts` of ``calibrated`` when the caller has it already.
    """
    minmax = {i: (h.low, h.high) for i, h in hists.items()}
    kept, groups, names = facts if facts is not None else model_facts(calibrated, minmax)
    constant = tuple(names[i] for i, h in hists.items() if h.constant)
    own = {i: (minmax[i] if i in kept or method == "minmax" else choose_range(h, method, percentile))
           for i, h in hists.items()}
    chosen = dict(own)
    for group in groups if method != "minmax" else ():  # one scale: the widest of the members' choices
        low = min(chosen[i][0] for i in group)
        high = max(chosen[i][1] for i in group)
        chosen.update({i: (low, high) for i in group if i not in kept})
    status = {names[i]: _status(chosen[i], own[i], minmax[i]) for i in hists}
    narrowed = sum(1 for v in status.values() if v == "narrowed")
    rewrite = {i: r for i, r in chosen.items() if r != minmax[i]}
    choice = RangesChoice(method=method, chosen=method, percentile=float(percentile), narrowed=narrowed,
                          kept=tuple(f"{names[i]}: {why}" for i, why in sorted(kept.items())),
                          constant=constant, widened=sum(1 for v in status.values() if v.startswith("widened")),
                          tensors=status)
    return rewrite, choice


def _status(chosen: tuple[float, float], own: tuple[float, float], minmax: tuple[float, float]) -> str:
    """What happened to one tensor's range: ``kept`` (its min/max), ``narrowed``, ``widened to a shared
    scale`` (a group's widest choice), or ``widened`` (beyond its min/max)."""
    if chosen == minmax:
        return "kept"
    if chosen != own:
        return "widened to a shared scale"
    if chosen[0] >= minmax[0] and chosen[1] <= minmax[1]:
        return "narrowed"
    return "widened"


def model_facts(calibrated: bytes, minmax: dict[int, tuple[float, float]]
                ) -> tuple[dict[int, str], list[set[int]], list[str]]:
    """What :func:`choose_ranges` needs of the model: tensors kept at min/max (with why), the
    groups sharing one scale, and every tensor's name."""
    kept, groups = _constraints(calibrated, minmax)
    return kept, groups, [t.name for t in read_flat_model(calibrated).main.tensors]


def sample_errors(reference: Sequence[list[np.ndarray]], model: bytes, samples: Iterable[dict[str, np.ndarray]],
                  input_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the energy of ``reference``'s outputs and of ``model``'s error against them."""
    runner = LiteRunner(model, input_names, preserve=False)
    signal, noise = [], []
    for ref, item in zip(reference, samples):
        s = e = 0.0
        for r, q in zip(ref, runner.run(item)):
            r64 = r.astype(np.float64)
            s += float(np.sum(np.square(r64)))
            e += float(np.sum(np.square(q.astype(np.float64) - r64)))
        signal.append(s)
        noise.append(e)
    return np.array(signal), np.array(noise)


def _db(signal: np.ndarray, noise: np.ndarray) -> float:
    total = float(noise.sum())
    return math.inf if total <= 0 else 10 * math.log10(max(float(signal.sum()), 1e-300) / total)


def output_sqnr(reference: Sequence[list[np.ndarray]], model: bytes, samples: Iterable[dict[str, np.ndarray]],
                input_names: Sequence[str]) -> float:
    """Output SQNR (dB) of ``model`` against ``reference`` outputs: total signal over total noise."""
    return _db(*sample_errors(reference, model, samples, input_names))


def _folds_won(errors: tuple[np.ndarray, np.ndarray], base: tuple[np.ndarray, np.ndarray]) -> int:
    """On how many of :data:`FOLDS` interleaved parts of the held-out samples ``errors`` beat ``base``."""
    signal, noise = errors
    return sum(_db(signal[k::FOLDS], noise[k::FOLDS]) > _db(signal[k::FOLDS], base[1][k::FOLDS])
               for k in range(FOLDS))


def _fit(rep: Callable[[], Iterator[dict[str, np.ndarray]]]) -> Callable[[], Iterator[Any]]:
    """``rep`` without the samples ``auto`` holds out."""
    def gen() -> Iterator[dict[str, np.ndarray]]:
        for n, item in enumerate(rep()):
            if n % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1:
                yield item
    return gen


def convert_with_ranges(converter: Any, rep: Callable[[], Iterator[dict[str, np.ndarray]]], method: str,
                        percentile: float, io: IOType, input_names: Sequence[str],
                        failures: Sequence[EdgeqError] = ()) -> tuple[bytes, RangesChoice]:
    """An int8 model of a converter configured for int8, with activation ranges chosen by ``method``.

    The calibration data is read twice, as for any method: by the converter's calibration and
    by the one pass (:func:`scan`) that collects histograms and, for ``auto``, keeps the held-out
    samples and the float model's outputs on them. ``auto`` then quantizes and scores each
    distinct set of ranges once (methods that choose the same ranges as another, or nothing
    but minmax's, share its model and score).

    Raises:
        CalibrationError: ``auto`` with fewer than 4 samples (nothing to hold out).
        ConversionError, QuantizationError: as the converter.
    """
    auto = method == "auto"
    converter.representative_dataset = _fit(rep) if auto else rep
    calibrated = calibrate_only(converter, failures)
    minmax = tensor_ranges(calibrated)
    hists, samples, held, reference = scan(calibrated, rep, input_names, minmax, hold_out=auto)
    facts = model_facts(calibrated, minmax)
    if not auto:
        rewrite, choice = choose_ranges(calibrated, hists, method, percentile, facts)
        final = quantize_calibrated(calibrated, rewrite, converter, io)
        return final, written(final, calibrated, converter, io, replace(choice, samples=samples))
    if not reference:
        raise CalibrationError("ranges='auto' holds out every fourth sample and needs at least 4",
                               argument="samples", received=samples,
                               fix="give more calibration samples (e.g. samples=200), or choose a method")
    candidates = {}
    scored: dict[tuple[tuple[int, tuple[float, float]], ...], tuple[tuple[np.ndarray, np.ndarray], bytes]] = {}
    for key_name, m, p in auto_candidates(percentile):
        rewrite, choice = choose_ranges(calibrated, hists, m, p, facts)
        key = tuple(sorted(rewrite.items()))
        if key not in scored:
            model = quantize_calibrated(calibrated, rewrite, converter, IOType.FLOAT)
            scored[key] = (sample_errors(reference, model, held, input_names), model)
        candidates[key_name] = (rewrite, choice, key)
    errors = {m: scored[c[2]][0] for m, c in candidates.items()}
    scores = {m: _db(*e) for m, e in errors.items()}
    won = {m: _folds_won(e, errors["minmax"]) for m, e in errors.items() if m != "minmax"}
    steady = [m for m in candidates if m == "minmax" or (won[m] == FOLDS and scores[m] > scores["minmax"])]
    best = max(steady, key=lambda m: (scores[m], m == "minmax"))
    # The method chosen, its model made as that method makes it: calibrated on every sample
    # (minmax is then the plain converter's int8, scale for scale).
    name_of = {n: (m, p) for n, m, p in auto_candidates(percentile)}
    converter.representative_dataset = rep
    calibrated = calibrate_only(converter, failures)
    minmax = tensor_ranges(calibrated)
    rewrite, choice = choose_ranges(calibrated, hists, *name_of[best], model_facts(calibrated, minmax))
    final = quantize_calibrated(calibrated, rewrite, converter, io)
    return final, written(final, calibrated, converter, io, replace(
        choice, method="auto", chosen=best, samples=samples, held_out=len(reference), sqnr_db=scores, folds_won=won))


def _scales(model: bytes) -> dict[str, float]:
    sg = read_flat_model(model).main
    return {t.name: float(np.ravel(t.quantization.scale)[0]) for t in sg.tensors
            if t.dtype in ("INT8", "UINT8") and t.quantization is not None and t.quantization.scale is not None
            and np.size(t.quantization.scale) == 1}


def written(final: bytes, calibrated: bytes, converter: Any, io: IOType, choice: RangesChoice) -> RangesChoice:
    """``choice`` with each activation tensor's status read from the model written: its scale against
    the plain converter's int8 of the same calibration (``kept``, ``narrowed``, ``widened``, ``widened
    to a shared scale`` where the method's own choice for it was narrower)."""
    plain = _scales(quantize_calibrated(calibrated, {}, converter, io)) if choice.narrowed or choice.widened \
        else None
    got = _scales(final)
    status: dict[str, str] = {}
    for name, planned in choice.tensors.items():
        if plain is None or name not in plain or name not in got:
            status[name] = planned if plain is None else "kept"
            continue
        a, b = got[name], plain[name]
        if abs(a - b) <= 1e-6 * max(abs(b), 1e-30):
            status[name] = "kept"
        elif a < b:
            status[name] = "narrowed"
        else:
            status[name] = "widened to a shared scale" if planned != "widened" else "widened"
    return replace(choice, tensors=status, narrowed=sum(1 for v in status.values() if v == "narrowed"),
                   widened=sum(1 for v in status.values() if v.startswith("widened")))


def auto_candidates(percentile: float) -> list[tuple[str, str, float]]:
    """What ``auto`` scores: ``(name, method, percentile)`` for each method, and the percentile
    method at :data:`AUTO_PERCENTILE` too when ``percentile`` is another (named ``percentile@99.999``)."""
    found = [(m, m, percentile) for m in METHODS]
    if percentile != AUTO_PERCENTILE:
        found.append((f"percentile@{AUTO_PERCENTILE:g}", "percentile", AUTO_PERCENTILE))
    return found
