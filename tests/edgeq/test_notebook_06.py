"""notebooks/06_microcontroller.ipynb runs top to bottom: the digits CNN to a C array that fits a named board."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.slow


def test_notebook_06_runs(tmp_path, execute_notebook):
    pytest.importorskip("tflite_micro")
    outputs = execute_notebook("06_microcontroller.ipynb", timeout=600)
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "runs all" in text and "bit-exact with LiteRT BUILTIN_REF on 200 inputs" in text, text[-3000:]
    arena = int(re.search(r"arena: ([\d,]+) bytes", text).group(1).replace(",", ""))
    assert re.search(r"arduino-nano-33-ble-sense: fits \(RAM [\d.]+ KiB left", text), text[-3000:]
    fw = tmp_path / "notebooks" / "notebook06" / "firmware"
    header = (fw / "digits_model.h").read_text()
    assert re.search(r"#define DIGITS_TENSOR_ARENA_SIZE (\d+)", header).group(1) == str(arena)
    assert "AddConv2D" in (fw / "digits_op_resolver.h").read_text()
    ratio = float(re.search(r"= ([\d.]+)x the int8 model's", text).group(1))
    assert ratio <= 0.6 and "the same outputs in TFLM as uncompressed, bit for bit" in text, text[-2000:]
