"""The recommendation on constructed timed runs: overlapping p50 intervals are ties, and int8 wins them."""

from __future__ import annotations

import numpy as np
import pytest
from edgeq_device.measure.bench import median_interval

from edgeq.comparison.recommend import latency_summary, recommend, round_levels
from edgeq.comparison.records import ModeRow
from edgeq.errors import InvalidArgumentError
from edgeq.report.tables import p50_text

KB = 1024
SIZES = {"float32": 232 * KB, "float16": 118 * KB, "int8": 66 * KB, "dynamic": 65 * KB, "int16x8": 70 * KB}


def _rounds(level_us: float, drift: float, seed: int, shared: np.ndarray | None = None, n: int = 30,
            runs: int = 100) -> list[list[float]]:
    """``n`` rounds of timed runs around ``level_us``: each round's level moves by up to ``drift`` of its own,
    and by the factor ``shared[i]`` that slows every mode in round ``i`` alike (the machine's load)."""
    rng = np.random.default_rng(seed)
    common = np.ones(n) if shared is None else shared
    return [list(level_us * common[i] * (1 + rng.uniform(-drift, drift)) + rng.exponential(0.3, runs))
            for i in range(n)]


def _rows(timed: dict[str, list[list[float]]]) -> list[ModeRow]:
    """The keras row and one row per mode, the latency summarized as compare does it."""
    levels = round_levels(list(timed.values()))
    rows = [ModeRow(name="keras", mode="keras", io="float", size_bytes=None, size_ratio=None, top1=0.95, top5=1.0,
                    top1_change_points=0.0, agreement=1.0, sqnr_db=None, max_abs_error=0.0, cosine=1.0,
                    latency_us={})]
    for i, (name, rounds) in enumerate(timed.items()):
        rows.append(ModeRow(name=name, mode=name, io="float", size_bytes=SIZES[name], size_ratio=None, top1=0.95,
                            top5=1.0, top1_change_points=0.0, agreement=1.0, sqnr_db=30.0, max_abs_error=0.01,
                            cosine=1.0, latency_us={1: latency_summary(rounds, levels and levels[i])}))
    return rows


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
    # dynamic's p50 is lower than int8's, but each mode's rounds wander by ±20% on their own: the intervals overlap
    rows = _rows({"float32": _rounds(23.0, 0.02, seed=4), "float16": _rounds(23.5, 0.02, seed=5),
                  "int16x8": _rounds(400.0, 0.02, seed=6), "int8": _rounds(12.9, 0.2, seed=2),
                  "dynamic": _rounds(12.6, 0.2, seed=3)})
    int8, dynamic = rows[4], rows[5]
    assert dynamic.p50(1) < int8.p50(1)
    (lo8, hi8), (lod, hid) = int8.p50_interval(1), dynamic.p50_interval(1)
    assert lo8 <= hid and lod <= hi8  # they overlap
    rec = recommend(rows, 1.0, "size", 1, labeled=True)
    assert rec.mode == "int8" and rec.ties == ("int8", "dynamic")
    assert "tie" in rec.reason and "Edge TPU" in rec.reason and "microcontrollers" in rec.reason
    assert f"dynamic {p50_text(dynamic.latency_us[1])}" in rec.reason
    # the same rows give the same recommendation, and so do the rows in another order
    assert recommend(rows, 1.0, "size", 1, labeled=True) == rec
    assert recommend([rows[0], *rows[:0:-1]], 1.0, "size", 1, labeled=True).mode == "int8"


def test_a_small_but_clear_gap_is_still_a_tie():
    # steady rounds: dynamic's interval lies wholly below int8's, but it is only 8% faster
    rows = _rows({"float32": _rounds(19.3, 0.01, seed=4), "float16": _rounds(19.4, 0.01, seed=5),
                  "int8": _rounds(10.9, 0.01, seed=2), "dynamic": _rounds(10.0, 0.01, seed=3)})
    int8, dynamic = rows[3], rows[4]
    assert dynamic.p50_interval(1)[1] < int8.p50_interval(1)[0]
    rec = recommend(rows, 1.0, "size", 1, labeled=True)
    assert rec.mode == "int8" and rec.ties == ("int8", "dynamic")
    assert "within 15%" in rec.reason and "not clearly faster" in rec.reason


def test_a_clearly_faster_mode_wins_even_when_the_load_changes():
    # the machine slows every mode alike in half the rounds; dynamic stays 23% faster in each round
    shared = np.where(np.arange(30) % 2 == 0, 1.6, 1.0)
    timed = {"float32": _rounds(23.0, 0.01, seed=4, shared=shared), "int8": _rounds(13.0, 0.01, seed=2, shared=shared),
             "dynamic": _rounds(10.0, 0.01, seed=3, shared=shared)}
    rows = _rows(timed)
    assert rows[3].p50_interval(1)[1] < rows[2].p50_interval(1)[0]  # no overlap
    rec = recommend(rows, 1.0, "size", 1, labeled=True)
    assert rec.mode == "dynamic" and rec.ties == ()
    assert "fastest of the smallest models" in rec.reason and "tie" not in rec.reason
    # without taking the shared load out, the same runs would look like a tie
    wide = [latency_summary(timed[m]) for m in ("int8", "dynamic")]
    assert wide[0]["p50_lo_us"] <= wide[1]["p50_hi_us"]


def test_prefer_latency_tie_goes_to_the_smaller_then_the_more_portable():
    rows = _rows({"float32": _rounds(12.0, 0.2, seed=4), "float16": _rounds(30.0, 0.02, seed=7),
                  "dynamic": _rounds(11.8, 0.2, seed=3), "int8": _rounds(12.0, 0.2, seed=2),
                  "int16x8": _rounds(400.0, 0.02, seed=5)})
    rec = recommend(rows, 1.0, "latency", 1, labeled=True)
    assert rec.mode == "int8" and set(rec.ties) == {"int8", "dynamic"}


def test_latency_summary_rejects_bad_input():
    with pytest.raises(InvalidArgumentError, match="rounds_us"):
        latency_summary([[], []])
    with pytest.raises(InvalidArgumentError, match="levels"):
        latency_summary([[1.0], [2.0]], levels=[1.0])


def test_p50_text_keeps_three_significant_digits():
    assert p50_text({"p50_us": 10.0, "p50_lo_us": 9.9, "p50_hi_us": 10.12}) == "0.0100 ms [0.0099–0.0101]"
    assert p50_text({"p50_us": 741.2, "p50_lo_us": 737.3, "p50_hi_us": 751.2}) == "0.741 ms [0.737–0.751]"
    assert p50_text({"p50_us": 12345.0}) == "12.345 ms"
    assert p50_text({}) == "-"
