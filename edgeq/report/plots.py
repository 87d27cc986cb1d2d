"""The comparison's plots as PNG bytes: accuracy vs latency (with the Pareto front; also as SVG, which
report.html embeds as text), file size, latency."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.measure.profile import ProfileComparison
from edgeq.report.front_plot import FrontPoint, front_figure, wilson_interval
from edgeq.report.profile_plot import profile_plot_png
from edgeq.report.tables import Results, results_dict
from edgeq.report.task_section import task_plot_pngs

__all__ = ["plot_pngs"]


def plot_pngs(results: Results, samples: Mapping[str, Sequence[float]] | None = None) -> dict[str, bytes]:
    """The plots as PNG bytes: accuracy vs latency, size, latency distribution (and the slowest operators
    when the comparison has profiles).

    Args:
        results: the comparison's schema dict (or an object whose ``to_dict()`` gives it).
        samples: every timed run (µs) of each mode at the first thread count, by mode name.
            With every mode's runs the latency plot is a box plot of them; otherwise (a
            report rebuilt from ``results.json``, which keeps no runs) it shows p50 and p90 bars.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = results_dict(results)
    t0 = str(data["threads"][0])
    modes = [r for r in data["rows"] if r["name"] != "keras"]
    out: dict[str, bytes] = {}

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    # accuracy (or agreement) vs latency: intervals, the front as a step line, names in a legend
    metric = "top1" if data["labeled"] else "agreement"
    task_key = {"detection": "map", "segmentation": "miou"}.get(data.get("task") or "")

    def value(r: Mapping[str, Any]) -> Any:
        return (r.get("task_metrics") or {}).get(task_key) if task_key else r[metric]

    n = int(data.get("eval_images") or 0)
    pts = []
    for r in modes:
        lat = r["latency_us"].get(t0, {})
        val = value(r)
        if lat.get("p50_us") is None or val is None:
            continue
        # top-1 and agreement are shares of n images: their Wilson interval; a task metric has none here
        lo, hi = wilson_interval(val, n) if not task_key else (val, val)
        pts.append(FrontPoint(r["name"], lat["p50_us"] / 1000, lat.get("p50_lo_us", lat["p50_us"]) / 1000,
                              lat.get("p50_hi_us", lat["p50_us"]) / 1000, val * 100, lo * 100, hi * 100,
                              r["size_bytes"]))
    keras_value = value(data["rows"][0])
    fig = front_figure(
        pts, xlabel=f"p50 latency, ms ({t0} thread{'s' if t0 != '1' else ''}), 95% interval",
        ylabel={"map": "mAP@[.5:.95], %", "miou": "mIoU, %"}.get(task_key or "")
        or ("top-1 accuracy, %" if data["labeled"] else "agreement with Keras, %"),
        title="accuracy vs latency" + (f" (95% intervals over {n} images)" if n and not task_key else ""),
        reference=None if keras_value is None else keras_value * 100)
    svg = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: selectable, checkable
        fig.savefig(svg, format="svg", bbox_inches="tight")
    out["accuracy_vs_latency.svg"] = svg.getvalue()
    out["accuracy_vs_latency.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    names = [r["name"] for r in modes]
    sizes = [(r["size_bytes"] or 0) / 1024 for r in modes]
    packed = [(r.get("compressed_size_bytes") or 0) / 1024 for r in modes]
    x = np.arange(len(names))
    width = 0.4 if any(packed) else 0.8
    bars = ax.bar(x - (width / 2 if any(packed) else 0), sizes, width, color="#4c78a8", label="file")
    if any(packed):  # results written before the compressed size was measured have none
        ax.bar(x + width / 2, packed, width, color="#9ecae9", label="gzip -9 (an over-the-air download)")
        ax.legend(fontsize=8)
    ax.set_xticks(x, names)
    for b, r in zip(bars, modes):
        if r["size_ratio"]:
            ax.annotate(f"{r['size_ratio']:.1f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("KB")
    ax.set_title("file size (ratio to float32) and compressed size")
    out["size.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    runs = [(samples or {}).get(r["name"]) for r in modes]
    if all(runs):
        ax.boxplot([[s / 1000 for s in ss] for ss in runs if ss], showfliers=False)
        ax.set_xticks(range(1, len(names) + 1), names)
    else:
        p50 = [(r["latency_us"].get(t0, {}).get("p50_us") or 0) / 1000 for r in modes]
        p90 = [(r["latency_us"].get(t0, {}).get("p90_us") or 0) / 1000 for r in modes]
        ax.bar(names, p90, color="#f58518", label="p90")
        ax.bar(names, p50, color="#4c78a8", label="p50")
        ax.legend(fontsize=8)
    p50s = [(r["latency_us"].get(t0, {}).get("p50_us") or 0) for r in modes]
    if p50s and min(p50s) > 0 and max(p50s) / min(p50s) > 20:
        ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_title(f"latency per mode ({t0} thread{'s' if t0 != '1' else ''})")
    out["latency.png"] = png(fig)
    out.update(task_plot_pngs(data))  # precision-recall (detection) or IoU per class (segmentation)
    if data.get("profile"):  # compare(..., profile=True): the slowest operators, modes side by side
        out["profile.png"] = profile_plot_png(ProfileComparison.from_dict(data["profile"]))
    return out
