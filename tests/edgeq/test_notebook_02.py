"""notebooks/02_qat_and_accuracy_budget.ipynb runs top to bottom, in this environment's Python."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_notebook_02_runs(tmp_path, execute_notebook):
    outputs = execute_notebook("02_qat_and_accuracy_budget.ipynb", timeout=300)
    # streams, plus what rich (the progress lines) displays as rich output in a notebook
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    kernel_python = re.search(r"\| python (\S+)", text)
    assert kernel_python and Path(kernel_python.group(1)).resolve() == Path(sys.executable).resolve()
    assert "qat epoch 2/2" in text  # progress per epoch
    assert "QAT int8" in text and "PTQ int8" in text
    assert "spiky" in text and "accuracy budget" in text and "chose int8+a16" in text  # 16-bit activations
    ratio = re.search(r"size vs full int8: ([0-9.]+)x", text)
    assert ratio and float(ratio.group(1)) <= 1.15  # within the budget at about int8's size
    assert "ranges auto chose" in text and "best output SQNR" in text  # section 4: the ranges methods
    assert any("image/png" in o.get("data", {}) for o in outputs), "the layer plot did not display"
    out = tmp_path / "notebooks" / "notebook02"
    assert (out / "layers.png").exists() and (out / "digits_qat_int8.tflite").exists()
