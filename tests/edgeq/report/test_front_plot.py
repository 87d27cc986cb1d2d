"""The accuracy-vs-latency plot reads at a glance: no text over text, intervals drawn, the front as a
step line, an axis no narrower than the noise; checked in matplotlib and in headless Chromium."""

from __future__ import annotations

import pytest
from report_chromium import svg_text_layout

from edgeq.report.front_plot import (
    FrontPoint,
    front_figure,
    pareto_front,
    text_overlaps,
    value_limits,
    wilson_interval,
)


def _crowded() -> list[FrontPoint]:
    """Three modes at one spot (dynamic, float32, float16), a slow 16-bit mode and int4 far apart:
    a log axis over three decades and accuracies 0.1 point apart, the case that used to collide."""
    def pt(name: str, ms: float, top1: float, size: int) -> FrontPoint:
        lo, hi = wilson_interval(top1, 1000)
        return FrontPoint(name, ms, ms * 0.97, ms * 1.04, top1 * 100, lo * 100, hi * 100, size)

    return [pt("float32", 0.052, 0.956, 400_000), pt("dynamic", 0.055, 0.955, 110_000),
            pt("float16", 0.053, 0.956, 200_000), pt("int8", 0.031, 0.955, 105_000),
            pt("int16x8", 1.9, 0.956, 110_000), pt("int4", 0.25, 0.951, 60_000)]


def test_wilson_interval_matches_the_published_figure():
    lo, hi = wilson_interval(0.5, 100)  # 50 of 100: 0.4038-0.5962 (Wilson 1927; any statistics table)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    assert wilson_interval(0.9, 0) == (0.9, 0.9)


def test_front_is_the_undominated_points_by_latency():
    pts = _crowded()
    front = [p.name for p in pareto_front(pts)]
    # int8 is fastest; float32 is more accurate; every other mode is beaten by one of them.
    assert front == ["int8", "float32"]  # float16 is as accurate as float32 but slower
    assert "int4" not in front and "dynamic" not in front


def test_value_axis_is_no_narrower_than_the_noise():
    pts = _crowded()
    low, high = value_limits(pts)
    widest = max(p.value_hi - p.value_lo for p in pts)
    assert high - low >= 2 * widest  # a 0.1-point gap inside ±1.3-point intervals is not a cliff
    assert all(low < p.value_lo and p.value_hi < high for p in pts)
    assert 0 <= low and high <= 100


def test_crowded_plot_has_no_text_over_text_and_reads_its_ticks():
    import matplotlib.pyplot as plt

    fig = front_figure(_crowded(), xlabel="p50 latency, ms", ylabel="top-1, %", title="accuracy vs latency",
                       reference=95.6)
    try:
        assert text_overlaps(fig) == []
        ax = fig.axes[0]
        assert ax.get_xscale() == "log"
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(not t.startswith("$") for t in labels)  # plain numbers, no mathtext powers
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "Pareto front" in legend and "int4 (dominated)" in legend and "int8" in legend
        assert len(ax.containers) == 6  # one error-bar container per point
    finally:
        plt.close(fig)


def test_text_overlaps_finds_text_written_over_text():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "dynamic")
    ax.text(0.5, 0.5, "float32")
    try:
        assert text_overlaps(fig) == [("dynamic", "float32")] or ("dynamic", "float32") in text_overlaps(fig)
    finally:
        plt.close(fig)


@pytest.mark.slow
def test_crowded_plot_renders_without_overlaps_in_headless_chromium(tmp_path):
    import io

    import matplotlib
    import matplotlib.pyplot as plt

    fig = front_figure(_crowded(), xlabel="p50 latency, ms", ylabel="top-1, %", title="accuracy vs latency",
                       reference=95.6)
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    page = tmp_path / "plot.html"
    page.write_text(f"<!DOCTYPE html><html><body>{svg[svg.index('<svg'):]}</body></html>")
    layout = svg_text_layout(page, tmp_path)
    assert layout["texts"] >= 12, layout  # ticks, labels, title and legend are all there as text
    assert layout["overlaps"] == [], layout
