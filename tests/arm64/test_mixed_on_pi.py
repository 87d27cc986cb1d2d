"""A mixed int8/int16 model (16-bit activations on chosen layers) on the emulated Raspberry Pi.

Both runtimes there (LiteRT on numpy 2, tflite-runtime 2.14 on numpy<2) load and run it
and answer as LiteRT does on this x86 machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edgeq_device.run.runtime import ModelRunner

from edgeq import convert
from edgeq.quantize.precision.mixed import int16_tensors

pytestmark = pytest.mark.arm64

RUN = """
import json, platform, sys
import numpy as np
from edgeq_device.run.runtime import ModelRunner
model, inputs, out, runtime = sys.argv[1:5]
x = np.load(inputs)
r = ModelRunner(model, runtime=runtime)
np.save(out, np.concatenate([np.asarray(r.run(x[i:i + 1])[0]).reshape(1, -1) for i in range(len(x))]))
print(json.dumps({"machine": platform.machine(), "runtime": r.runtime.name, "version": r.runtime.version}))
"""


@pytest.mark.parametrize("runtime", ["litert", "tflite-runtime"])
def test_mixed_model_runs_on_the_pi_as_on_x86(emulated_pi, digits_cnn, digits_train_arrays, digits_test_arrays,
                                              tmp_path, runtime):
    x, _ = digits_train_arrays
    xt = digits_test_arrays[0][:40]
    mixed = convert(digits_cnn, "int8", calibration=x[:100], samples=100, a16_layers=2)
    assert int16_tensors(mixed.model_bytes)
    model = mixed.save(tmp_path / "mixed.tflite")
    np.save(tmp_path / "x.npy", xt)
    (tmp_path / "run.py").write_text(RUN)
    out = f"{emulated_pi.share_in}/mixed_{runtime}.npy"
    res = emulated_pi.run([emulated_pi.python(runtime), emulated_pi.put(tmp_path / "run.py"),
                           emulated_pi.put(model), emulated_pi.put(tmp_path / "x.npy"), out, runtime])
    assert res.returncode == 0, res.stderr[-2000:]
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["machine"] == "aarch64" and info["runtime"] == runtime
    pi = np.load(emulated_pi.share / Path(out).name)
    runner = ModelRunner(mixed.model_bytes)
    host = np.concatenate([np.asarray(runner.run(xt[i:i + 1])[0]).reshape(1, -1) for i in range(len(xt))])
    print(f"{runtime} {info['version']} on the Pi: max |pi - x86| = {np.abs(pi - host).max():.3g}")
    assert pi.shape == host.shape and (pi.argmax(1) == host.argmax(1)).all()
    np.testing.assert_allclose(pi, host, atol=2.0 / 256)  # at most a step or two of the int8 softmax output
    assert len(set(host.argmax(1))) > 3
