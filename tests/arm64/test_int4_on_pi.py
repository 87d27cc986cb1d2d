"""An int4 model (4-bit weights, float activations) on the emulated Raspberry Pi 4.

LiteRT on aarch64 gives the classes LiteRT gives on x86 (outputs within 0.03: its hybrid kernels
round the on-the-fly activation quantization differently on the two). tflite-runtime 2.14 has no int4
kernels: its raw interpreter loads the model and answers wrongly, so edgeq-device refuses
the pairing with one line, and ``edgeq-device info`` says so up front.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgeq

pytestmark = pytest.mark.arm64

RAW = """
import sys
import numpy as np
from tflite_runtime.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors()
x = np.load(sys.argv[2]); i, o = it.get_input_details()[0], it.get_output_details()[0]
out = []
for a in x:
    it.set_tensor(i["index"], a[None]); it.invoke(); out.append(it.get_tensor(o["index"])[0].copy())
np.save(sys.argv[3], np.array(out))
"""

RUN = """
import sys
import numpy as np
from edgeq_device.run.runtime import ModelRunner
r = ModelRunner(sys.argv[1], runtime="litert")
np.save(sys.argv[3], np.concatenate([r.run(a[None])[0] for a in np.load(sys.argv[2])]))
"""


@pytest.fixture(scope="module")
def int4_files(emulated_pi, digits_cnn, digits_train_arrays, digits_test_arrays, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int4pi")
    res = edgeq.convert(digits_cnn, "int4", calibration=digits_train_arrays[0][:64], samples=64, progress=False)
    model = res.save(tmp / "digits_int4.tflite")
    x = digits_test_arrays[0][:20]
    np.save(tmp / "x.npy", x)
    (tmp / "raw.py").write_text(RAW)
    (tmp / "run.py").write_text(RUN)
    host = np.concatenate([r[None] for r in _litert_host(model, x)])
    return {"host": host, **{p.name: emulated_pi.put(p) for p in (model, tmp / "x.npy", tmp / "raw.py",
                                                                  tmp / "run.py")}}


def _litert_host(model: Path, x: np.ndarray) -> list[np.ndarray]:
    from edgeq_device.run.runtime import ModelRunner

    runner = ModelRunner(model, runtime="litert")
    return [runner.run(a[None])[0][0] for a in x]


def test_litert_on_the_pi_runs_int4_as_on_x86(emulated_pi, int4_files) -> None:  # type: ignore[no-untyped-def]
    out = f"{emulated_pi.share_in}/litert_int4.npy"
    res = emulated_pi.run([emulated_pi.python("litert"), int4_files["run.py"], int4_files["digits_int4.tflite"],
                           int4_files["x.npy"], out])
    assert res.returncode == 0, res.stderr[-2000:]
    pi = np.load(emulated_pi.share / Path(out).name)
    host = int4_files["host"]
    assert pi.shape == host.shape and np.isfinite(pi).all()
    assert (pi.argmax(1) == host.argmax(1)).all() and len(set(host.argmax(1))) > 3
    # Not bit-identical: the hybrid (float activation, int4 weight) kernels quantize activations on the fly
    # and round differently on aarch64 and x86_64 (measured: 13 of 200 softmax outputs more than 1e-3 apart,
    # at most 0.0076), the classes the same.
    diff = float(np.abs(pi - host).max())
    print(f"int4 LiteRT: max |arm64 - x86| = {diff:.3g}")
    assert diff < 0.03


def test_tflite_runtime_is_refused_with_one_line_and_info_says_so(emulated_pi, int4_files) -> None:  # type: ignore[no-untyped-def]
    out = f"{emulated_pi.share_in}/raw_int4.npy"
    raw = emulated_pi.run([emulated_pi.python("tflite-runtime"), int4_files["raw.py"],
                           int4_files["digits_int4.tflite"], int4_files["x.npy"], out])
    if raw.returncode == 0:  # it loads and answers: wrongly (NaN, or other classes)
        got = np.load(emulated_pi.share / Path(out).name)
        host = int4_files["host"]
        wrong = ~np.isfinite(got).all(axis=1) | (got.argmax(1) != host.argmax(1))
        print(f"tflite-runtime 2.14 raw interpreter: {wrong.sum()} of {len(got)} int4 answers wrong")
        assert wrong.mean() > 0.5, "tflite-runtime now runs int4: lift edgeq_device.model.int4's refusal"
    cli = "/opt/edgeq/tflite-runtime/bin/edgeq-device"
    bench = emulated_pi.run([cli, "bench", int4_files["digits_int4.tflite"], "--runs", "2", "--min-secs", "0"])
    assert bench.returncode != 0 and "Traceback" not in bench.stderr
    lines = [ln for ln in bench.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "INT4" in lines[0] and "tflite-runtime" in lines[0] and "litert" in lines[0], lines
    info = emulated_pi.run([cli, "info", int4_files["digits_int4.tflite"]])
    assert info.returncode == 0, info.stderr[-2000:]
    assert any(ln.startswith("4-bit") and "tflite-runtime 2.14" in ln for ln in info.stdout.splitlines())
    as_json = emulated_pi.run([cli, "info", int4_files["digits_int4.tflite"], "--json", "-"])
    assert json.loads(as_json.stdout)["int4_tensors"] == 4
