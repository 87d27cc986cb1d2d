"""The sweep's answer: the Pareto fronts of accuracy against latency and against size, the dominated
cells greyed, and the one cell to ship under the stated constraints.

``results.json`` (schema ``edgeq/sweep/1``), ``report.md`` and ``report.html`` (the plots inlined as
SVG, drawn by :func:`edgeq.report.front_plot.front_figure`; each cell linked to its ``.tflite``
and ``cell.json``).
"""

from __future__ import annotations

import html
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq_device.results.fileio import atomic_write_bytes, atomic_write_text
from edgeq_device.results.report_json import dumps_json

from edgeq.report.front_plot import FrontPoint, front_figure, pareto_front, wilson_interval

__all__ = ["SCHEMA", "SweepReport", "build_report", "sweep_html", "sweep_markdown", "sweep_plots",
           "write_sweep_report"]

SCHEMA = "edgeq/sweep/1"


@dataclass(frozen=True)
class SweepReport:
    """Every cell (``cells``: dicts with ``name``, ``status``, ``figures``, ``file``, ``front_latency``,
    ``front_size``, ``within``), the fronts (cell names by latency / size), the recommendation."""

    cells: tuple[dict[str, Any], ...]
    metric: str
    best_keras: float | None
    front_latency: tuple[str, ...]
    front_size: tuple[str, ...]
    recommendation: dict[str, Any]
    created: str
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """``results.json``."""
        return {"schema": SCHEMA, "created": self.created, "metric": self.metric, "best_keras": self.best_keras,
                "front_latency": list(self.front_latency), "front_size": list(self.front_size),
                "recommendation": self.recommendation, "versions": self.versions, "settings": self.settings,
                "cells": list(self.cells)}

    def cell(self, name: str) -> dict[str, Any]:
        """The cell named ``name`` (``model/mode ...``)."""
        found = [c for c in self.cells if c["name"] == name]
        if not found:
            raise KeyError(name)
        return found[0]


def _value(c: Mapping[str, Any], metric: str) -> float | None:
    f = c.get("figures") or {}
    v = f.get(metric)
    return None if v is None else float(v) * 100


def _points(cells: Sequence[Mapping[str, Any]], metric: str, axis: str) -> list[FrontPoint]:
    pts = []
    for c in cells:
        f = c["figures"]
        v = _value(c, metric)
        if v is None:
            continue
        lo, hi = wilson_interval(v / 100, int(f.get("eval_images") or 0))
        if axis == "latency":
            p50 = f["latency_p50_us"] / 1000
            x, xlo, xhi = p50, f.get("latency_p50_lo_us", f["latency_p50_us"]) / 1000, \
                f.get("latency_p50_hi_us", f["latency_p50_us"]) / 1000
        else:
            x = xlo = xhi = f["size_bytes"] / 1024
        pts.append(FrontPoint(c["name"], x, xlo, xhi, v, lo * 100, hi * 100, f["size_bytes"]))
    return pts


def build_report(entries: Sequence[Mapping[str, Any]], *, created: str, versions: Mapping[str, str],
                 settings: Mapping[str, Any], max_drop: float | None = 1.0, max_latency: float | None = None,
                 max_size: int | None = None, prefer: str = "latency") -> SweepReport:
    """The fronts and the recommendation of the cells ``entries`` (as :func:`edgeq.sweep` builds them).

    The drop is in points below the best Keras model of the sweep (top-1; without labels, of
    agreement with the cell's own Keras model below 100%). The recommendation is the cell within
    every constraint that is best by ``prefer`` (ties: more accurate, then smaller, then faster).
    """
    ok = [dict(c) for c in entries if c["status"] == "ok"]
    labeled = bool(ok) and all((c["figures"] or {}).get("top1") is not None for c in ok)
    metric = "top1" if labeled else "agreement"
    kt = [c["figures"]["keras_top1"] for c in ok if c["figures"].get("keras_top1") is not None]
    best = max(kt) * 100 if labeled and kt else 100.0
    front_l = [p.name for p in pareto_front(_points(ok, metric, "latency"))]
    front_s = [p.name for p in pareto_front(_points(ok, metric, "size"))]
    fl, fs = set(front_l), set(front_s)
    cells = []
    for c in entries:
        c = dict(c)
        v = _value(c, metric) if c["status"] == "ok" else None
        c["front_latency"] = c["name"] in fl
        c["front_size"] = c["name"] in fs
        c["drop_points"] = None if v is None else best - v
        why = []
        if v is not None:
            f = c["figures"]
            if max_drop is not None and best - v > max_drop + 1e-9:
                why.append(f"drops {best - v:.2f} points > {max_drop:g}")
            if max_latency is not None and f["latency_p50_us"] / 1000 > max_latency:
                why.append(f"p50 {f['latency_p50_us'] / 1000:.3f} ms > {max_latency:g} ms")
            if max_size is not None and f["size_bytes"] > max_size:
                why.append(f"{f['size_bytes']} B > {max_size} B")
        c["within"] = v is not None and not why
        c["outside_because"] = why
        cells.append(c)
    rec = _recommend(cells, prefer, metric, best, max_drop, max_latency, max_size)
    return SweepReport(cells=tuple(cells), metric=metric, best_keras=best if labeled else None,
                       front_latency=tuple(front_l), front_size=tuple(front_s), recommendation=rec,
                       created=created, versions=dict(versions), settings=dict(settings))


def _recommend(cells: Sequence[Mapping[str, Any]], prefer: str, metric: str, best: float, max_drop: float | None,
               max_latency: float | None, max_size: int | None) -> dict[str, Any]:
    said = [f"at most {max_drop:g} points below the best ({best:.2f}%)" if max_drop is not None else None,
            f"p50 at most {max_latency:g} ms" if max_latency is not None else None,
            f"at most {max_size} bytes" if max_size is not None else None]
    constraints = {"max_drop": max_drop, "max_latency_ms": max_latency, "max_size_bytes": max_size, "prefer": prefer}
    within = [c for c in cells if c["within"]]
    if not within:
        ran = [c for c in cells if c["status"] == "ok"]
        return {"cell": None, **constraints,
                "reason": (f"no cell meets the constraints ({'; '.join(s for s in said if s)}); "
                           + ("loosen them or add models" if ran else "no cell finished"))}

    def key(c: Mapping[str, Any]) -> tuple[float, float, float, float]:
        f = c["figures"]
        acc, size, lat = -(_value(c, metric) or 0.0), float(f["size_bytes"]), float(f["latency_p50_us"])
        return ((lat, acc, size, 0.0) if prefer == "latency" else (size, acc, lat, 0.0) if prefer == "size"
                else (acc, size, lat, 0.0))

    pick = min(within, key=key)
    f = pick["figures"]
    by = {"latency": "the fastest", "size": "the smallest", "accuracy": "the most accurate"}[prefer]
    return {"cell": pick["name"], **constraints,
            "reason": (f"{pick['name']} is {by} of the {len(within)} cell(s) within the constraints "
                       f"({'; '.join(s for s in said if s) or 'none given'}): {metric} {_value(pick, metric):.2f}%, "
                       f"p50 {f['latency_p50_us'] / 1000:.3f} ms, {f['size_bytes'] / 1024:.1f} KiB")}


def sweep_plots(report: SweepReport) -> dict[str, bytes]:
    """The two fronts as SVG (text kept as text) and PNG: ``accuracy_vs_latency``, ``accuracy_vs_size``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = [c for c in report.cells if c["status"] == "ok"]
    ylabel = "top-1 accuracy, %" if report.metric == "top1" else "agreement with Keras, %"
    threads = (ok[0]["figures"].get("threads") if ok else None) or 1
    out: dict[str, bytes] = {}
    for axis, xlabel in (("latency", f"p50 latency, ms ({threads} thread{'s' if threads != 1 else ''}), 95% interval"),
                         ("size", "file size, KiB")):
        pts = _points(ok, report.metric, axis)
        if not pts:
            continue
        fig = front_figure(pts, xlabel=xlabel, ylabel=ylabel, title=f"{report.metric} vs {axis}: the Pareto front",
                           reference=report.best_keras, reference_label="best Keras model")
        svg = io.BytesIO()
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            fig.savefig(svg, format="svg", bbox_inches="tight")
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        out[f"accuracy_vs_{axis}.svg"] = svg.getvalue()
        out[f"accuracy_vs_{axis}.png"] = png.getvalue()
    return out


def _link(path: str | None, base: Path) -> str | None:
    if not path:
        return None
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:
        return Path(path).as_uri()


def _row(c: Mapping[str, Any], metric: str) -> list[str]:
    f = c.get("figures") or {}
    if c["status"] != "ok":
        return [c["name"], "FAILED", "", "", "", "", "", c.get("error") or ""]
    fronts = ", ".join(n for n, on in (("latency", c["front_latency"]), ("size", c["front_size"])) if on)
    return [c["name"], f"{f['size_bytes'] / 1024:.1f}", f"{_value(c, metric):.2f}", f"{c['drop_points']:.2f}",
            f"{f['latency_p50_us'] / 1000:.3f}", fronts or "dominated", "yes" if c["within"] else "no",
            "; ".join(c["outside_because"]) or ("(from the store)" if c.get("reused") else "")]


_HEADER = ["cell", "size KiB", "{metric} %", "drop pts", "p50 ms", "on front", "within", "notes"]


def sweep_markdown(report: SweepReport, base: Path) -> str:
    """``report.md``: the recommendation, then every cell with its fronts and files."""
    rec = report.recommendation
    header = [h.format(metric=report.metric) for h in _HEADER] + ["file"]
    lines = [f"# Sweep: {len(report.cells)} cells", "", f"**Recommended: {rec['cell'] or 'none'}** — {rec['reason']}",
             "", f"Pareto front, {report.metric} vs latency: {', '.join(report.front_latency) or '-'}  ",
             f"Pareto front, {report.metric} vs size: {', '.join(report.front_size) or '-'}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in report.cells:
        link = _link(c.get("file"), base)
        cell_json = _link(str(base / "cells" / c["folder"] / "cell.json"), base)
        files = (f"[model]({link}) · " if link else "") + f"[cell.json]({cell_json})"
        lines.append("| " + " | ".join(s.replace("|", "\\|") for s in _row(c, report.metric)) + f" | {files} |")
    lines += ["", f"edgeq {report.versions.get('edgeq')}, TensorFlow {report.versions.get('tensorflow')}, "
              f"LiteRT {report.versions.get('ai-edge-litert')}; {report.created}.", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.dominated td{color:#999}
tr.rec{background:#e7f6e7;font-weight:bold}tr.failed td{color:#b00020}
.rec-box{border-left:4px solid #2e7d32;padding:.5em 1em;background:#f4faf4}.plot svg{max-width:100%;height:auto}"""


def sweep_html(report: SweepReport, plots: Mapping[str, bytes], base: Path) -> str:
    """``report.html``: one self-contained page, the fronts inlined as SVG, dominated cells greyed."""
    rec = report.recommendation
    header = [h.format(metric=report.metric) for h in _HEADER] + ["files"]
    rows = []
    for c in report.cells:
        cls = ("failed" if c["status"] != "ok" else "rec" if c["name"] == rec["cell"]
               else "dominated" if not (c["front_latency"] or c["front_size"]) else "")
        link = _link(c.get("file"), base)
        cell_json = _link(str(base / "cells" / c["folder"] / "cell.json"), base)
        files = ((f'<a href="{html.escape(link)}">model</a> · ' if link else "")
                 + f'<a href="{html.escape(str(cell_json))}">cell.json</a>')
        rows.append(f'<tr class="{cls}">' + "".join(f"<td>{html.escape(s)}</td>" for s in _row(c, report.metric))
                    + f"<td>{files}</td></tr>")
    figs = "".join(f'<div class="plot" role="img" aria-label="{html.escape(n)}">'
                   f'{b.decode()[b.decode().index("<svg"):]}</div>' for n, b in plots.items() if n.endswith(".svg"))
    v = report.versions
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sweep: which model to ship"
            f"</title><style>{_CSS}</style></head><body><h1>Sweep: which model to ship</h1>"
            f"<div class=\"rec-box\"><b>{html.escape(str(rec['cell'] or 'none'))}</b>: {html.escape(rec['reason'])}</div>"
            f"<p>Pareto front of {report.metric} against latency: {html.escape(', '.join(report.front_latency) or '-')}; "
            f"against size: {html.escape(', '.join(report.front_size) or '-')}. Cells on neither front are greyed.</p>"
            f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in header)}</tr>{''.join(rows)}</table>"
            f"{figs}<p>edgeq {html.escape(str(v.get('edgeq')))}, TensorFlow {html.escape(str(v.get('tensorflow')))}, "
            f"LiteRT {html.escape(str(v.get('ai-edge-litert')))}; {html.escape(report.created)}.</p></body></html>")


def write_sweep_report(report: SweepReport, folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.json``, ``report.md``, ``report.html`` and ``plots/`` into the sweep's folder
    (replacing the sweep's own earlier report, each file atomically)."""
    out = Path(folder)
    plots = sweep_plots(report)
    files = {"results.json": dumps_json(report.to_dict(), indent=2) + "\n", "report.md": sweep_markdown(report, out),
             "report.html": sweep_html(report, plots, out)}
    written = {name: atomic_write_text(out / name, text, overwrite=True) for name, text in files.items()}
    (out / "plots").mkdir(exist_ok=True)
    for name, payload in plots.items():
        written[f"plots/{name}"] = atomic_write_bytes(out / "plots" / name, payload, overwrite=True)
    return written
