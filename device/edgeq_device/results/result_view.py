"""How a result reads to a person: plain text for ``print`` and an HTML table for notebooks.

Both take a result's plain form (what :func:`edgeq_device.results.report_json.to_plain`
returns: dicts, lists, strings and Python numbers), so numbers print as
``0.9812``, never ``np.float64(0.9812)``. Long lists are cut to their first
items with a count of the rest; the JSON form keeps everything.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["html_table", "plain_text", "plain_value"]

_MAX_ITEMS = 8


def plain_value(value: Any) -> str:
    """One value as short text: floats to 6 significant digits, long lists cut."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, list):
        shown = ", ".join(plain_value(v) for v in value[:_MAX_ITEMS])
        more = f", … ({len(value) - _MAX_ITEMS} more)" if len(value) > _MAX_ITEMS else ""
        return f"[{shown}{more}]"
    if isinstance(value, Mapping):
        items = list(value.items())
        shown = ", ".join(f"{k}: {plain_value(v)}" for k, v in items[:_MAX_ITEMS])
        more = f", … ({len(items) - _MAX_ITEMS} more)" if len(items) > _MAX_ITEMS else ""
        return "{" + shown + more + "}"
    return str(value)


def plain_text(title: str, body: Mapping[str, Any]) -> str:
    """``title`` then one ``name  value`` line per field; nested objects indented below their name."""
    lines = [title]
    _text_lines(body, lines, "  ")
    return "\n".join(lines)


def _text_lines(body: Mapping[str, Any], lines: list[str], indent: str) -> None:
    width = max((len(str(k)) for k in body), default=0)
    for k, v in body.items():
        if isinstance(v, Mapping) and v:
            lines.append(f"{indent}{k}")
            _text_lines(v, lines, indent + "  ")
        else:
            lines.append(f"{indent}{k!s:<{width}}  {plain_value(v)}")


def html_table(title: str, body: Mapping[str, Any]) -> str:
    """An HTML table of the fields, nested objects as nested tables, every text escaped."""
    return (f"<div><strong>{html.escape(title)}</strong>"
            f"{_html_rows(body)}</div>")


def _html_rows(body: Mapping[str, Any]) -> str:
    rows = []
    for k, v in body.items():
        cell = _html_rows(v) if isinstance(v, Mapping) and v else html.escape(plain_value(v))
        rows.append(f"<tr><th style=\"text-align:left;vertical-align:top\">{html.escape(str(k))}</th>"
                    f"<td style=\"text-align:left\">{cell}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"
