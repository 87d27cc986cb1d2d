"""notebooks/07_sweep.ipynb runs top to bottom: a small sweep from builders, its fronts, and a resume that runs nothing."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_notebook_07_runs(tmp_path, execute_notebook):
    outputs = execute_notebook("07_sweep.ipynb", timeout=600)
    text = "\n".join(o.get("text", "") or "".join(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert re.search(r"^8 run, 0 from the store, 0 failed", text, re.M), text[-3000:]
    assert re.search(r"^0 run, 8 from the store", text, re.M), text[-3000:]
    assert "recommended: " in text and "within the constraints" in text
    names = re.findall(r"^(w[48]/\S+(?: ranges=mse)?)\s+[\d.]+ KiB", text, re.M)
    assert sorted(names) == sorted(["w4/float32", "w4/float16", "w4/int8", "w4/int8 ranges=mse",
                                    "w8/float32", "w8/float16", "w8/int8", "w8/int8 ranges=mse"]), names
    sweep = tmp_path / "notebooks" / "notebook07" / "sweep"
    assert (sweep / "report.html").exists() and len(list((sweep / "cells").glob("*/model.tflite"))) == 8
