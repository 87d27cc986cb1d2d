"""The comparison as HTML: ``report.html``, one self-contained page, and the fragment Jupyter displays.

The plots are embedded as data URIs and the style inline: the page renders with no network.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import Any

from edgeq.report.plots import plot_pngs
from edgeq.report.profile_section import (
    ProfileBlock,
    board_profile_blocks,
    mode_profile_rows,
    mode_profile_totals,
)
from edgeq.report.tables import (
    Results,
    analysis_rows,
    board_rows,
    latency_intervals,
    results_dict,
    table_rows,
)
from edgeq.report.task_section import task_sections

__all__ = ["html_fragment", "html_page"]

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.rec{background:#e7f6e7;font-weight:bold}
.rec-box{border-left:4px solid #2e7d32;padding:.5em 1em;background:#f4faf4}img{max-width:100%;margin:1em 0}
.plot svg{max-width:100%;height:auto;margin:1em 0}
.notes li{margin:.3em 0}"""


def _html_table(data: Mapping[str, Any], rows_fn: Any = None) -> str:
    header, rows = (rows_fn or table_rows)(data)
    rec = data["recommendation"]["mode"]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rec_attr = ' class="rec"'
    body = "".join(
        f"<tr{rec_attr if cells[0] == rec else ''}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
        for cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cells_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _modes_profile_html(data: Mapping[str, Any]) -> str:
    p_head, p_rows = mode_profile_rows(data)
    if not p_rows:
        return ""
    return (f"<h3>Per operator</h3>{_cells_table(*mode_profile_totals(data))}"
            f"<p></p>{_cells_table(p_head, p_rows)}")


def _profile_html(blocks: list[ProfileBlock]) -> str:
    if not blocks:
        return ""
    return "<h3>Per operator on boards</h3>" + "".join(
        f"<h4>{html.escape(b.title)}</h4><p>{html.escape(b.summary)}</p>{_cells_table(b.header, b.rows)}"
        for b in blocks)


def _figure(name: str, payload: bytes) -> str:
    """A plot inline: an SVG as markup (its text stays text), a PNG as a data URI."""
    if name.endswith(".svg"):
        svg = payload.decode("utf-8")
        return f'<div class="plot" role="img" aria-label="{html.escape(name)}">{svg[svg.index("<svg"):]}</div>'
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{base64.b64encode(payload).decode()}">'


def html_fragment(results: Results, pngs: Mapping[str, bytes] | None = None) -> str:
    """The report body: recommendation, table, notes and inline plots (also Jupyter's display).

    ``pngs``: the plots to embed by file name (default: :func:`~edgeq.report.plots.plot_pngs` of
    ``results``); an ``.svg`` is inlined as markup in place of the ``.png`` of the same name.
    """
    data = results_dict(results)
    pngs = plot_pngs(data) if pngs is None else pngs
    imgs = "".join(_figure(name, b) for name, b in pngs.items()
                   if not (name.endswith(".png") and name[:-4] + ".svg" in pngs))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in data["notes"])
    return (f"<div class=\"rec-box\"><b>{html.escape(str(data['recommendation']['mode'] or 'none'))}</b>: "
            f"{html.escape(data['recommendation']['reason'])}"
            + (f"<p>{html.escape(latency_intervals(data))}</p>" if latency_intervals(data) else "")
            + f"</div>{_html_table(data)}"
            f"<h3>Model analysis</h3>{_html_table(data, analysis_rows)}"
            + (f"<h3>On boards</h3>{_html_table(data, board_rows)}" if data.get("boards") else "")
            + _modes_profile_html(data) + _profile_html(board_profile_blocks(data))
            + "".join(f"<h3>{html.escape(sec.title)}</h3><p>{html.escape(sec.intro)}</p>"
                      f"{_cells_table(sec.header, sec.rows)}" for sec in task_sections(data))
            + (f"<ul class=\"notes\">{notes}</ul>" if notes else "") + f"<div>{imgs}</div>")


def html_page(results: Results, pngs: Mapping[str, bytes]) -> str:
    """``report.html``: one self-contained page (no external reference)."""
    data = results_dict(results)
    board = data["board"]
    title = f"{data['model']}: which .tflite to ship"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Evaluated on {data['eval_images']} images of <code>{html.escape(data['evaluation'])}</code>; "
            f"latency on {html.escape(str(board.get('cpu_model') or board.get('architecture')))} "
            f"({board.get('cores')} cores). edgeq {html.escape(data['edgeq_version'])}, {html.escape(data['created'])}.</p>"
            f"{html_fragment(data, pngs)}</body></html>")
