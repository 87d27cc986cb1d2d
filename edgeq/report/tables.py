"""The comparison as tables: the cells of each table, and tables for a terminal (rich) or CSV.

Every report renders from the comparison's schema dict (``Comparison.to_dict()``, what
``results.json`` holds), so a report can be rebuilt from a ``results.json`` alone and the
terminal table, ``report.md`` and ``report.html`` always agree. Functions take that dict, or
any object with a ``to_dict()`` that returns it (:class:`ResultsSource`).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Union

from edgeq_device.model.info import format_bytes

__all__ = ["COLUMNS", "TASK_COLUMNS", "FittedTable", "Results", "ResultsSource", "analysis_rows", "board_rows", "csv_table",
           "fitted_table", "latency_intervals", "natural_width", "p50_text", "plain_text", "results_dict",
           "rich_table", "table_rows"]


class ResultsSource(Protocol):
    """Anything that gives a comparison's schema dict (``results.json``) from ``to_dict()``."""

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` content."""


#: What the report functions render: the schema dict itself, or an object that gives it.
Results = Union[Mapping[str, Any], ResultsSource]


def results_dict(results: Results) -> Mapping[str, Any]:
    """The schema dict of ``results`` (``results`` itself when it is a mapping)."""
    return results if isinstance(results, Mapping) else results.to_dict()


COLUMNS = ("model", "size", "gzip -9", "vs f32", "top-1", "Δ top-1", "top-5", "agree", "SQNR dB", "max err", "cosine")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return fmt.format(v)


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.3f}"


def p50_text(lat: Mapping[str, Any]) -> str:
    """``0.741 ms [0.737–0.751]``: a p50 and its interval (from a row's ``latency_us`` entry).

    In milliseconds with three significant digits at least (``0.0100 ms [0.0099–0.0101]``
    for a 10 µs model), so that the interval of a fast model does not round to one value.
    """
    p50 = lat.get("p50_us")
    if p50 is None:
        return "-"
    ms = p50 / 1000
    places = 3 if ms <= 0 else min(6, max(3, 2 - math.floor(math.log10(ms))))
    lo, hi = lat.get("p50_lo_us"), lat.get("p50_hi_us")
    text = f"{ms:.{places}f} ms"
    return text if lo is None or hi is None else text + f" [{lo / 1000:.{places}f}–{hi / 1000:.{places}f}]"


def latency_intervals(data: Mapping[str, Any]) -> str:
    """One line: every mode's p50 and its 95% interval at the first thread count (or '' if none)."""
    t = str(data["threads"][0])
    items = [f"{r['name']} {p50_text(r['latency_us'][t])}" for r in data["rows"]
             if r["latency_us"].get(t, {}).get("p50_us") is not None]
    if not items:
        return ""
    tie = data["recommendation"].get("latency_tie")
    return (f"p50 at {t} thread{'' if t == '1' else 's'} with its 95% bootstrap interval over the timed runs: "
            + ", ".join(items) + f". Overlapping intervals{f', or p50s within {tie:.0%},' if tie else ''} are ties.")


#: The accuracy columns of a task's table (in place of top-1, Δ top-1, top-5) and the figures they show.
TASK_COLUMNS = {"detection": (("mAP", "Δ mAP", "mAP@.5"), ("map", "map50")),
                "segmentation": (("mIoU", "Δ mIoU", "pixel acc"), ("miou", "pixel_accuracy"))}


def table_rows(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison table, from the ``results.json`` dict.

    For a detection or segmentation comparison the accuracy columns are the task's
    (:data:`TASK_COLUMNS`): mAP@[.5:.95], its change in points and mAP@.5, or mIoU, its
    change and pixel accuracy.
    """
    threads = data["threads"]
    task = TASK_COLUMNS.get(data.get("task") or "classification")
    header = list(COLUMNS) if task is None else [*COLUMNS[:4], *task[0], *COLUMNS[7:]]
    for t in threads:
        header += [f"p50 ms ({t}T)", f"p90 ms ({t}T)"]
    header += ["MACs/s (1st T)", "convert s"]
    mcu = [r.get("mcu") for r in data["rows"] if r.get("mcu")]
    if mcu:  # compare(target="mcu"): TFLM's figures per mode
        header += ["MCU arena KiB", "MCU flash KiB", "TFLM"] + ([f"fits {mcu[0]['board']}"] if mcu[0]["board"] else [])
    rows = []
    for r in data["rows"]:
        cells = [
            r["name"], format_bytes(r["size_bytes"]), format_bytes(r.get("compressed_size_bytes")),
            _num(r["size_ratio"], "{:.2f}x"),
            *([_pct(r["top1"]), _num(r["top1_change_points"], "{:+.2f}"), _pct(r["top5"])] if task is None else
              [_pct((r.get("task_metrics") or {}).get(task[1][0])), _num(r.get("task_change_points"), "{:+.2f}"),
               _pct((r.get("task_metrics") or {}).get(task[1][1]))]),
            _pct(r["agreement"]),
            _num(r["sqnr_db"], "{:.1f}"), _num(r["max_abs_error"], "{:.4f}"), _num(r["cosine"], "{:.5f}"),
        ]
        for t in threads:
            lat = r["latency_us"].get(str(t), {})
            cells += [_ms(lat.get("p50_us")), _ms(lat.get("p90_us"))]
        mps = r.get("macs_per_second", {}).get(str(threads[0])) if r.get("macs_per_second") else None
        cells += ["-" if not mps else f"{mps / 1e9:.2f} G", _num(r["conversion_seconds"], "{:.1f}")]
        if mcu:
            cells += mcu_cells(r.get("mcu"), bool(mcu[0]["board"]))
        rows.append(cells)
    return header, rows


def mcu_cells(m: Mapping[str, Any] | None, board: bool) -> list[str]:
    """The MCU columns of one row: arena KiB, flash KiB, TFLM support (or the ops it lacks), fits the board."""
    if not m:
        return ["-", "-", "-"] + (["-"] if board else [])
    kib = ["-" if m.get(k) is None else f"{m[k] / 1024:.1f}" for k in ("arena_bytes", "flash_bytes")]
    support = "yes" if m["supported"] else "no: " + ", ".join(m.get("unsupported") or ["?"])
    fits = [] if not board else ["-" if m.get("fits") is None else "yes" if m["fits"] else "no"]
    return [*kib, support, *fits]


def analysis_rows(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the model-analysis table (``edgeq analyze`` figures per mode)."""
    threads = data["threads"]
    header = ["model", "MACs", "parameters", "peak activations"] + [f"MAC/s ({t}T)" for t in threads]
    rows = []
    for r in data["rows"]:
        if r["macs"] is None:
            continue
        mps = r.get("macs_per_second") or {}
        rows.append([r["name"], f"{r['macs']:,}", f"{r['params']:,}", format_bytes(r["peak_activation_bytes"])]
                    + ["-" if not mps.get(str(t)) else f"{mps[str(t)] / 1e9:.2f} G" for t in threads])
    return header, rows


def board_rows(data: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the on-board measurements (from ``edgeq deploy`` via the results store); a
    ``groups`` column after the board when any board's inventory groups are known."""
    header = ["board", "model", "runtime", "threads", "p50 ms", "p90 ms", "top-1", "top-5", "measured"]
    rows = [[b["board"], b["mode"], f"{b['runtime']} {b.get('runtime_version') or ''}".strip(),
             "-" if b.get("threads") is None else str(b["threads"]), _ms(b.get("p50_us")), _ms(b.get("p90_us")),
             _pct(b.get("top1")), _pct(b.get("top5")), str(b.get("measured") or b.get("evaluated") or "-")]
            for b in data.get("boards") or []]
    if any(b.get("groups") for b in data.get("boards") or []):  # deployed from an inventory: where each board sits
        header.insert(1, "groups")
        for b, row in zip(data.get("boards") or [], rows):
            row.insert(1, ", ".join(b.get("groups") or ()) or "-")
    return header, rows


# Columns of the comparison table a narrow terminal loses first (the rest: model, size, top-1, p50 ms).
_LESSER = ("convert s", "MACs/s (1st T)", "max err", "cosine", "top-5", "mAP@.5", "pixel acc", "vs f32",
           "gzip -9", "SQNR dB", "agree", "Δ top-1", "Δ mAP", "Δ mIoU")


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.split("\n")), default=0)


def _column_widths(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max([_cell_width(h)] + [_cell_width(r[i]) for r in rows]) for i, h in enumerate(header)]


def natural_width(header: Sequence[str], rows: Sequence[Sequence[str]]) -> int:
    """Columns a rich Table of these cells takes with nothing wrapped (default box, padding 1)."""
    return sum(w + 3 for w in _column_widths(header, rows)) + 1


def fitted_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, width: int | None,
                 drop: Sequence[str] = (), title: str | None = None, caption: str | None = None,
                 left: Sequence[str] = (), styles: Sequence[str | None] | None = None) -> tuple[Any, list[str]]:
    """A rich Table of ``rows`` in which no cell is cut or wrapped, and the columns it left out.

    Columns named in ``drop`` are left out, in that order, until the table fits ``width``
    terminal columns. Cells are never shortened with an ellipsis; if the table is still too
    wide, only its widest column is folded onto more lines, the others keep their full width.
    With ``width=None`` every column is kept: print it on a console at least
    :func:`natural_width` wide (what the CLI does when piped), or use :class:`FittedTable`,
    which fits the width it is printed at.

    Args:
        left: columns justified left (the others are right-justified).
        styles: a rich style per row (e.g. the recommended mode in bold), or None.
    """
    from rich.table import Table
    from rich.text import Text

    keep = list(range(len(header)))
    hidden: list[str] = []
    if width is not None:
        for name in drop:
            if natural_width([header[i] for i in keep], [[r[i] for i in keep] for r in rows]) <= width:
                break
            if name in header and header.index(name) in keep:
                keep.remove(header.index(name))
                hidden.append(name)
    widths = _column_widths([header[i] for i in keep], [[r[i] for i in keep] for r in rows])
    squeeze = -1
    if width is not None and sum(w + 3 for w in widths) + 1 > width:
        squeeze = max(range(len(keep)), key=lambda k: widths[k])
    table = Table(title=title, caption=caption)
    for k, i in enumerate(keep):
        fixed = width is not None and k != squeeze
        table.add_column(header[i], justify="left" if header[i] in left else "right", overflow="fold",
                         no_wrap=fixed, min_width=widths[k] if fixed else None)
    for n, cells in enumerate(rows):
        table.add_row(*(Text(cells[i]) for i in keep), style=styles[n] if styles else None)
    return table, hidden


class FittedTable:
    """A rich renderable: :func:`fitted_table` made at the width it is printed at.

    On any console (a terminal, a notebook, a console as wide as :func:`natural_width`
    for piped output) lesser columns are left out as needed, and a line under the table
    names them; nothing is cut.
    """

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence[str]], *, drop: Sequence[str] = (),
                 left: Sequence[str] = (), title: str | None = None, caption: str | None = None,
                 styles: Sequence[str | None] | None = None, more: str = "") -> None:
        self.header, self.rows, self.drop, self.left = list(header), [list(r) for r in rows], drop, left
        self.title, self.caption, self.styles, self.more = title, caption, styles, more

    def __rich_console__(self, console: Any, options: Any) -> Any:
        table, hidden = fitted_table(self.header, self.rows, width=options.max_width, drop=self.drop,
                                     left=self.left, title=self.title, caption=self.caption, styles=self.styles)
        if hidden:
            note = f"(not shown for lack of width: {', '.join(hidden)}{self.more})"
            table.caption = f"{table.caption}\n{note}" if table.caption else note
        yield table


def csv_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The rows as CSV with a header line (line breaks in cells become ``; ``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([c.replace("\n", "; ") for c in cells] for cells in rows)
    return buf.getvalue()


def rich_table(results: Results) -> FittedTable:
    """The comparison as a rich renderable table (the recommended mode in bold).

    It fits the width it is printed at: lesser columns (convert time, MAC/s, max error, ...)
    are left out as needed and named under it; model names and figures are never cut.
    """
    data = results_dict(results)
    header, rows = table_rows(data)
    rec = data["recommendation"]["mode"]
    drop = list(_LESSER[:3]) + [h for h in header if h.startswith("p90 ms")] + list(_LESSER[3:]) + [
        h for h in header if h.startswith("p50 ms")][1:]
    return FittedTable(
        header, rows, drop=drop, left=("model",), styles=["bold green" if c[0] == rec else None for c in rows],
        title=f"{data['model']}: every mode on {data['eval_images']} images of {data['evaluation']}",
        caption=data["recommendation"]["reason"], more="; see report.md")


def plain_text(results: Results) -> str:
    """The comparison as plain text: the table at its natural width (nothing left out), the
    recommendation under it, then the notes."""
    from rich.console import Console

    data = results_dict(results)
    buf = io.StringIO()
    console = Console(file=buf, width=natural_width(*table_rows(data)), color_system=None, force_terminal=False,
                      force_jupyter=False, highlight=False)
    console.print(rich_table(data))
    for note in data["notes"]:
        console.print(f"note: {note}")
    return buf.getvalue().rstrip("\n")
