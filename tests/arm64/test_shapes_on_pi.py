"""The shapes segmenter, int8, evaluated on the emulated Raspberry Pi from its recorded task (no --task): the
same mIoU as on this x86 machine, as int8 outputs are bit-identical on both."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.arm64

SHAPES = Path(__file__).resolve().parents[2] / "datasets" / "shapes"


@pytest.mark.parametrize("runtime", ["litert"])
def test_segmenter_miou_on_the_pi_equals_x86(emulated_pi, shapes_segmenter_files, x86_pythons, runtime, tmp_path):
    model = emulated_pi.put(shapes_segmenter_files["int8"])
    images = emulated_pi.put(shutil.copytree(SHAPES / "val", tmp_path / "shapes_val"))
    masks = emulated_pi.put(shutil.copytree(SHAPES / "masks" / "val", tmp_path / "shapes_val_masks"))
    common = ["--json", "-", "--workers", "1", "--quiet"]
    res = emulated_pi.run([f"/opt/edgeq/{runtime}/bin/edgeq-device", "eval", model, images, "--masks", masks, *common])
    assert res.returncode == 0, res.stderr[-2000:]
    pi = json.loads(res.stdout)
    x86 = subprocess.run([x86_pythons[runtime], "-m", "edgeq_device.cli", "eval", str(shapes_segmenter_files["int8"]),
                          str(SHAPES / "val"), "--masks", str(SHAPES / "masks" / "val"), *common],
                         capture_output=True, text=True, timeout=300, check=False)
    assert x86.returncode == 0, x86.stderr[-2000:]
    host = json.loads(x86.stdout)
    assert pi["board"]["architecture"] == "aarch64" and pi["images"] == 64
    assert pi["miou"] > 0.3
    assert pi["miou"] == host["miou"] and pi["confusion"] == host["confusion"]
