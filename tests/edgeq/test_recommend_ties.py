"""The recommendation on constructed timed runs: overlapping p50 intervals are ties, and int8 wins them."""

from __future__ import annotations

import numpy as np
import pytest
from edgeq_device.bench import median_interval

from edgeq.compare import ModeRow, _recommend, latency_summary
from edgeq.errors import InvalidArgumentError

KB = 1024


def _rounds(level_us: float, drift: float, seed: int, n: int = 10, runs: int = 200) -> list[list[float]]:
    """``n`` rounds of timed runs around ``level_us``; each round's level shifts by up to ``drift`` (load)."""
    rng = np.random.default_rng(seed)
    return [list(level_us * (1 + rng.uniform(-drift, drift)) + rng.exponential(0.3, runs)) for _ in range(n)]


def _row(name: str, size: int, rounds: list[list[float]] | None, top1: float = 0.95) -> ModeRow:
    lat = {1: latency_summary(rounds)} if rounds is not None else {}
    return ModeRow(name=name, mode=name, io="float", size_bytes=size, size_ratio=None, top1=top1, top5=1.0,
                   top1_change_points=(top1 - 0.95) * 100, agreement=1.0, sqnr_db=30.0, max_abs_error=0.01,
                   cosine=1.0, latency_us=lat)


def _keras() -> ModeRow:
    return ModeRow(name="keras", mode="keras", io="float", size_bytes=None, size_ratio=None, top1=0.95, top5=1.0,
                   top1_change_points=0.0, agreement=1.0, sqnr_db=None, max_abs_error=0.0, cosine=1.0, latency_us={})


def test_median_interval_is_seeded_and_holds_the_median():
    x = np.random.default_rng(1).exponential(10.0, 500)
    lo, hi = median_interval(x)
    assert (lo, hi) == median_interval(x)  # the same runs give the same interval
    assert lo < float(np.median(x)) < hi
    assert median_interval([3.0]) == (3.0, 3.0)
    with pytest.raises(InvalidArgumentError, match="samples"):
        median_interval([])
    with pytest.raises(InvalidArgumentError, match="confidence"):
        median_interval(x, confidence=1.5)


def test_overlapping_intervals_are_a_tie_and_int8_wins():
    # dynamic's p50 is lower than int8's, but the rounds drift by ±20%: the intervals overlap
    int8, dynamic = _rounds(13.0, 0.2, seed=2), _rounds(12.0, 0.2, seed=3)
    rows = [_keras(), _row("float32", 232 * KB, _rounds(23.0, 0.02, seed=4)),
            _row("int8", 66 * KB, int8), _row("dynamic", 65 * KB, dynamic)]
    assert rows[3].p50(1) < rows[2].p50(1)
    (lo8, hi8), (lod, hid) = rows[2].p50_interval(1), rows[3].p50_interval(1)
    assert lo8 <= hid and lod <= hi8  # they overlap
    rec = _recommend(rows, 1.0, "size", 1, labeled=True)
    assert rec.mode == "int8" and rec.ties == ("int8", "dynamic")
    assert "tie" in rec.reason and "Edge TPU" in rec.reason and "microcontrollers" in rec.reason
    assert f"dynamic {rows[3].p50(1) / 1000:.3f} ms [{lod / 1000:.3f}–{hid / 1000:.3f}]" in rec.reason
    # the same rows give the same recommendation, and so do rows in another order
    assert _recommend(rows, 1.0, "size", 1, labeled=True) == rec
    assert _recommend([rows[0], rows[3], rows[1], rows[2]], 1.0, "size", 1, labeled=True).mode == "int8"


def test_a_clearly_faster_mode_wins():
    rows = [_keras(), _row("float32", 232 * KB, _rounds(23.0, 0.02, seed=4)),
            _row("int8", 66 * KB, _rounds(14.0, 0.02, seed=2)), _row("dynamic", 65 * KB, _rounds(9.0, 0.02, seed=3))]
    assert rows[3].p50_interval(1)[1] < rows[2].p50_interval(1)[0]  # no overlap
    rec = _recommend(rows, 1.0, "size", 1, labeled=True)
    assert rec.mode == "dynamic" and rec.ties == ()
    assert "fastest of the smallest" in rec.reason and "tie" not in rec.reason


def test_prefer_latency_tie_goes_to_the_smaller_then_the_more_portable():
    rows = [_keras(), _row("float32", 232 * KB, _rounds(12.0, 0.2, seed=4)),
            _row("dynamic", 65 * KB, _rounds(11.0, 0.2, seed=3)), _row("int8", 66 * KB, _rounds(12.5, 0.2, seed=2)),
            _row("int16x8", 70 * KB, _rounds(400.0, 0.02, seed=5))]
    rec = _recommend(rows, 1.0, "latency", 1, labeled=True)
    assert rec.mode == "int8" and set(rec.ties) == {"int8", "dynamic"}


def test_latency_summary_rejects_no_runs():
    with pytest.raises(InvalidArgumentError, match="rounds_us"):
        latency_summary([[], []])
