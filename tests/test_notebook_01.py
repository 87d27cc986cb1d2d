"""notebooks/01_quantize_and_compare.ipynb runs top to bottom without an error."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.slow


def test_notebook_01_runs(tmp_path, monkeypatch, execute_notebook):
    monkeypatch.setenv("EDGEQ_DB", str(tmp_path / "results.db"))
    outputs = execute_notebook("01_quantize_and_compare.ipynb")
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("data:image/png;base64," in h and "<table>" in h for h in html), "comparison did not display"
    text = "".join(o.get("text", "") for o in outputs)
    assert "budget" in text and "int8:" in text
    assert (tmp_path / "notebooks" / "notebook01" / "report.html").exists()
    assert os.path.getsize(tmp_path / "results.db") > 0
