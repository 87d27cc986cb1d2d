"""Steps of the accuracy budget search that share one quantization debugger: 16-bit layers.

The worst layers come from one :class:`~edgeq.quantize.layer_error.QuantDebugSession`
(:class:`SharedDebugSession` calibrates it once, for both the 16-bit and the float-layer
candidates). :func:`a16_candidates` tries ``int8+a16(k)``: the ``k`` worst layers at 16-bit
activations (:mod:`edgeq.quantize.precision.mixed`). :func:`fidelity` is how every candidate is
compared with the float32 model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from edgeq_device.model.preprocess import Preprocess

from edgeq.errors import CalibrationError, EdgeqError
from edgeq.inputs.data import DataSource
from edgeq.inputs.models import LoadedModel
from edgeq.quantize.layer_error import LayerReport, QuantDebugSession
from edgeq.quantize.modes import IOType, Mode
from edgeq.quantize.precision.mixed import converter_ranges, mixed_result, plan_a16, quantize_runnable
from edgeq.quantize.precision.sensitivity import search_a16
from edgeq.quantize.result import ConversionResult

__all__ = ["SharedDebugSession", "a16_candidates", "fidelity"]


def fidelity(reference: np.ndarray, outputs: np.ndarray) -> tuple[float, float]:
    """``(arg-max agreement 0..1, output SQNR in dB)`` of ``outputs`` against ``reference`` (one row per sample).

    The SQNR is ``10 log10(sum(ref^2) / sum((out - ref)^2))`` over every output value,
    capped at 120 dB (identical outputs).
    """
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    agreement = float((ref.argmax(axis=1) == out.argmax(axis=1)).mean()) if len(ref) else 0.0
    signal, noise = float(np.sum(ref ** 2)), float(np.sum((out - ref) ** 2))
    if noise <= 0:
        return agreement, 120.0
    return agreement, min(120.0, 10 * math.log10(signal / noise)) if signal > 0 else -120.0


class SharedDebugSession:
    """One quantization debugger and its per-layer report, made on first use and kept."""

    def __init__(self, loaded: LoadedModel, calib: DataSource, samples: int, seed: int,
                 preprocess: Preprocess | None, batch_size: int | None, progress: bool | None,
                 failed: Any) -> None:
        self._args = (loaded, calib, samples, seed, preprocess, batch_size, progress)
        self._failed = failed
        self._made: tuple[QuantDebugSession, LayerReport, float] | None = None
        self._error: EdgeqError | None = None

    def get(self, step: str) -> tuple[QuantDebugSession, LayerReport, float] | None:
        """``(session, report, seconds it took)``; None (``step`` reported failed) if it cannot be made.

        Raises:
            CalibrationError: bad calibration data is the user's to fix, not a candidate's failure.
        """
        if self._made is None and self._error is None:
            loaded, calib, samples, seed, preprocess, batch_size, progress = self._args
            start = time.perf_counter()
            try:
                session = QuantDebugSession(loaded, calib, samples=samples, seed=seed, preprocess=preprocess,
                                            batch_size=batch_size, progress=progress)
                self._made = (session, session.report(), time.perf_counter() - start)
            except CalibrationError:
                raise
            except EdgeqError as exc:
                self._error = exc
        if self._made is None:
            assert self._error is not None
            self._failed(step, Mode.INT8, self._error)
            return None
        return self._made


def a16_candidates(sessions: SharedDebugSession, base: ConversionResult, io_: IOType, steps: Sequence[int],
                   measure: Any, failed: Any) -> bool:
    """Try int8 with the best 1, 2, 4... layer groups at 16-bit activations; True once one is within budget.

    The groups come from :func:`~edgeq.quantize.precision.sensitivity.search_a16` (ranked by
    their measured effect on the output, not by their own error).

    ``base`` is the float32 conversion (its ``.tflite`` is what litert-quantizer quantizes).
    """
    got = sessions.get("int8+a16 layers")
    if got is None:
        return False
    session, _, setup = got
    ranges = converter_ranges(session.calibrated_model)
    t0 = time.perf_counter()
    try:
        search = search_a16(base.model_bytes, session.items, io_=io_, ranges=ranges, max_groups=max(steps, default=1))
    except (EdgeqError, ValueError, RuntimeError) as exc:
        failed("int8+a16 layers", Mode.INT8, exc)
        return False
    setup += time.perf_counter() - t0
    by_first = {g[0]: g for g, _ in search.single}
    seen: set[tuple[str, ...]] = set()
    for k in steps:
        step = search.best_within(k)
        if step is None or step.groups in seen:
            continue
        seen.add(step.groups)
        name = f"int8+a16({len(step.groups)})"
        t0 = time.perf_counter()
        try:
            plan = plan_a16(base.model_bytes, [n for f in step.groups for n in by_first[f]])
            raw, plan = quantize_runnable(base.model_bytes, session.items, plan, io_, ranges)
            layers = tuple(dict.fromkeys(session.layer_of(f) if session.layer_of(f) != "-" else f
                                         for f in step.groups))
            result = mixed_result(base, raw, plan, io_, setup + time.perf_counter() - t0, session.samples, layers)
            result.metadata.extra["a16_search"] = search.to_dict()
        except (EdgeqError, ValueError, RuntimeError) as exc:
            failed(name, Mode.INT8, exc)
            continue
        if measure(name, Mode.INT8, result).within_budget:
            return True
    return False
