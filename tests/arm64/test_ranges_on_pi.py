"""An int8 model with chosen activation ranges (``--ranges mse``) on the emulated Raspberry Pi.

It is a standard int8 ``.tflite``: both runtimes there (LiteRT, and tflite-runtime 2.14 on numpy<2)
run it and give the host LiteRT's int8 outputs bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edgeq_device.runtime import ModelRunner

import edgeq

pytestmark = pytest.mark.arm64

RUN = """
import json, platform, sys
import numpy as np
from edgeq_device.metadata import read_metadata
from edgeq_device.runtime import ModelRunner
model, inputs, out, runtime = sys.argv[1:5]
x = np.load(inputs)
r = ModelRunner(model, runtime=runtime)
np.save(out, np.concatenate([r.run(x[i:i + 1], dequantize_outputs=False)[0] for i in range(len(x))]))
meta = read_metadata(model)
print(json.dumps({"machine": platform.machine(), "runtime": r.runtime.name, "version": r.runtime.version,
                  "numpy": np.__version__, "ranges": meta.extra["ranges"]["method"]}))
"""


@pytest.mark.parametrize("runtime", ["tflite-runtime", "litert"])
def test_an_mse_ranges_model_runs_on_the_pi(emulated_pi, digits_cnn, digits_train_arrays, digits_test_arrays,
                                            tmp_path: Path, runtime: str) -> None:
    x = digits_train_arrays[0]
    res = edgeq.convert(digits_cnn, "int8", calibration=x[:100], samples=100, ranges="mse", progress=False)
    assert res.ranges is not None and res.ranges.narrowed >= 1  # ranges other than the converter's
    model = res.save(tmp_path / f"digits_ranges_mse_{runtime}.tflite")  # a name no other test puts on the Pi
    inputs = digits_test_arrays[0][:20]
    np.save(tmp_path / "ranges_inputs.npy", inputs)
    (tmp_path / "run_ranges.py").write_text(RUN)
    out = f"{emulated_pi.share_in}/ranges_{runtime}.npy"
    done = emulated_pi.run([emulated_pi.python(runtime), emulated_pi.put(tmp_path / "run_ranges.py"), emulated_pi.put(model),
                            emulated_pi.put(tmp_path / "ranges_inputs.npy"), out, runtime], timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["machine"] == "aarch64" and info["runtime"] == runtime and info["ranges"] == "mse"
    if runtime == "tflite-runtime":
        assert info["version"].startswith("2.14") and info["numpy"].startswith("1.")
    host = ModelRunner(res.model_bytes, probe=False)
    expected = np.concatenate([host.run([inputs[i:i + 1]], dequantize_outputs=False)[0] for i in range(len(inputs))])
    on_pi = np.load(emulated_pi.share / Path(out).name)
    assert on_pi.shape == expected.shape and np.array_equal(on_pi, expected)
