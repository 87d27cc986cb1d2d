"""What ``edgeq-device eval`` returns: :class:`EvalResult`, its per-class scores, and its text.

The record is the ``edgeq-device/eval/1`` JSON schema (see
:mod:`edgeq_device.results.report_json`); :func:`format_eval` is what the CLI prints,
and ``str(result)`` gives the same text.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..measure.sysinfo import BoardInfo
from ..model.preprocess import Preprocess
from ..results.report_json import JsonResult
from ..run.images import CLASS_ORDERS, folder_pairs

__all__ = ["ClassScore", "EvalResult", "format_eval"]


@dataclass(frozen=True)
class ClassScore:
    """Accuracy on the images of one class (``accuracy`` is None for a class with no image)."""

    name: str
    images: int
    correct: int
    accuracy: float | None


@dataclass(frozen=True)
class EvalResult(JsonResult):
    """What ``edgeq-device eval`` measured."""

    KIND = "eval"

    model: str | None
    model_sha256: str
    mode: str | None
    data: str
    images: int
    skipped: tuple[str, ...]
    classes: tuple[str, ...]
    labels_from: str
    top1: float
    top5: float
    top_k: int
    per_class: tuple[ClassScore, ...]
    confusion: tuple[tuple[int, ...], ...]
    seconds: float
    images_per_second: float
    workers: int
    threads: int | None
    runtime: str
    runtime_version: str
    delegate: str | None
    preprocess: Preprocess
    limit: int | None
    seed: int
    board: BoardInfo
    started: str
    edgeq_device_version: str
    predictions: tuple[int, ...] | None = None
    files: tuple[str, ...] | None = None
    class_order: str = ""
    class_folders: dict[str, int] | None = None
    empty_folders: tuple[str, ...] = ()
    #: one line: the preprocessing used and where each part came from (see :mod:`edgeq_device.model.preprocess_choice`)
    preprocessing: str = ""
    #: where each part came from: ``size``, ``color``, ``normalization`` -> flag, edgeq metadata, TFLite metadata, input, ...
    preprocess_sources: dict[str, str] | None = None

    def __str__(self) -> str:
        """The text ``edgeq-device eval`` prints (:func:`format_eval`)."""
        return format_eval(self)


def format_eval(r: EvalResult, max_classes: int = 20) -> str:
    """The human-readable text ``edgeq-device eval`` prints."""
    lines = [
        f"model      {r.model or '<bytes>'}",
        f"data       {r.data}: {r.images} images" + (f" (sample of {r.limit}, seed {r.seed})" if r.limit else "")
        + (f", {len(r.skipped)} unreadable skipped" if r.skipped else ""),
        f"runtime    {r.runtime} {r.runtime_version}" + (f", {r.delegate}" if r.delegate else "")
        + f", {r.workers} workers, {r.images_per_second:.1f} images/s",
        *([f"preprocessing  {r.preprocessing}"] if r.preprocessing else []),
        f"labels     {_labels_text(r)}",
        f"top-1      {r.top1:.4f}",
        f"top-{r.top_k}      {r.top5:.4f}",
    ]
    shown = [c for c in r.per_class if c.images][:max_classes]
    if shown:
        width = max(len(c.name) for c in shown)
        lines.append("per class")
        lines += [f"  {c.name:<{width}}  {c.accuracy:.4f}  ({c.correct}/{c.images})" for c in shown]
        hidden = sum(1 for c in r.per_class if c.images) - len(shown)
        if hidden > 0:
            lines.append(f"  ... {hidden} more (see --json)")
    if r.empty_folders:
        lines.append(f"empty      class folders with no image (still classes): {', '.join(r.empty_folders[:10])}"
                     + (" …" if len(r.empty_folders) > 10 else ""))
    if len(r.classes) <= 12:
        lines += _confusion_lines(r)
    return "\n".join(lines)


def _confusion_lines(r: EvalResult, width: int = 80) -> list[str]:
    """The confusion matrix in at most ``width`` columns, class names whole (never cut)."""
    names = [str(c) for c in r.classes]
    cw = max(5, *(len(str(v)) for row in r.confusion for v in row)) + 1
    lw = max(5, *(len(n) for n in names))
    if all(len(n) < cw for n in names):  # the names fit above the columns
        head = ["confusion (rows: true, columns: predicted)", "  " + " " * (lw + 1) + "".join(f"{n:>{cw}}" for n in names)]
        body = [f"  {n:>{lw}} " + "".join(f"{v:>{cw}}" for v in row) for n, row in zip(names, r.confusion)]
    else:  # columns numbered, the rows give the numbers and the whole names
        iw = len(str(len(names) - 1))
        head = ["confusion (rows: true, columns: predicted, numbered as the rows)",
                "  " + " " * (iw + lw + 2) + "".join(f"{i:>{cw}}" for i in range(len(names)))]
        body = [f"  {i:>{iw}} {n:<{lw}} " + "".join(f"{v:>{cw}}" for v in row)
                for i, (n, row) in enumerate(zip(names, r.confusion))]
    if max(len(line) for line in head[1:] + body) > width:
        return ["confusion: too wide to print here, see --json"]
    return head + body


def _labels_text(r: EvalResult) -> str:
    """``from folders (integer names: folder k = output k): 0→0, 1→1, …``."""
    where = r.labels_from
    if not r.class_order:
        return f"from {where}"
    pairs = folder_pairs(list((r.class_folders or {}).items()))
    return f"from {where} ({CLASS_ORDERS.get(r.class_order, r.class_order)}): {pairs}"
