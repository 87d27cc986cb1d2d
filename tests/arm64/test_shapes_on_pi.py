"""The shapes segmenter, int8, evaluated on the emulated Raspberry Pi from its recorded task (no --task): the
mIoU of this x86 machine, to a few pixels of 590,000.

Unlike the digits CNN's, this model's int8 outputs are not bit-identical on the two machines
(it has bilinear upsampling and additions of two quantized tensors, which the digits CNN has
not): measured with LiteRT, about 26 of the 589,824 pixels, near a tie between two classes,
change their arg-max.
"""

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
    differ = sum(abs(a - b) for ra, rb in zip(pi["confusion"], host["confusion"]) for a, b in zip(ra, rb))
    pixels = sum(map(sum, host["confusion"]))
    assert pixels == 64 * 96 * 96 and differ <= pixels * 1e-3, (differ, pixels)
    assert pi["miou"] == pytest.approx(host["miou"], abs=2e-3)
    print(f"pi mIoU {pi['miou']:.5f}, x86 {host['miou']:.5f}; confusion entries differ by {differ} of {pixels}")
