"""notebooks/02_qat_and_accuracy_budget.ipynb runs top to bottom, in this environment's Python."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def test_notebook_02_runs(repo_root, monkeypatch):
    monkeypatch.setenv("EDGEQ_PROGRESS", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    path = repo_root / "notebooks" / "02_qat_and_accuracy_budget.ipynb"
    nb = nbformat.read(path, as_version=4)
    # jupyter_client starts the "python3" kernel with the Python running this test (sys.executable),
    # so the notebook sees the same packages as the tests.
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # streams, plus what rich (the progress lines) displays as rich output in a notebook
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    kernel_python = re.search(r"\| python (\S+)", text)
    assert kernel_python and Path(kernel_python.group(1)).resolve() == Path(sys.executable).resolve()
    assert "qat epoch 2/2" in text  # progress per epoch
    assert "QAT int8" in text and "PTQ int8" in text
    assert "spiky" in text and "accuracy budget" in text and "chose int8+float" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the layer plot did not display"
    out = repo_root / "out" / "notebook02"
    assert (out / "layers.png").exists() and (out / "digits_qat_int8.tflite").exists()
