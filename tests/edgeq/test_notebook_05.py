"""notebooks/05_below_8_bits.ipynb runs top to bottom: int8, clustered and pruned on the bundled digits."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_notebook_05_runs(tmp_path, execute_notebook):
    outputs = execute_notebook("05_below_8_bits.ipynb", timeout=300)
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "16 clusters per kernel" in html and "50% sparsity" in html
    rows = {m.group(1).strip(): m.groups()[1:] for m in re.finditer(
        r"^(int8|clustered \(16\)|pruned \(0\.5\))\s+([\d.]+) KiB\s+([\d.]+) KiB\s+([\d.]+)x\s+([\d.]+)%\s+([\d.]+)%",
        text, re.M)}
    assert set(rows) >= {"int8", "clustered (16)", "pruned (0.5)"}, text[-2000:]
    for name in ("clustered (16)", "pruned (0.5)"):
        ratio, acc, agree = float(rows[name][2]), float(rows[name][3]), float(rows[name][4])
        assert ratio < 0.8 and acc > 90 and agree > 95, (name, rows[name])
        assert acc >= float(rows["int8"][3]) - 3
    out = tmp_path / "notebooks" / "notebook05"
    assert (out / "digits_clustered_int8.tflite").exists() and (out / "digits_pruned_int8.tflite").exists()
