"""edgeq-device on an emulated Raspberry Pi 4 (aarch64, Debian bookworm, qemu cortex-a72).

The same models give the same answers as on x86: int8 outputs bit-identical, float32
within 1e-6, with both runtimes (LiteRT on numpy 2, tflite-runtime 2.14 on numpy<2);
bench and eval write valid JSON. Emulated timings say nothing about a real Pi's speed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeq_device.model.metadata import read_metadata
from edgeq_device.run.images import list_image_folder

pytestmark = pytest.mark.arm64

RUNTIMES = ["litert", "tflite-runtime"]

RUN_MODEL = """
import json, platform, sys
import numpy as np
from edgeq_device.run.runtime import ModelRunner
inputs, runtime = sys.argv[1:3]
x = np.load(inputs)
done = {}
for job in sys.argv[3:]:  # MODEL,OUT,XNNPACK: each model with its own interpreter
    model, out, xnnpack = job.split(",")
    r = ModelRunner(model, runtime=runtime, xnnpack=xnnpack == "1")
    raw = [r.run(x[i:i + 1], dequantize_outputs=False)[0] for i in range(len(x))]
    np.save(out, np.concatenate(raw))
    done[out] = {"machine": platform.machine(), "runtime": r.runtime.name, "version": r.runtime.version,
                 "numpy": np.__version__}
print(json.dumps(done))
"""
# What the output tests compare: each model of these, with and without XNNPACK (one process per runtime
# and machine runs the four: a Python start under emulation costs seconds).
OUTPUT_MODES = ("int8-io", "float32")


@pytest.fixture(scope="module")
def inputs(tiny_models_dir, eval_folder) -> np.ndarray:
    """Real MNIST test digits, preprocessed the way the model's metadata says."""
    meta = read_metadata(tiny_models_dir["float32"])
    assert meta is not None and meta.preprocess is not None
    listing = list_image_folder(eval_folder)
    return np.stack([meta.preprocess.load(p) for p in listing.paths]).astype(np.float32)


@pytest.fixture(scope="module")
def shared(emulated_pi, tiny_models_dir, eval_folder, inputs, tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("arm64in")
    np.save(tmp / "inputs.npy", inputs)
    (tmp / "run_model.py").write_text(RUN_MODEL)
    return {
        "host_inputs": tmp / "inputs.npy",
        "inputs": emulated_pi.put(tmp / "inputs.npy"),
        "script": emulated_pi.put(tmp / "run_model.py"),
        "float32": emulated_pi.put(tiny_models_dir["float32"]),
        "int8": emulated_pi.put(tiny_models_dir["int8"]),
        "int8-io": emulated_pi.put(tiny_models_dir["int8-io"]),
        "data": emulated_pi.put(eval_folder),
    }


def _jobs(models: dict[str, str], folder: str, tag: str) -> tuple[list[str], dict[tuple[str, bool], str]]:
    outs = {(mode, xnnpack): f"{folder}/out_{tag}_{mode}_{int(xnnpack)}.npy"
            for mode in OUTPUT_MODES for xnnpack in (False, True)}
    return [f"{models[mode]},{out},{int(xnnpack)}" for (mode, xnnpack), out in outs.items()], outs


@pytest.fixture(scope="module")
def outputs(emulated_pi, shared, tiny_models_dir, x86_pythons):  # type: ignore[no-untyped-def]
    """``outputs(machine, runtime)[(mode, xnnpack)]``: ``(raw outputs, run info)`` of the model of
    :data:`OUTPUT_MODES` on the test digits, on the Pi (``"pi"``) or on this x86 machine (``"x86"``),
    with the same script, runtime and kernel choice; computed once per machine and runtime."""
    done: dict[tuple[str, str], dict[tuple[str, bool], tuple[np.ndarray, dict]]] = {}

    def get(machine: str, runtime: str) -> dict[tuple[str, bool], tuple[np.ndarray, dict]]:
        if (machine, runtime) in done:
            return done[(machine, runtime)]
        if machine == "pi":
            jobs, outs = _jobs({m: shared[m] for m in OUTPUT_MODES}, emulated_pi.share_in, runtime)
            res = emulated_pi.run([emulated_pi.python(runtime), shared["script"], shared["inputs"], runtime, *jobs])
            local = {k: emulated_pi.share / Path(v).name for k, v in outs.items()}
        else:
            folder = shared["host_inputs"].parent
            jobs, outs = _jobs({m: str(tiny_models_dir[m]) for m in OUTPUT_MODES}, str(folder), f"x86_{runtime}")
            res = subprocess.run([x86_pythons[runtime], str(folder / "run_model.py"), str(shared["host_inputs"]),
                                  runtime, *jobs], capture_output=True, text=True, timeout=300)
            local = {k: Path(v) for k, v in outs.items()}
        assert res.returncode == 0, res.stderr[-2000:]
        infos = json.loads(res.stdout.strip().splitlines()[-1])
        done[(machine, runtime)] = {k: (np.load(local[k]), infos[outs[k]]) for k in outs}
        return done[(machine, runtime)]

    return get


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("xnnpack", [False, True], ids=["reference-kernels", "xnnpack"])
def test_int8_outputs_identical_to_x86(outputs, inputs, runtime, xnnpack):
    pi, info = outputs("pi", runtime)[("int8-io", xnnpack)]
    assert info["machine"] == "aarch64" and info["runtime"] == runtime
    assert info["numpy"].startswith("2." if runtime == "litert" else "1.")
    x86, x86_info = outputs("x86", runtime)[("int8-io", xnnpack)]
    assert x86_info["machine"] == "x86_64" and x86_info["runtime"] == runtime
    assert pi.dtype == x86.dtype == np.int8
    assert pi.shape == x86.shape == (len(inputs), 10)
    if runtime == "litert" and not xnnpack:
        # LiteRT's builtin optimized int8 kernels round differently on aarch64 and x86_64, and a
        # softmax output carries a rounding step of its input further (measured on the digits CNN:
        # a few outputs 1-2 LSB apart); the default XNNPACK path is bit-identical.
        diff = np.abs(pi.astype(np.int16) - x86.astype(np.int16))
        print(f"reference kernels: {(diff > 0).sum()} of {diff.size} outputs differ, at most {diff.max()} LSB")
        assert diff.max() <= 2 and (diff > 0).mean() < 0.05
    else:
        np.testing.assert_array_equal(pi, x86)
    assert len(np.unique(x86)) > 20  # real, varied outputs, not a constant


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("xnnpack", [False, True], ids=["reference-kernels", "xnnpack"])
def test_float32_outputs_match_x86(outputs, runtime, xnnpack):
    pi, info = outputs("pi", runtime)[("float32", xnnpack)]
    assert info["machine"] == "aarch64" and info["runtime"] == runtime
    x86, x86_info = outputs("x86", runtime)[("float32", xnnpack)]
    assert x86_info["machine"] == "x86_64" and x86_info["runtime"] == runtime
    assert pi.dtype == x86.dtype == np.float32 and pi.shape == x86.shape
    err = float(np.abs(pi - x86).max())
    print(f"float32 {runtime} xnnpack={xnnpack}: max |arm64 - x86| = {err:.3g}, "
          f"relative to the largest output {err / float(np.abs(x86).max()):.3g}")
    np.testing.assert_allclose(pi, x86, rtol=1e-6, atol=1e-6)
    # the model really computes something: the digits are told apart
    assert (pi.argmax(1) == x86.argmax(1)).all() and len(set(pi.argmax(1))) > 3


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bench_json_on_the_pi(emulated_pi, shared, runtime):
    res = emulated_pi.run([f"/opt/edgeq/{runtime}/bin/edgeq-device", "bench", shared["int8"], "--json", "-",
                           "--runs", "5", "--min-secs", "0", "--warmup", "1", "--threads", "1"])
    assert res.returncode == 0, res.stderr[-2000:]
    payload = json.loads(res.stdout)
    assert payload["schema"] == "edgeq-device/bench/1"
    assert payload["runtime"] == runtime and payload["threads"] == 1
    assert payload["latency"]["count"] >= 5 and payload["latency"]["p50_us"] > 0
    assert payload["board"]["architecture"] == "aarch64"
    # a Pi 4's core (qemu's /proc/cpuinfo) under Raspberry Pi OS bookworm's Python
    assert "Cortex-A72" in payload["board"]["cpu_model"] and "bookworm" in payload["board"]["os"].lower()
    assert payload["board"]["python"].startswith("3.11.")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_eval_json_on_the_pi_agrees_with_x86(emulated_pi, shared, tiny_models_dir, eval_folder, runtime):
    cmd = ["eval", shared["int8"], shared["data"], "--json", "-", "--workers", "1", "--quiet"]
    res = emulated_pi.run([f"/opt/edgeq/{runtime}/bin/edgeq-device", *cmd])
    assert res.returncode == 0, res.stderr[-2000:]
    pi = json.loads(res.stdout)
    assert pi["schema"] == "edgeq-device/eval/1" and pi["runtime"] == runtime
    from click.testing import CliRunner
    from edgeq_device.cli.commands import cli as device_cli

    host = CliRunner().invoke(device_cli, ["eval", str(tiny_models_dir["int8"]), str(eval_folder), "--json", "-",
                                           "--workers", "1", "--quiet", "--runtime", "litert"])
    assert host.exit_code == 0, host.output
    x86 = json.loads(host.stdout)
    # int8 on both: the same predictions, so the same accuracy, to the last digit
    assert pi["images"] == x86["images"] == 50
    assert (pi["top1"], pi["top5"]) == (x86["top1"], x86["top5"])
    assert pi["per_class"] == x86["per_class"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_pooled_eval_on_the_pi_equals_one_worker(emulated_pi, shared, runtime):
    """Worker processes on the board (fork there; spawn when asked): each image's prediction as one worker's."""
    runs = {}
    for name, prefix, workers in (("one", [], "1"), ("fork", [], "2"), ("spawn", ["env", "EDGEQ_POOL_START=spawn"], "2")):
        res = emulated_pi.run([*prefix, f"/opt/edgeq/{runtime}/bin/edgeq-device", "eval", shared["int8"], shared["data"],
                               "--json", "-", "--workers", workers, "--predictions", "--quiet"])
        assert res.returncode == 0, res.stderr[-2000:]
        runs[name] = json.loads(res.stdout)
    assert runs["one"]["workers"] == 1 and runs["fork"]["workers"] == runs["spawn"]["workers"] == 2
    for name in ("fork", "spawn"):
        assert runs[name]["predictions"] == runs["one"]["predictions"]
        assert runs[name]["files"] == runs["one"]["files"] and len(runs[name]["files"]) == 50
        assert runs[name]["top1"] == runs["one"]["top1"]
