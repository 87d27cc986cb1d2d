"""Render a :class:`~edgeq.compare.Comparison`: terminal table, Markdown, self-contained HTML, plots.

Every figure in the reports comes from ``Comparison.to_dict()`` (what ``results.json`` holds),
so the files always agree. The HTML embeds its plots as data URIs and its style inline:
it renders with no network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq_device.fileio import atomic_write_bytes, atomic_write_text, check_output_folder
from edgeq_device.info import format_bytes
from edgeq_device.report_json import dumps_json

from edgeq.errors import OutputExistsError

if TYPE_CHECKING:
    from edgeq.comparison.run import Comparison

__all__ = ["FittedTable", "csv_table", "fitted_table", "html_fragment", "latency_intervals", "markdown",
           "markdown_table", "p50_text", "plot_pngs", "rich_table", "write_report"]

COLUMNS = ("model", "size", "vs f32", "top-1", "Δ top-1", "top-5", "agree", "SQNR dB", "max err", "cosine")


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


def p50_text(lat: dict[str, Any]) -> str:
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


def latency_intervals(data: dict[str, Any]) -> str:
    """One line: every mode's p50 and its 95% interval at the first thread count (or '' if none)."""
    t = str(data["threads"][0])
    items = [f"{r['name']} {p50_text(r['latency_us'][t])}" for r in data["rows"]
             if r["latency_us"].get(t, {}).get("p50_us") is not None]
    if not items:
        return ""
    tie = data["recommendation"].get("latency_tie")
    return (f"p50 at {t} thread{'' if t == '1' else 's'} with its 95% bootstrap interval over the timed runs: "
            + ", ".join(items) + f". Overlapping intervals{f', or p50s within {tie:.0%},' if tie else ''} are ties.")


def table_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the comparison table, from the ``results.json`` dict."""
    threads = data["threads"]
    header = list(COLUMNS)
    for t in threads:
        header += [f"p50 ms ({t}T)", f"p90 ms ({t}T)"]
    header += ["MACs/s (1st T)", "convert s"]
    rows = []
    for r in data["rows"]:
        cells = [
            r["name"], format_bytes(r["size_bytes"]), _num(r["size_ratio"], "{:.2f}x"), _pct(r["top1"]),
            _num(r["top1_change_points"], "{:+.2f}"), _pct(r["top5"]), _pct(r["agreement"]),
            _num(r["sqnr_db"], "{:.1f}"), _num(r["max_abs_error"], "{:.4f}"), _num(r["cosine"], "{:.5f}"),
        ]
        for t in threads:
            lat = r["latency_us"].get(str(t), {})
            cells += [_ms(lat.get("p50_us")), _ms(lat.get("p90_us"))]
        mps = r.get("macs_per_second", {}).get(str(threads[0])) if r.get("macs_per_second") else None
        cells += ["-" if not mps else f"{mps / 1e9:.2f} G", _num(r["conversion_seconds"], "{:.1f}")]
        rows.append(cells)
    return header, rows


def analysis_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
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


def board_rows(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the on-board measurements (from ``edgeq deploy`` via the results store)."""
    header = ["board", "model", "runtime", "threads", "p50 ms", "p90 ms", "top-1", "top-5", "measured"]
    rows = [[b["board"], b["mode"], f"{b['runtime']} {b.get('runtime_version') or ''}".strip(),
             "-" if b.get("threads") is None else str(b["threads"]), _ms(b.get("p50_us")), _ms(b.get("p90_us")),
             _pct(b.get("top1")), _pct(b.get("top5")), str(b.get("measured") or b.get("evaluated") or "-")]
            for b in data.get("boards") or []]
    return header, rows


# Columns of the comparison table a narrow terminal loses first (the rest: model, size, top-1, p50 ms).
_LESSER = ("convert s", "MACs/s (1st T)", "max err", "cosine", "top-5", "vs f32", "SQNR dB", "agree", "Δ top-1")


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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (``|`` in cells escaped, line breaks as ``<br>``)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def csv_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The rows as CSV with a header line (line breaks in cells become ``; ``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([c.replace("\n", "; ") for c in cells] for cells in rows)
    return buf.getvalue()


def rich_table(comp: Comparison) -> FittedTable:
    """The comparison as a rich renderable table (the recommended mode in bold).

    It fits the width it is printed at: lesser columns (convert time, MAC/s, max error, ...)
    are left out as needed and named under it; model names and figures are never cut.
    """
    data = comp.to_dict()
    header, rows = table_rows(data)
    rec = data["recommendation"]["mode"]
    drop = list(_LESSER[:3]) + [h for h in header if h.startswith("p90 ms")] + list(_LESSER[3:]) + [
        h for h in header if h.startswith("p50 ms")][1:]
    return FittedTable(
        header, rows, drop=drop, left=("model",), styles=["bold green" if c[0] == rec else None for c in rows],
        title=f"{data['model']}: every mode on {data['eval_images']} images of {data['evaluation']}",
        caption=data["recommendation"]["reason"], more="; see report.md")


def markdown(comp: Comparison) -> str:
    """``report.md``: the table, the recommendation, notes and the board."""
    data = comp.to_dict()
    header, rows = table_rows(data)
    lines = [f"# {data['model']}: which .tflite to ship", "",
             f"Evaluated on {data['eval_images']} images of `{data['evaluation']}`"
             f"{'' if data['labeled'] else ' (unlabeled: agreement with the Keras model decides)'}; "
             f"latency on this host ({comp.board.get('cpu_model') or comp.board.get('architecture')}, "
             f"{comp.board.get('cores')} cores) with {', '.join(str(t) for t in data['threads'])} thread(s).", "",
             "## Recommendation", "", f"**{data['recommendation']['mode'] or 'none'}**: {data['recommendation']['reason']}",
             ""]
    if latency_intervals(data):
        lines += [latency_intervals(data), ""]
    lines += ["## Every mode", "",
              "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in rows]
    a_head, a_rows = analysis_rows(data)
    if a_rows:
        lines += ["", "## Model analysis", "", "Multiply-accumulates per inference, parameters, the estimated peak of "
                  "live activations, and the MAC/s achieved at the median latency.", "",
                  "| " + " | ".join(a_head) + " |", "|" + "|".join("---" for _ in a_head) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in a_rows]
    b_head, b_rows = board_rows(data)
    if b_rows:
        lines += ["", "## On boards", "", "The same .tflite files measured on boards by `edgeq deploy`.", "",
                  "| " + " | ".join(b_head) + " |", "|" + "|".join("---" for _ in b_head) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in b_rows]
    if data["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data["notes"]]
    lines += ["", "## Plots", "", "![accuracy vs latency](plots/accuracy_vs_latency.png)", "",
              "![size](plots/size.png)", "", "![latency](plots/latency.png)", "",
              f"_edgeq {data['edgeq_version']}, {data['created']}_", ""]
    return "\n".join(lines)


def _pareto(points: list[tuple[float, float, str]]) -> list[str]:
    """Names on the front: no other point is both faster (lower x) and more accurate (higher y)."""
    front = []
    for x, y, name in points:
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2, _ in points):
            front.append(name)
    return front


def plot_pngs(comp: Comparison) -> dict[str, bytes]:
    """The three plots as PNG bytes: accuracy vs latency, size, latency distribution."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = comp.to_dict()
    t0 = str(data["threads"][0])
    modes = [r for r in data["rows"] if r["name"] != "keras"]
    out: dict[str, bytes] = {}

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        return buf.getvalue()

    # accuracy (or agreement) vs latency, marker area ~ size, Pareto front marked
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    metric = "top1" if data["labeled"] else "agreement"
    pts = []
    max_size = max((r["size_bytes"] or 1) for r in modes) if modes else 1
    for r in modes:
        lat = r["latency_us"].get(t0, {}).get("p50_us")
        val = r[metric]
        if lat is None or val is None:
            continue
        pts.append((lat / 1000, val * 100, r["name"]))
        ax.scatter(lat / 1000, val * 100, s=60 + 900 * (r["size_bytes"] or 0) / max_size, alpha=0.55)
        ax.annotate(r["name"], (lat / 1000, val * 100), textcoords="offset points", xytext=(6, 6), fontsize=9)
    front = _pareto(pts)
    fp = sorted((x, y) for x, y, n in pts if n in front)
    if fp:
        ax.plot([p[0] for p in fp], [p[1] for p in fp], "k--", lw=1, label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    keras_row = data["rows"][0]
    if keras_row.get(metric) is not None:
        ax.axhline(keras_row[metric] * 100, color="grey", lw=0.8, ls=":")
    xs = [p[0] for p in pts]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:  # one slow mode would squash the rest
        ax.set_xscale("log")
    ax.set_xlabel(f"p50 latency, ms ({t0} thread{'s' if t0 != '1' else ''})")
    ax.set_ylabel("top-1 accuracy, %" if data["labeled"] else "agreement with Keras, %")
    ax.set_title("accuracy vs latency (marker area = file size)")
    out["accuracy_vs_latency.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    names = [r["name"] for r in modes]
    sizes = [(r["size_bytes"] or 0) / 1024 for r in modes]
    bars = ax.bar(names, sizes, color="#4c78a8")
    for b, r in zip(bars, modes):
        if r["size_ratio"]:
            ax.annotate(f"{r['size_ratio']:.1f}x", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("KB")
    ax.set_title("file size (ratio to float32)")
    out["size.png"] = png(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    samples = [comp.row(r["name"]).latency_samples_us.get(int(t0)) for r in modes]
    if all(samples):
        ax.boxplot([[s / 1000 for s in ss] for ss in samples if ss], showfliers=False)  # type: ignore[union-attr]
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
    return out


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.rec{background:#e7f6e7;font-weight:bold}
.rec-box{border-left:4px solid #2e7d32;padding:.5em 1em;background:#f4faf4}img{max-width:100%;margin:1em 0}
.notes li{margin:.3em 0}"""


def _html_table(data: dict[str, Any], rows_fn: Any = None) -> str:
    header, rows = (rows_fn or table_rows)(data)
    rec = data["recommendation"]["mode"]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rec_attr = ' class="rec"'
    body = "".join(
        f"<tr{rec_attr if cells[0] == rec else ''}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_fragment(comp: Comparison, pngs: dict[str, bytes] | None = None) -> str:
    """The report body: recommendation, table, notes and inline plots (also Jupyter's display)."""
    data = comp.to_dict()
    pngs = plot_pngs(comp) if pngs is None else pngs
    imgs = "".join(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(b).decode()}">'
                   for name, b in pngs.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data["notes"])
    return (f"<div class=\"rec-box\"><b>{html.escape(str(data['recommendation']['mode'] or 'none'))}</b>: "
            f"{html.escape(data['recommendation']['reason'])}"
            + (f"<p>{html.escape(latency_intervals(data))}</p>" if latency_intervals(data) else "")
            + f"</div>{_html_table(data)}"
            f"<h3>Model analysis</h3>{_html_table(data, analysis_rows)}"
            + (f"<h3>On boards</h3>{_html_table(data, board_rows)}" if data.get("boards") else "")
            + (f"<ul class=\"notes\">{notes}</ul>" if notes else "") + f"<div>{imgs}</div>")


def html_page(comp: Comparison, pngs: dict[str, bytes]) -> str:
    """``report.html``: one self-contained page (no external reference)."""
    data = comp.to_dict()
    title = f"{data['model']}: which .tflite to ship"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Evaluated on {data['eval_images']} images of <code>{html.escape(data['evaluation'])}</code>; "
            f"latency on {html.escape(str(comp.board.get('cpu_model') or comp.board.get('architecture')))} "
            f"({comp.board.get('cores')} cores). edgeq {html.escape(data['edgeq_version'])}, {html.escape(data['created'])}.</p>"
            f"{html_fragment(comp, pngs)}</body></html>")


def write_report(comp: Comparison, folder: Path, overwrite: bool = False, plots: bool = True) -> dict[str, Path]:
    """Write results.json, report.md, report.html, plots/*.png and models/*.tflite into ``folder``.

    Every target is checked before anything is written, so a refusal leaves the folder as it was.
    """
    pngs = plot_pngs(comp) if plots else {}
    files: dict[str, bytes] = {
        "results.json": (dumps_json(comp.to_dict(), indent=2, default=_json_default) + "\n").encode(),
        "report.md": markdown(comp).encode(),
        "report.html": html_page(comp, pngs).encode(),
    }
    files.update({f"plots/{name}": b for name, b in pngs.items()})
    files.update({f"models/{r.default_filename}": r.model_bytes for r in comp.results.values()})
    targets = {name: folder / name for name in files}
    clash = [str(p) for p in targets.values() if p.exists()]
    if clash and not overwrite:
        raise OutputExistsError(f"{len(clash)} report file(s) exist", argument="output", received=clash[0],
                                fix="choose another folder or pass overwrite=True (--force)")
    check_output_folder(folder, argument="folder")
    written = {}
    for name, payload in files.items():
        if name.endswith((".md", ".html", ".json")):
            written[name] = atomic_write_text(targets[name], payload.decode(), overwrite=overwrite)
        else:
            written[name] = atomic_write_bytes(targets[name], payload, overwrite=overwrite)
    return written


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
