"""Accuracy against latency as a person reads it at a glance: every point with its 95% intervals,
the Pareto front as a step line, dominated points greyed, names in a legend (never written over
each other), readable ticks on a log axis, and a value axis no narrower than the measurement's
own uncertainty, so a 0.1-point difference inside the noise does not look like a cliff.

:func:`front_figure` draws it from :class:`FrontPoint` values; :func:`text_overlaps` lists the
pairs of text boxes of a drawn figure that overlap (the report's own check, and the tests').
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FrontPoint", "front_figure", "pareto_front", "text_overlaps", "value_limits", "wilson_interval"]

#: The value axis never spans less than this many points (percent), whatever the intervals say.
MIN_SPAN_POINTS = 1.0


@dataclass(frozen=True)
class FrontPoint:
    """One model (or mode) on the plot.

    ``latency_ms`` with its interval ``latency_lo_ms``..``latency_hi_ms`` (the p50's 95% bootstrap
    interval; equal to it when unknown), ``value`` in percent with ``value_lo``..``value_hi``,
    ``size_bytes`` for the marker area (None: a fixed size).
    """

    name: str
    latency_ms: float
    latency_lo_ms: float
    latency_hi_ms: float
    value: float
    value_lo: float
    value_hi: float
    size_bytes: int | None = None


def wilson_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``share`` measured on ``n`` samples (0..1).

    ``n`` of 0 gives ``(share, share)``: nothing is known about its spread.
    """
    if n <= 0:
        return share, share
    denom = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denom
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pareto_front(points: Sequence[FrontPoint]) -> list[FrontPoint]:
    """The points no other point beats on both counts (as fast or faster and as accurate or more,
    better on one), sorted by latency."""
    front = [p for p in points
             if not any(q.latency_ms <= p.latency_ms and q.value >= p.value
                        and (q.latency_ms < p.latency_ms or q.value > p.value) for q in points)]
    return sorted(front, key=lambda p: (p.latency_ms, -p.value))


def value_limits(points: Sequence[FrontPoint], reference: float | None = None,
                 min_span: float = MIN_SPAN_POINTS) -> tuple[float, float]:
    """The value axis: every interval (and the reference line) inside with a margin, never narrower
    than ``min_span`` points nor than twice the widest interval, clipped to 0..100."""
    lows = [p.value_lo for p in points] + ([reference] if reference is not None else [])
    highs = [p.value_hi for p in points] + ([reference] if reference is not None else [])
    lo, hi = min(lows), max(highs)
    widest = max((p.value_hi - p.value_lo for p in points), default=0.0)
    span = max(hi - lo, min_span, 2 * widest)
    margin = 0.12 * span
    mid = (lo + hi) / 2
    low, high = mid - span / 2 - margin, mid + span / 2 + margin
    if low < 0:
        low, high = 0.0, min(100.0, high - low)
    if high > 100:
        low, high = max(0.0, low - (high - 100)), 100.0
    return low, high


def front_figure(points: Sequence[FrontPoint], *, xlabel: str, ylabel: str, title: str,
                 reference: float | None = None, reference_label: str = "Keras") -> Any:
    """The figure (matplotlib, Agg) of ``points``: error bars, the front as a step line, the
    dominated points greyed, a legend outside the axes, a log latency axis when one point is
    more than 20x slower than another (ticks at 1, 2 and 5 of each decade, plain numbers)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    front = pareto_front(points)
    on_front = {id(p) for p in front}
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*Xh<>p"
    biggest = max((p.size_bytes or 0 for p in points), default=0) or 1
    handles = []
    for i, p in enumerate(points):
        colour, marker = colours[i % len(colours)], markers[i % len(markers)]
        best = id(p) in on_front
        size = 5 + 9 * math.sqrt((p.size_bytes or biggest) / biggest)
        ax.errorbar(p.latency_ms, p.value,
                    xerr=[[max(0.0, p.latency_ms - p.latency_lo_ms)], [max(0.0, p.latency_hi_ms - p.latency_ms)]],
                    yerr=[[max(0.0, p.value - p.value_lo)], [max(0.0, p.value_hi - p.value)]],
                    fmt=marker, color=colour if best else "#b0b0b0", ms=size, mec="black" if best else "#909090",
                    mew=0.6, ecolor=colour if best else "#c8c8c8", elinewidth=1, capsize=3, alpha=1 if best else 0.8,
                    zorder=3 if best else 2)
        handles.append(Line2D([], [], ls="", marker=marker, ms=7, color=colour if best else "#b0b0b0",
                              mec="black" if best else "#909090",
                              label=p.name + ("" if best else " (dominated)")))
    if len(front) > 1:
        ax.step([p.latency_ms for p in front], [p.value for p in front], where="post", color="black", lw=1,
                ls="--", zorder=1)
        handles.append(Line2D([], [], color="black", lw=1, ls="--", label="Pareto front"))
    if reference is not None:
        ax.axhline(reference, color="grey", lw=0.8, ls=":", zorder=0)
        handles.append(Line2D([], [], color="grey", lw=0.8, ls=":", label=reference_label))
    xs = [p.latency_ms for p in points if p.latency_ms > 0]
    if xs and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    if points:
        ax.set_ylim(*value_limits(points, reference))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.tick_params(axis="x", pad=7)  # clear of the lowest value label at the corner
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
              borderaxespad=0)
    fig.tight_layout()
    return fig


def text_overlaps(fig: Any) -> list[tuple[str, str]]:
    """The pairs of visible, non-empty texts of a drawn figure whose boxes overlap (pixels)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from matplotlib.text import Text

    hidden = set()  # tick labels outside an axis' view are kept by matplotlib but not drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-12 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-12 * abs(hi - lo):
                    hidden.update({id(tick.label1), id(tick.label2)})
    boxes = []
    for t in fig.findobj(Text):
        if id(t) in hidden:
            continue
        if t.get_visible() and t.get_text().strip() and t.get_figure() is not None:
            try:
                boxes.append((t.get_text(), t.get_window_extent(renderer)))
            except RuntimeError:
                continue
    pairs = []
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            if ba.x0 < bb.x1 - 0.5 and bb.x0 < ba.x1 - 0.5 and ba.y0 < bb.y1 - 0.5 and bb.y0 < ba.y1 - 0.5:
                pairs.append((a, b))
    return pairs
