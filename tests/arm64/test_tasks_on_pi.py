"""Task evaluation on the emulated Raspberry Pi: fidelity and array classification, no TensorFlow there.

The float model's outputs, computed on this x86 machine, are the reference the Pi
measures its int8 model against; int8 outputs are bit-identical on both machines,
so the Pi's SQNR, cosine and arg-max agreement equal the x86 run's.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.metadata import read_metadata
from edgeq_device.run.images import list_image_folder
from edgeq_device.run.runtime import ModelRunner
from edgeq_device.tasks.task_loop import output_keys

pytestmark = pytest.mark.arm64


def _on_x86(python: str, *args: str) -> dict:
    """``edgeq-device ARGS`` on this x86 machine with the same runtime (its JSON)."""
    res = subprocess.run([python, "-m", "edgeq_device.cli", *args], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


@pytest.mark.parametrize("runtime", ["litert", "tflite-runtime"])
def test_fidelity_and_npy_classification_on_the_pi_equal_x86(emulated_pi, tiny_models_dir, eval_folder, tmp_path,
                                                               x86_pythons, runtime):
    meta = read_metadata(tiny_models_dir["float32"])
    assert meta is not None and meta.preprocess is not None
    listing = list_image_folder(eval_folder)
    x = np.stack([meta.preprocess.load(p) for p in listing.paths]).astype(np.float32)
    ref = np.concatenate([ModelRunner(tiny_models_dir["float32"]).run(x[i:i + 1])[0] for i in range(len(x))])
    key = output_keys(read_flat_model(tiny_models_dir["int8"]))[0]
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "ref.npz", **{key: ref})
    np.save(tmp_path / "y.npy", np.asarray(listing.labels, np.int64))
    on_pi = {name: emulated_pi.put(tmp_path / name) for name in ("x.npy", "ref.npz", "y.npy")}
    model = emulated_pi.put(tiny_models_dir["int8"])
    exe = f"/opt/edgeq/{runtime}/bin/edgeq-device"
    common = ["--json", "-", "--workers", "1", "--quiet"]

    res = emulated_pi.run([exe, "eval", model, "--inputs", on_pi["x.npy"], "--reference", on_pi["ref.npz"], *common])
    assert res.returncode == 0, res.stderr[-2000:]
    pi = json.loads(res.stdout)
    x86 = _on_x86(x86_pythons[runtime], "eval", str(tiny_models_dir["int8"]), "--inputs", str(tmp_path / "x.npy"),
                  "--reference", str(tmp_path / "ref.npz"), *common)
    assert pi["schema"] == "edgeq-device/fidelity/1" and pi["board"]["architecture"] == "aarch64"
    p, h = pi["outputs"][0], x86["outputs"][0]
    assert p["name"] == key and 10 < p["sqnr_db"] < 60
    assert p["sqnr_db"] == pytest.approx(h["sqnr_db"], rel=1e-9) and p["cosine"] == pytest.approx(h["cosine"])
    assert p["argmax_agreement"] == h["argmax_agreement"] and p["max_abs_error"] == pytest.approx(h["max_abs_error"])

    res = emulated_pi.run([exe, "eval", model, "--inputs", on_pi["x.npy"], "--labels-npy", on_pi["y.npy"], *common])
    assert res.returncode == 0, res.stderr[-2000:]
    x86 = _on_x86(x86_pythons[runtime], "eval", str(tiny_models_dir["int8"]), "--inputs", str(tmp_path / "x.npy"),
                  "--labels-npy", str(tmp_path / "y.npy"), *common)
    assert json.loads(res.stdout)["top1"] == x86["top1"] > 0.5
