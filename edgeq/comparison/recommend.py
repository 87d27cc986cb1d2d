"""Which mode to ship: the latency figures of interleaved timing rounds, ties, and the recommendation.

:func:`edgeq.compare` times every mode in :data:`LATENCY_ROUNDS` rounds, the modes
interleaved; :func:`round_levels` and :func:`latency_summary` turn the rounds into each
mode's p50 with a 95% bootstrap interval. :func:`recommend` then picks the smallest (or
fastest) mode within an accuracy budget and says why in one sentence. Sizes within 2% are
ties, and so are latencies unless one p50 interval lies wholly below the other and is more
than 15% faster (:data:`LATENCY_TIE`); a tie goes to the mode that runs on more targets
(:data:`PORTABILITY`: int8, float32, float16, int16x8, dynamic), and the reason says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from edgeq_device.measure.bench import median_interval

from edgeq.comparison.records import ModeRow, Recommendation
from edgeq.errors import InvalidArgumentError
from edgeq.report.tables import p50_text

__all__ = ["LATENCY_ROUNDS", "LATENCY_TIE", "PORTABILITY", "latency_summary", "latency_ties", "recommend",
           "round_levels"]

# Timed runs of every mode are taken in this many rounds, the modes interleaved, so a change
# in the machine's load or clock during the comparison reaches every mode alike and shows in
# the spread of the rounds' medians (the p50's interval) instead of deciding the ranking.
LATENCY_ROUNDS = 30

# Latencies tie unless one p50 interval lies wholly below the other *and* that p50 is faster
# by more than this share. An interval holds the spread within one comparison; separate
# comparisons of the same .tflite files on one machine differ by more (each process gets its
# own memory layout and load): the int8/dynamic p50 ratio of a 10 µs CNN ranged 1.03 to 1.09
# over eight runs whose own intervals were about ±0.3%. A gap inside that is not a ranking.
LATENCY_TIE = 0.15

# When modes tie (sizes within 2%, latencies as above), the one that runs on more targets
# wins: first in this order.
#: The figure a task's budget is on: its key in ``ModeRow.task_metrics`` and its name.
_TASK_METRICS = {"detection": ("map", "mAP@[.5:.95]"), "segmentation": ("miou", "mIoU")}

PORTABILITY: tuple[str, ...] = ("int8", "float32", "float16", "int16x8", "dynamic")
_RUNS_ON = {
    "int8": "full-integer int8 runs on the most targets: CPUs, the Edge TPU, microcontrollers "
            "(TFLite Micro) and integer NPUs",
    "float32": "float32 runs on every CPU runtime, the GPU delegate and TFLite Micro",
    "float16": "float16 runs on CPUs (widened to float32 at load) and natively on the GPU delegate",
    "int16x8": "int16x8 runs on CPUs (reference kernels), TFLite Micro and some NPUs",
    "dynamic": "dynamic-range runs on CPU runtimes only (hybrid kernels)",
}


def round_levels(rounds_by_mode: Sequence[Sequence[Sequence[float]]]) -> list[list[float]] | None:
    """How fast the machine was in each round, for each mode, as the other modes saw it.

    ``rounds_by_mode[m][r]`` holds the timed runs (µs) of mode ``m`` in round ``r``; every
    mode was timed in every round. Each mode's round medians are taken relative to that
    mode's median over the rounds; the level of round ``r`` for mode ``m`` is the median of
    those ratios over the *other* modes (so a hiccup that hit one mode alone does not move
    it, and a mode's own timing never sets the level it is measured against). With two
    modes this is the paired comparison: each round's median over the other mode's. None
    for fewer than two modes (nothing to share).
    """
    if len(rounds_by_mode) < 2:
        return None
    meds = np.array([[float(np.median(r)) if len(r) else np.nan for r in rounds] for rounds in rounds_by_mode])
    ratios = meds / np.nanmedian(meds, axis=1, keepdims=True)
    return [[float(v) for v in np.nanmedian(np.delete(ratios, m, axis=0), axis=0)] for m in range(len(meds))]


def latency_summary(rounds_us: Sequence[Sequence[float]], levels: Sequence[float] | None = None,
                    confidence: float = 0.95, resamples: int = 1000, seed: int = 0) -> dict[str, float]:
    """Latency figures (µs) of timed runs taken in rounds, and the interval of their p50.

    ``p50_us``, ``p90_us``, ``mean_us`` and ``std_us`` are over every run. Runs that follow
    each other are not independent draws (the machine's load and clock drift over seconds),
    so the interval (``p50_lo_us``, ``p50_hi_us``) comes from the rounds' medians: a seeded
    bootstrap of their median (``resamples`` resamples, central ``confidence`` share; see
    :func:`edgeq_device.measure.bench.median_interval`), its relative spread placed around ``p50_us``
    (and kept within the fastest and slowest run).

    Args:
        rounds_us: the timed runs of each round, in microseconds.
        levels: optional, one per round: how fast the machine was in that round, shared by
            every mode timed in it (:func:`compare` gives this mode's :func:`round_levels`). Each round's
            median is divided by it first, so a change of load that slowed every mode alike
            does not widen the interval; what is left is this mode's own spread, and two
            modes' intervals then overlap only when the rounds do not tell them apart.
        confidence, resamples, seed: of the bootstrap.

    The same runs give the same figures.

    Raises:
        InvalidArgumentError: no round holds a run, or ``levels`` does not match the rounds.
    """
    if levels is not None and (len(levels) != len(rounds_us) or not all(v > 0 for v in levels)):
        raise InvalidArgumentError("need one positive level per round", argument="levels", received=list(levels),
                                   fix=f"give {len(rounds_us)} positive numbers, or None")
    pairs = [(np.asarray(r, np.float64).reshape(-1), 1.0 if levels is None else float(levels[i]))
             for i, r in enumerate(rounds_us) if len(r)]
    if not pairs:
        raise InvalidArgumentError("no timed runs to summarize", argument="rounds_us", received=len(rounds_us),
                                   fix="time at least one run (benchmark(..., keep_samples=True))")
    every = np.concatenate([r for r, _ in pairs])
    p50, p90 = (float(v) for v in np.percentile(every, [50, 90]))
    relative = [float(np.median(r)) / level for r, level in pairs]
    centre = float(np.median(relative))
    lo, hi = median_interval(relative, confidence, resamples, seed)
    return {"p50_us": p50, "p90_us": p90, "mean_us": float(every.mean()), "std_us": float(every.std()),
            "runs": int(every.size), "p50_lo_us": float(np.clip(p50 * lo / centre, every.min(), p50)),
            "p50_hi_us": float(np.clip(p50 * hi / centre, p50, every.max())), "rounds": len(pairs)}


def recommend(rows: Sequence[ModeRow], budget: float, prefer: str, threads: int, labeled: bool,
              task: str = "classification") -> Recommendation:
    """The mode to ship among ``rows`` (``rows[0]`` the Keras model) and why, in one sentence.

    The candidates are the modes within ``budget`` points of top-1 of the Keras model (or, with
    ``labeled`` False, of agreement with it; for ``task`` ``"detection"`` or ``"segmentation"``,
    of its mAP@[.5:.95] or mIoU, ``ModeRow.task_change_points``). ``prefer="size"`` takes the smallest (sizes within 2%
    tie, then latency decides), ``"latency"`` the fastest at ``threads`` threads (p50s tie as in
    :func:`latency_ties`, then size decides); a tie goes to the mode that runs on more targets
    (:data:`PORTABILITY`). With no candidate, the mode is None and the reason says what to try.
    """
    task_metric = _TASK_METRICS.get(task)
    candidates = [r for r in rows[1:] if _within_budget(r, budget, labeled, task_metric is not None)]
    metric = task_metric[1] if task_metric else "top-1 accuracy" if labeled else "agreement with the Keras model"
    if not candidates:
        worst = min(rows[1:], key=lambda r: (r.task_change_points if task_metric else r.top1_change_points) or 0.0)
        return Recommendation(None, f"No mode stays within the {budget:g}-point budget on {metric}; the closest "
                                    f"is {_closest(rows[1:], labeled, task)}. Try quantization-aware training "
                                    f"(edgeq qat) or keep sensitive layers in float (--max-drop). "
                                    f"Largest drop: {worst.name}.", budget, prefer)
    best, what, ties = _choose(candidates, prefer, threads)
    parts = _figures(best, rows, threads, labeled, task_metric)
    reason = (f"{best.name} is the {what} within the {budget:g}-point budget on {metric}: "
              + ", ".join(p for p in parts if p) + ".")
    if ties:
        others = ", ".join(f"{r.name} {_p50_text(r, threads)}" for r in sorted(ties, key=_rank) if r is not best)
        reason += (f" {others} {'is' if len(ties) == 2 else 'are'} not clearly faster (95% bootstrap "
                   f"intervals of the p50 over the timed runs overlap, or the p50s are within "
                   f"{LATENCY_TIE:.0%}): a tie, so the mode that runs on more targets wins; "
                   f"{_RUNS_ON.get(best.name, best.name + ' runs on this host')}.")
    return Recommendation(best.name, reason, budget, prefer, tuple(r.name for r in sorted(ties, key=_rank)),
                          latency_tie=LATENCY_TIE)


def _within_budget(r: ModeRow, budget: float, labeled: bool, task: bool) -> bool:
    """Whether ``r`` loses at most ``budget`` points of the task metric, top-1, or agreement."""
    if task:
        return r.task_change_points is not None and -r.task_change_points <= budget
    if labeled and r.top1_change_points is not None:
        return -r.top1_change_points <= budget
    return r.agreement is not None and (1 - r.agreement) * 100 <= budget


def _rank(r: ModeRow) -> int:
    return PORTABILITY.index(r.name) if r.name in PORTABILITY else len(PORTABILITY)


def _choose(candidates: Sequence[ModeRow], prefer: str, threads: int) -> tuple[ModeRow, str, list[ModeRow]]:
    """The best candidate, what makes it best (words), and the rows tied with it on latency."""

    def size(r: ModeRow) -> float:
        return float(r.size_bytes or 0)

    def lat(r: ModeRow) -> float:
        return r.p50(threads) or float("inf")

    # Sizes within 2% are equal; p50s whose intervals overlap are equal (latency_ties). Among
    # equals the next criterion decides, and last the mode that runs on more targets.
    if prefer == "size":
        floor = min(size(r) for r in candidates)
        near = [r for r in candidates if size(r) <= floor * 1.02]
        tied = latency_ties(near, threads)
        best = min(tied, key=lambda r: (_rank(r), lat(r), size(r)))
        if len(near) == 1:
            what = "smallest model"
        elif len(tied) == 1:
            what = "fastest of the smallest models (sizes within 2%)"
        else:
            what = "smallest model (sizes within 2%, speed a tie)"
    else:
        fast = latency_ties(candidates, threads)
        floor = min(size(r) for r in fast)
        tied = [r for r in fast if size(r) <= floor * 1.02]
        best = min(tied, key=lambda r: (_rank(r), size(r), lat(r)))
        what = "fastest model" if len(fast) == 1 else (
            "smallest of the fastest models (speed a tie)" if len(tied) == 1
            else "fastest model (speed a tie, sizes within 2%)")
    return best, what, tied if len(tied) > 1 else []


def _figures(best: ModeRow, rows: Sequence[ModeRow], threads: int, labeled: bool,
             task_metric: tuple[str, str] | None) -> list[str]:
    """The figures the reason quotes: size and speed against float32, the metric against Keras."""
    keras_row = rows[0]
    f32 = next((r for r in rows if r.name == "float32"), None)
    parts = []
    if f32 and best.size_bytes and f32.size_bytes:
        parts.append(f"{f32.size_bytes / best.size_bytes:.1f}x smaller than float32")
    if best.p50(threads):
        parts.append(f"p50 {_p50_text(best, threads)} at {threads} thread{'s' if threads > 1 else ''}")
    if best.p50(threads) and f32 and f32.p50(threads):
        ratio = f32.p50(threads) / best.p50(threads)  # type: ignore[operator]
        parts.append(f"{ratio:.2f}x the float32 speed")
    if task_metric is not None and task_metric[0] in best.task_metrics:
        key, name = task_metric
        ref = keras_row.task_metrics.get(key)
        parts.append(f"{name} {best.task_metrics[key] * 100:.1f} ({best.task_change_points or 0.0:+.1f} points vs "
                     f"Keras" + (f" {ref * 100:.1f})" if ref is not None else ")"))
    elif labeled and best.top1 is not None:
        parts.append(f"top-1 {best.top1 * 100:.1f}% ({best.top1_change_points:+.1f} points vs Keras "
                     f"{keras_row.top1 * 100:.1f}%)" if keras_row.top1 is not None else "")
    elif best.agreement is not None:
        parts.append(f"{best.agreement * 100:.1f}% agreement with Keras")
    return parts


def latency_ties(rows: Sequence[ModeRow], threads: int) -> list[ModeRow]:
    """The rows that are not clearly slower than another row.

    Row ``r`` is clearly slower than row ``s`` when ``r``'s p50 interval lies wholly above
    ``s``'s *and* ``r``'s p50 exceeds ``s``'s by more than :data:`LATENCY_TIE`. A row without
    a latency counts as infinitely slow; with no latency at all, every row ties.
    """
    inf = float("inf")
    spans = [(r.p50(threads) or inf, *(r.p50_interval(threads) or (inf, inf))) for r in rows]

    def slower(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
        return a[1] > b[2] and a[0] > b[0] * (1 + LATENCY_TIE)

    return [r for r, a in zip(rows, spans) if not any(slower(a, b) for b in spans)]


def _p50_text(r: ModeRow, threads: int) -> str:
    return p50_text(r.latency_us.get(threads, {}))


def _closest(rows: Sequence[ModeRow], labeled: bool, task: str = "classification") -> str:
    if task in _TASK_METRICS:
        r = max(rows, key=lambda r: r.task_change_points if r.task_change_points is not None else -1e9)
        return f"{r.name} ({r.task_change_points or 0.0:+.1f} points)"
    if labeled:
        r = max(rows, key=lambda r: r.top1_change_points if r.top1_change_points is not None else -1e9)
        return f"{r.name} ({r.top1_change_points:+.1f} points)"
    r = max(rows, key=lambda r: r.agreement or 0.0)
    return f"{r.name} ({(r.agreement or 0) * 100:.1f}% agreement)"
