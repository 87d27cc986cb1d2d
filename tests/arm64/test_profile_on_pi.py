"""edgeq-device profile on the emulated Raspberry Pi, with both runtimes.

Emulated times say nothing about a real Pi's speed; the test checks that the profile runs
there, accounts for every operator and writes its JSON.
"""

from __future__ import annotations

import json

import pytest
from edgeq_device.model.flatbuffer import read_flat_model

pytestmark = pytest.mark.arm64


@pytest.mark.parametrize("runtime", ["litert", "tflite-runtime"])
def test_profile_on_the_pi(emulated_pi, tiny_models_dir, runtime):
    model = emulated_pi.put(tiny_models_dir["int8"])
    res = emulated_pi.run([f"/opt/edgeq/{runtime}/bin/edgeq-device", "profile", model, "--json", "-", "--runs", "5",
                           "--min-secs", "0", "--threads", "1", "-q"], timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout)
    assert doc["schema"] == "edgeq-device/profile/1" and doc["runtime"] == runtime
    assert doc["board"]["architecture"] == "aarch64" and doc["whole_p50_us"] > 0
    ops = read_flat_model(tiny_models_dir["int8"]).main.operators
    assert [o["index"] for o in doc["operators"]] == [op.index for op in ops]
    timed = [o for o in doc["operators"] if o["p50_us"] is not None]
    assert len(timed) >= 0.95 * len(ops), [o["note"] for o in doc["operators"]]
