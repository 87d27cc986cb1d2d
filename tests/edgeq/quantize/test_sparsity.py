"""Weight clustering and pruning (edgeq.quantize.qat.sparsity): real tf_keras/Keras models, int8 through LiteRT."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from edgeq_device.tasks.evaluation import predict_arrays

from edgeq.cli import cli
from edgeq.comparison.run import compare
from edgeq.errors import InvalidArgumentError, QATError
from edgeq.quantize.lowbit.weight_stats import gzip_size, weight_stats
from edgeq.quantize.qat.sparsity import check_clusters, check_sparsity, cluster


@pytest.mark.parametrize("value", [1, 0, 257, 2.5, True, "16", None])
def test_clusters_outside_2_to_256_are_refused(value):
    with pytest.raises(InvalidArgumentError) as err:
        check_clusters(value)
    assert err.value.argument == "clusters" and "2 to 256" in str(err.value)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, -0.1, 1.5, math.nan, True, "0.5"])
def test_sparsity_outside_0_1_is_refused(value):
    with pytest.raises(InvalidArgumentError) as err:
        check_sparsity(value, "prune")
    assert err.value.argument == "prune"


@pytest.mark.parametrize("args, option", [
    (["--clusters", "1"], "--clusters"), (["--clusters", "300"], "--clusters"), (["--prune", "1.0"], "--prune"),
    (["--prune", "0"], "--prune"), (["--clusters", "16", "--prune", "0.5"], "--prune")])
def test_cli_bad_clusters_or_prune_is_one_line(args, option, tmp_path):
    result = CliRunner().invoke(cli, ["qat", "m.keras", "--train", "t", "-o", str(tmp_path), *args])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in result.output


def test_compare_trained_mode_needs_train():
    with pytest.raises(InvalidArgumentError) as err:
        compare("m.keras", calibration="c", evaluation="e", modes=["int8", "clustered"])
    assert err.value.argument == "train"


def _tiny_data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.3, (n, 8, 8, 1)).astype(np.float32)
    for i, c in enumerate(y):  # a bright row per class: learnable in a few steps
        x[i, 2 * c + 1, :, 0] += 0.7
    return x, y


def _tiny_model():  # type: ignore[no-untyped-def]
    """A tf_keras model (no Keras 3 rebuild) whose 3-weight head is too small for 4 clusters."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((8, 8, 1), name="image")
    h = tf_keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inp)
    h = tf_keras.layers.GlobalAveragePooling2D()(h)
    h = tf_keras.layers.Dense(12, activation="relu", name="hidden")(h)
    out = tf_keras.layers.Dense(3, activation="softmax", name="head", use_bias=False)(
        tf_keras.layers.Dense(1, name="squeeze")(h))
    return tf_keras.Model(inp, out, name="tiny")


def test_model_with_no_kernel_to_cluster_is_refused_before_training():
    """Fast: a real tiny model whose only kernel (3 weights) is too small for 4 clusters: one clear error."""
    import tf_keras

    inp = tf_keras.Input((8, 8, 1), name="image")
    out = tf_keras.layers.Dense(3, activation="softmax", name="head", use_bias=False)(
        tf_keras.layers.GlobalAveragePooling2D()(inp))
    x, y = _tiny_data(32)
    with pytest.raises(QATError) as err:
        cluster(tf_keras.Model(inp, out, name="headonly"), (x, y), clusters=4, progress=False)
    assert err.value.argument == "model" and "no layer of the model can be clustered" in str(err.value)
    assert "headonly" in str(err.value)


@pytest.mark.slow
def test_small_model_clusters_every_kernel_it_can_and_lists_the_rest():
    """4 clusters on a tiny model; the 3-weight head is too small to cluster: listed, left as it is.

    One weight scale per clustered kernel: the whole int8 kernel holds at most 4 codes
    (with tfmot's per-channel scales, or without tying the centroid copies, it held 5).
    """
    model = _tiny_model()
    assert np.unique(model.get_layer("conv").get_weights()[0]).size > 4  # so the checks below can fail
    x, y = _tiny_data(64)
    res = cluster(model, (x, y), clusters=4, epochs=1, batch_size=32, progress=False)
    assert set(res.weighted) == {"conv", "hidden", "squeeze"}
    assert {p.layer for p in res.skipped} == {"head"}
    assert all("not more than 4 clusters" in p.reason for p in res.skipped)
    assert "head" in str(res) and res.to_dict()["schema"] == "edgeq/sparsity/1"
    for name in ("conv", "hidden", "squeeze"):
        assert np.unique(res.float_model.get_layer(name).get_weights()[0]).size <= 4, name
    assert np.unique(res.float_model.get_layer("head").get_weights()[0]).size == 3
    int8 = res.convert(calibration=(x, y), samples=16)
    stats = {s.tensor.split("/")[1]: s for s in weight_stats(int8.model_bytes)}
    assert stats["quant_conv"].dtype == "INT8" and stats["quant_conv"].distinct <= 4
    assert stats["quant_hidden"].distinct <= 4
    out_q = predict_arrays(int8.model_bytes, x[:16])  # runs in the TFLite runtime
    assert out_q.shape == (16, 3) and np.isfinite(out_q).all()
    assert gzip_size(int8.model_bytes) < int8.size_bytes


@pytest.mark.slow
def test_digits_clustered_and_pruned_against_int8(demo_cnn, mnist_train, mnist_test, tmp_path):
    """The demo CNN on mnist5k through compare: int8, clustered(16) and pruned(0.5) measured side by side."""
    comp = compare(demo_cnn, calibration=mnist_train, evaluation=mnist_test, modes=["int8", "clustered", "pruned"],
                   train=mnist_train, clusters=16, sparsity=0.5, train_epochs=2, threads=[1], runs=5,
                   min_secs=0.05, max_secs=1.0, progress=False)
    rows = {r.name: r for r in comp.rows}
    assert set(rows) == {"keras", "int8", "clustered", "pruned"}
    int8 = rows["int8"]
    for name in ("clustered", "pruned"):
        r = rows[name]
        assert r.mode == "int8" and r.size_bytes and r.p50(1)
        assert r.top1 is not None and int8.top1 is not None and r.top1 >= int8.top1 - 0.03, (name, r.top1)
        assert r.agreement is not None and r.agreement >= 0.95
    clustered = weight_stats(comp.results["clustered"].model_bytes)
    assert clustered and all(s.dtype == "INT8" and s.distinct <= 16 for s in clustered)  # one scale per kernel
    pruned = weight_stats(comp.results["pruned"].model_bytes)
    assert all(abs(s.zero_fraction - 0.5) <= 0.02 for s in pruned), [s.zero_fraction for s in pruned]
    assert max(s.zero_fraction for s in weight_stats(comp.results["int8"].model_bytes)) < 0.2
    g8 = gzip_size(comp.results["int8"].model_bytes)
    assert gzip_size(comp.results["clustered"].model_bytes) < 0.6 * g8  # the goal; measured 0.53x
    assert rows["clustered"].top1 >= rows["keras"].top1 - 0.005
    assert gzip_size(comp.results["pruned"].model_bytes) < 0.8 * g8
    written = comp.save(tmp_path / "report")
    assert len({p.name for p in written.values() if p.suffix == ".tflite"}) == 3


@pytest.mark.slow
def test_cluster_preserving_qat_keeps_a_residual_cnns_accuracy(resnet8, digits_train_arrays, digits_test_arrays):
    """Clustering then cluster-preserving QAT on a residual CNN (ADDs, batch norms): the QAT epoch
    and the int8 file stay within a few points of the clustered model, and each kernel keeps its 16 values."""
    x, y = digits_train_arrays
    xt, yt = digits_test_arrays
    res = cluster(resnet8(), (x, y), clusters=16, validation=(xt, yt), progress=False)
    clustered = res.fine_tune_history["val_accuracy"][-1]
    assert clustered > 0.6  # clustering fine-tuning settled the one-epoch model's batch norms
    assert res.history["val_accuracy"][-1] >= clustered - 0.05
    int8 = res.convert()
    top1 = float((np.argmax(predict_arrays(int8.model_bytes, xt), axis=-1).ravel() == yt).mean())
    assert top1 >= clustered - 0.05, (top1, clustered)
    for layer in res.model.layers:
        inner = getattr(layer, "layer", None)
        kernels = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0] == "kernel"]
        if inner is not None and inner.name in res.weighted and kernels:
            assert len(np.unique(kernels[0].numpy())) <= 16, inner.name
