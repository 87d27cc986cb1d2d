"""edgeq-device stands alone: no TensorFlow or Keras imported, and it installs and runs by itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
import edgeq_device
import edgeq_device.cli.commands
from edgeq_device import benchmark, evaluate, model_info, predict, list_image_folder, model_preprocess
model, data = sys.argv[1], sys.argv[2]
info = model_info(model)
bench = benchmark(model, runs=3, min_secs=0, warmup=1)
ev = evaluate(model, data, limit=20)
out, _ = predict(model, list_image_folder(data).sample(5), model_preprocess(model), workers=2)
print(json.dumps({
    "tensorflow": sorted(m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")),
    "keras": sorted(m for m in sys.modules if m in ("keras", "tf_keras") or m.startswith(("keras.", "tf_keras."))),
    "edgeq": sorted(m for m in sys.modules if m == "edgeq" or m.startswith("edgeq.")),
    "runtime": bench.runtime, "images": ev.images, "ops": info.num_ops, "outputs": list(out.shape),
}))
"""


def test_measuring_imports_neither_tensorflow_nor_keras(models, small_test_dir):
    env = {k: v for k, v in os.environ.items() if k != "EDGEQ_RUNTIME"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(models["int8_io_uint8"]), str(small_test_dir)],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["tensorflow"] == [] and seen["keras"] == [] and seen["edgeq"] == []
    assert seen["runtime"] == "litert" and seen["images"] == 20 and seen["outputs"] == [5, 10]


@pytest.mark.slow  # a fresh venv and a pip install of edgeq-device[litert]
def test_device_package_installs_alone_and_benchmarks(models, tmp_path):
    src = tmp_path / "device"
    shutil.copytree(REPO / "device", src,
                    ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__", "dist"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEQ_RUNTIME", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    install = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "--quiet", f"{src}[litert]"],
                             capture_output=True, text=True, timeout=600, env=env, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    probe = subprocess.run([str(bindir / "python"), "-c",
                            "import importlib.util as u; print(u.find_spec('tensorflow'), u.find_spec('edgeq'))"],
                           capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    assert probe.stdout.split() == ["None", "None"]
    proc = subprocess.run([str(bindir / "edgeq-device"), "bench", str(models["int8"]), "--runs", "5",
                           "--min-secs", "0", "--json", "-"],
                          capture_output=True, text=True, timeout=120, env=env, check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["schema"] == "edgeq-device/bench/1"
    assert result["runtime"] == "litert" and result["latency"]["count"] >= 5
    assert result["latency"]["min_us"] <= result["latency"]["p50_us"] <= result["latency"]["max_us"]
