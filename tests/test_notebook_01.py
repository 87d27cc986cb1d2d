"""notebooks/01_quantize_and_compare.ipynb runs top to bottom without an error."""

from __future__ import annotations

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_notebook_01_runs(repo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_DB", str(tmp_path / "results.db"))
    monkeypatch.setenv("EDGEQ_PROGRESS", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    path = repo_root / "notebooks" / "01_quantize_and_compare.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("data:image/png;base64," in h and "<table>" in h for h in html), "comparison did not display"
    text = "".join(o.get("text", "") for o in outputs)
    assert "budget" in text and "int8:" in text
    assert (repo_root / "out" / "notebook01" / "report.html").exists()
    assert os.path.getsize(tmp_path / "results.db") > 0
