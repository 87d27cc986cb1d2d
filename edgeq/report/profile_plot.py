"""The plot of ``edgeq profile``: the slowest operators, each model's time side by side (PNG bytes)."""

from __future__ import annotations

import io
from typing import Any

from edgeq.measure.profile import ProfileComparison

__all__ = ["profile_plot_png"]


def profile_plot_png(comparison: ProfileComparison, top: int = 12) -> bytes:
    """Horizontal bars of the ``top`` operators (by the slowest model's p50), one bar per model.

    Operators the Edge TPU prediction maps (``target="edgetpu"``) are hatched.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = sorted(comparison.rows(), key=lambda r: -r.slowest_us)[:max(1, top)]
    rows.reverse()  # the slowest at the top of the plot
    n = len(comparison.names)
    height = 0.8 / n
    fig, ax = plt.subplots(figsize=(7.0, 0.35 * len(rows) * max(1, n * 0.6) + 1.2))
    for k, name in enumerate(comparison.names):
        ys = [i + (k - (n - 1) / 2) * height for i in range(len(rows))]
        vals, hatches = [], []
        for r in rows:
            o = r.ops[k]
            vals.append((o.p50_us or 0.0) / 1000 if o is not None else 0.0)
            hatches.append("//" if o is not None and comparison.on_edgetpu(k, o) else "")
        bars = ax.barh(ys, vals, height=height, label=name)
        for bar, h in zip(bars, hatches):
            bar.set_hatch(h)
    labels = []
    for r in rows:
        first = next(o for o in r.ops if o is not None)
        labels.append(f"#{first.index} {r.op}")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("p50 per operator (ms)")
    title = "slowest operators"
    if comparison.target == "edgetpu":
        title += " (hatched: predicted on the Edge TPU)"
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig, plt)


def _png(fig: Any, plt: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
