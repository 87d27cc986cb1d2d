"""Labels never shift: convert, compare, the budget search, qat and deploy number classes alike.

A folder without some classes (empty class folders, or only classes 3 and 7) keeps folder
``k`` = output ``k``; the labels stored at convert are one per output or refused; the
converted model evaluates on its own calibration folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from edgeq_device import LabelMismatchError
from edgeq_device import evaluate as device_evaluate
from label_folders import class_files, plain_litert_top1, subset

from edgeq import convert
from edgeq.cli import cli


@pytest.fixture(scope="module")
def digits(digits_cnn):
    """The session's trained digits CNN (10 outputs)."""
    return digits_cnn


@pytest.fixture(scope="module")
def calib_with_empty(mnist_train, tmp_path_factory):
    """Calibration digits 0..9 with classes 0, 4 and 8 left empty, as a test subset would be."""
    root = tmp_path_factory.mktemp("calib") / "calib"
    return subset(mnist_train, root, {d: None for d in range(10) if d not in (0, 4, 8)}, per_class=6,
                  empty=("0", "4", "8"))


@pytest.mark.slow
def test_convert_stores_one_label_per_output_and_evaluates_on_its_own_folder(digits, calib_with_empty, tmp_path):
    with pytest.warns(UserWarning, match=r"class folder\(s\) with no image.*0, 4, 8"):
        res = convert(digits, "int8", calibration=calib_with_empty, samples=20)
    assert res.metadata.labels == tuple(str(d) for d in range(10))
    model = res.save(tmp_path / "digits_int8.tflite")
    files = class_files(calib_with_empty, {str(d): d for d in range(10)})
    ref, n = plain_litert_top1(res.model_bytes, files), len(files)
    assert n == 42 and ref > 0.6
    with pytest.warns(UserWarning):
        r = device_evaluate(model, calib_with_empty)
    assert r.labels_from == "metadata" and r.top1 == pytest.approx(ref, abs=0)
    proc = subprocess.run([sys.executable, "-m", "edgeq_device.cli", "eval", str(model), str(calib_with_empty), "-q"],
                          capture_output=True, text=True, check=False, env={**os.environ, "EDGEQ_PROGRESS": "0"})
    assert proc.returncode == 0, proc.stderr
    assert f"top-1      {ref:.4f}" in proc.stdout
    assert "labels     from metadata (folders named after the labels): 0→0, 1→1, 2→2, 3→3, 4→4" in proc.stdout


@pytest.mark.slow
def test_label_count_different_from_outputs_is_refused_at_convert(digits, mnist_train, tmp_path):
    with pytest.raises(LabelMismatchError, match="3 labels for a model with 10 outputs") as e:
        convert(digits, "float32", labels=["a", "b", "c"])
    assert e.value.argument == "labels" and "--labels" in str(e.value)
    named = subset(mnist_train, tmp_path / "named", {3: "three", 7: "seven"}, per_class=3)
    with pytest.raises(LabelMismatchError, match="2 class folders but the model has 10 outputs") as e:
        convert(digits, "int8", calibration=named, samples=4)
    assert e.value.argument == "calibration" and "--labels" in str(e.value)
    beyond = subset(mnist_train, tmp_path / "beyond", {3: None, 7: "10"}, per_class=3)
    with pytest.raises(LabelMismatchError, match="class folder '10' is output 10"):
        convert(digits, "int8", calibration=beyond, samples=4)
    words = tmp_path / "words.txt"
    words.write_text("\n".join(f"digit {d}" for d in range(10)) + "\n")
    assert convert(digits, "float32", labels=words).metadata.labels == tuple(f"digit {d}" for d in range(10))
    assert convert(digits, "float32", calibration=named, labels=()).metadata.labels is None


def test_cli_convert_label_mismatch_is_one_line(digits, mnist_train, tmp_path):
    model = tmp_path / "digits.keras"
    digits.save(model)
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    result = CliRunner().invoke(cli, ["convert", str(model), "--mode", "float32", "--labels", str(three),
                                      "-o", str(tmp_path / "out")], catch_exceptions=False)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: labels: 3 labels for a model with 10 outputs") and "--labels" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_compare_and_budget_accuracy_on_classes_3_and_7_equal_a_plain_loop(digits, mnist_train, mnist_test,
                                                                          calib_with_empty, tmp_path):
    from edgeq.comparison.run import compare
    from edgeq.quantize.precision.budget import top1_accuracy

    data = subset(mnist_test, tmp_path / "eval", {3: None, 7: None}, per_class=20)
    with pytest.warns(UserWarning, match=r"calibration: class folder\(s\) with no image"):
        comp = compare(digits, calibration=calib_with_empty, evaluation=data, modes=["float32"], threads=(1,),
                       samples=10, runs=3, min_secs=0.0, max_secs=0.5, progress=False)
    row = next(r for r in comp.rows if r.name == "float32")
    files = class_files(data, {"3": 3, "7": 7})
    ref, n = plain_litert_top1(comp.results["float32"].model_bytes, files), len(files)
    assert comp.eval_images == n == 40 and ref > 0.6
    assert row.top1 == pytest.approx(ref, abs=1e-12)
    assert "labels from the calibration folder; evaluation folders: folders named after the labels: 3→3, 7→7" \
        in comp.notes
    assert comp.results["float32"].metadata.labels == tuple(str(d) for d in range(10))
    assert top1_accuracy(comp.results["float32"].model_bytes, data) == pytest.approx(ref, abs=1e-12)

    # Word-named evaluation folders line up with --labels by name, not by their sorted order.
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    named = subset(mnist_test, tmp_path / "named", {3: "three", 7: "seven"}, per_class=20)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(words) + "\n")
    with pytest.warns(UserWarning, match="calibration: class folder"):
        comp = compare(digits, calibration=calib_with_empty, evaluation=named, labels=labels, modes=["float32"],
                       threads=(1,), samples=10, runs=3, min_secs=0.0, max_secs=0.5, progress=False)
    assert next(r for r in comp.rows if r.name == "float32").top1 == pytest.approx(ref, abs=1e-12)
    assert comp.results["float32"].metadata.labels == words
    with pytest.raises(LabelMismatchError, match="2 class folders but the model has 10 outputs"):
        compare(digits, calibration=mnist_train / "3", evaluation=named, modes=["float32"], threads=(1,),
                samples=4, runs=1, min_secs=0.0, max_secs=0.1, progress=False)


@pytest.mark.slow
def test_qat_keeps_folder_k_as_output_k(digits, mnist_train, tmp_path):
    from edgeq.quantize.qat.train import qat

    data = subset(mnist_train, tmp_path / "train", {3: None, 7: None}, per_class=8, empty=("0",))
    with pytest.warns(UserWarning, match="no image"):
        result = qat(digits, data, epochs=1, batch_size=8, progress=False)
    assert result.labels == tuple(str(d) for d in range(10))
    assert result.history["accuracy"][-1] > 0.5  # trained against classes 3 and 7, not 0 and 1
    beyond = subset(mnist_train, tmp_path / "beyond", {3: None, 7: "11"}, per_class=2)
    with pytest.raises(LabelMismatchError, match="class folder '11' is output 11"):
        qat(digits, beyond, epochs=1, progress=False)


def test_deploy_carries_empty_class_folders(tmp_path):
    from edgeq.deployment import agent
    from edgeq.deployment.payload import tar_folder, tree_sha256

    data = tmp_path / "data"
    (data / "0").mkdir(parents=True)
    (data / "1").mkdir()
    (data / "1" / "a.png").write_bytes(b"png")
    sha = tree_sha256(data)
    (data / "2").mkdir()
    assert tree_sha256(data) != sha  # an added empty class folder is a change to copy
    work = tmp_path / "board"
    proc = subprocess.run([sys.executable, agent.__file__, "recv", str(work), "data/data", tree_sha256(data),
                           "tar"], input=tar_folder(data), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["sha256"] == tree_sha256(data)
    assert sorted(p.name for p in (work / "data" / "data").iterdir()) == ["0", "1", "2"]
