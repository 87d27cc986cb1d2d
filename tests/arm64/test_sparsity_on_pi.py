"""Clustered and pruned int8 files on the emulated Raspberry Pi (aarch64, tflite-runtime 2.14, numpy<2).

The digits CNN is clustered (16 values per kernel, one weight scale per kernel) and pruned
(50%) on the host, each converted to int8; the Pi runs both files under tflite-runtime 2.14
and must give the same top-1 class as LiteRT on this machine for every sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edgeq_device.run.runtime import ModelRunner

from edgeq.quantize.lowbit.weight_stats import weight_stats
from edgeq.quantize.qat.sparsity import cluster, prune

pytestmark = pytest.mark.arm64

RUN_MODEL = """
import json, platform, sys
import numpy as np
from edgeq_device.run.runtime import ModelRunner
model, inputs, out = sys.argv[1:4]
x = np.load(inputs)
r = ModelRunner(model, runtime="tflite-runtime")
np.save(out, np.concatenate([r.run(x[i:i + 1])[0] for i in range(len(x))]))
print(json.dumps({"machine": platform.machine(), "runtime": r.runtime.name, "version": r.runtime.version}))
"""


def test_clustered_and_pruned_int8_give_the_host_top1_under_tflite_runtime_on_the_pi(
        emulated_pi, digits_cnn, digits_train_arrays, digits_test_arrays, tmp_path):
    x_train, y_train = digits_train_arrays[0][:1024], digits_train_arrays[1][:1024]
    x = digits_test_arrays[0][:24]
    common = dict(epochs=1, samples=None, progress=False)
    files = {
        "clustered": cluster(digits_cnn, (x_train, y_train), clusters=16, **common),
        "pruned": prune(digits_cnn, (x_train, y_train), sparsity=0.5, **common),
    }
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "run_model.py").write_text(RUN_MODEL)
    inputs, script = emulated_pi.put(tmp_path / "x.npy"), emulated_pi.put(tmp_path / "run_model.py")
    for name, result in files.items():
        path = result.convert(calibration=(x_train, y_train), samples=64).save(tmp_path / f"digits_{name}.tflite")
        stats = weight_stats(path)
        if name == "clustered":
            assert all(s.distinct <= 16 for s in stats), [s.distinct for s in stats]
        else:
            assert all(s.zero_fraction >= 0.45 for s in stats), [s.zero_fraction for s in stats]
        host = np.concatenate([ModelRunner(path).run(x[i:i + 1])[0] for i in range(len(x))])
        out = f"{emulated_pi.share_in}/out_{name}.npy"
        res = emulated_pi.run([emulated_pi.python("tflite-runtime"), script, emulated_pi.put(Path(path)), inputs, out])
        assert res.returncode == 0, res.stderr[-2000:]
        info = json.loads(res.stdout.strip().splitlines()[-1])
        assert info["machine"] == "aarch64" and info["runtime"] == "tflite-runtime" and info["version"] == "2.14.0"
        on_pi = np.load(emulated_pi.share / Path(out).name)
        assert on_pi.shape == host.shape == (len(x), 10)
        assert (on_pi.argmax(-1) == host.argmax(-1)).all(), name
        assert len(set(host.argmax(-1))) > 3  # real predictions, not one class: the comparison can fail
