"""A task comparison's own report parts: fidelity per output, the figures per class, and their plots.

Rendered from the comparison's schema dict (``results.json``): the rows'
``outputs_fidelity`` and ``task_details`` (precision–recall curves at IoU .5 for
detection, AP or IoU per class).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TaskSection", "class_rows", "fidelity_rows", "task_plot_pngs", "task_sections"]


def _num(v: Any, fmt: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return fmt.format(v)


def fidelity_rows(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Per mode and output: SQNR (dB), cosine, max abs error and arg-max agreement vs the Keras model."""
    header = ["model", "output", "SQNR dB", "cosine", "max err", "arg-max agree"]
    rows = [[r["name"], o["name"], _num(o.get("sqnr_db"), "{:.1f}"), _num(o.get("cosine"), "{:.5f}"),
             _num(o.get("max_abs_error"), "{:.4g}"),
             _num(None if o.get("argmax_agreement") is None else o["argmax_agreement"] * 100, "{:.2f}%")]
            for r in data["rows"] for o in r.get("outputs_fidelity") or ()]
    return header, rows


def class_rows(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """AP (detection) or IoU (segmentation) of each class, one column per model."""
    per = ((data.get("task_details") or {}).get("per_class")) or {}
    if not per:
        return [], []
    models = list(per)
    classes = list(dict.fromkeys(c for m in models for c in per[m]))
    what = "AP" if data.get("task") == "detection" else "IoU"
    header = ["class"] + [f"{what} {m}" for m in models]
    return header, [[c] + [_num(None if per[m].get(c) is None else per[m][c] * 100, "{:.1f}") for m in models]
                    for c in classes]


@dataclass(frozen=True)
class TaskSection:
    """One section of a task comparison's report: a title, a sentence, a table and maybe a plot."""

    title: str
    intro: str
    header: list[str]
    rows: list[list[str]]
    plot: str | None = None


def task_sections(data: Mapping[str, Any]) -> list[TaskSection]:
    """The report sections of a comparison's per-output fidelity and per-class figures (none when absent)."""
    out: list[TaskSection] = []
    f_head, f_rows = fidelity_rows(data)
    if f_rows:
        out.append(TaskSection(
            "Fidelity per output", "Each output against the float Keras model's on the same inputs "
            "(reference.npz and inputs.npz beside this report; edgeq-device eval MODEL --inputs inputs.npz "
            "--reference reference.npz measures it on a board).", f_head, f_rows))
    c_head, c_rows = class_rows(data)
    if c_rows:
        out.append(TaskSection("Per class", "AP@[.5:.95] of each category (COCO)." if data.get("task") == "detection"
                               else "IoU of each class over every pixel.", c_head, c_rows,
                               "precision_recall.png" if data.get("task") == "detection" else "class_iou.png"))
    return out


def task_plot_pngs(data: Mapping[str, Any]) -> dict[str, bytes]:
    """``precision_recall.png`` (detection: precision vs recall at IoU .5, one line per model) or
    ``class_iou.png`` (segmentation: IoU per class, bars per model)."""
    details = data.get("task_details") or {}
    if not details:
        return {}
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if data.get("task") == "detection":
        for name, curve in (details.get("curves") or {}).items():
            pts = [(k / 100, p) for k, p in enumerate(curve) if p is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, lw=1.5 if name == "keras" else 1.0,
                    ls=":" if name == "keras" else "-")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_title("precision–recall at IoU .5 (mean over classes)")
        name = "precision_recall.png"
    else:
        per = details.get("per_class") or {}
        models = list(per)
        classes = list(dict.fromkeys(c for m in models for c in per[m]))
        width = 0.8 / max(len(models), 1)
        for k, m in enumerate(models):
            ax.bar([i + k * width for i in range(len(classes))],
                   [(per[m].get(c) or 0.0) * 100 for c in classes], width, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(classes))], classes)
        ax.set_ylabel("IoU, %")
        ax.set_title("IoU per class")
        name = "class_iou.png"
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return {name: buf.getvalue()}
