"""notebooks/04_detection_and_segmentation.ipynb runs top to bottom and shows its table of task metrics."""

from __future__ import annotations

import json
import re

import pytest

pytestmark = pytest.mark.slow


def test_notebook_04_runs(tmp_path, execute_notebook):
    outputs = execute_notebook("04_detection_and_segmentation.ipynb", timeout=900)
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "detection {'class_offset': 1, 'num_classes': 3} ('circle', 'square', 'triangle')" in text
    rows = {(m.group(1), m.group(2)): m.group(3) for m in
            re.finditer(r"^(detector|segmenter)\s+(\w+)\s+(.*)$", text, re.MULTILINE)}
    assert set(rows) == {("detector", m) for m in ("float32", "dynamic", "float16", "int8", "int16x8")} | {
        ("segmenter", m) for m in ("float32", "float16", "int8")}
    det_int8 = [float(v) for v in rows[("detector", "int8")].split() if v != "-"]
    assert det_int8[1] >= 0.4 and det_int8[2] > 10 and det_int8[3] > 10  # mAP@.5, SQNR of boxes and scores, dB
    seg_int8 = [float(v) for v in rows[("segmenter", "int8")].split() if v != "-"]
    assert seg_int8[0] > 0.3 and seg_int8[1] > 10  # mIoU, SQNR of the scores
    assert any("text/html" in o.get("data", {}) for o in outputs), "the detection result did not render"
    saved = json.loads((tmp_path / "notebooks" / "notebook04" / "detector_int8_eval.json").read_text())
    assert saved["map50"] >= 0.4
