"""edgeq.inputs.data: every kind of DataSource gives the same samples, and bad data is refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from edgeq_device.model.preprocess import Preprocess
from PIL import Image

from edgeq.errors import DataError, InvalidArgumentError, LabelMismatchError
from edgeq.inputs.data import (
    ArraySource,
    DataSource,
    ImageFolder,
    IterableSource,
    TFDataSource,
    as_source,
    check_label_range,
    class_labels,
)

N = 6
PIXELS = np.random.default_rng(0).integers(0, 256, (N, 8, 8), dtype=np.uint8)
X = (PIXELS[..., None] / 255.0).astype(np.float32)  # what edgeq_device's preprocessing makes of the images
Y = np.array([0, 0, 1, 1, 2, 2])
PRE = Preprocess(size=(8, 8), color="l")


def _arrays(source: DataSource) -> tuple[np.ndarray, np.ndarray | None]:
    """The source's samples as arrays in the rows of X (an image folder reads its files in a seeded order)."""
    samples = list(source.samples())
    rows = [int(np.abs(X - np.asarray(s.inputs)).reshape(N, -1).max(axis=1).argmin()) for s in samples]
    assert sorted(rows) == list(range(N)), rows
    by_row = dict(zip(rows, samples))
    x = np.stack([np.asarray(by_row[i].inputs) for i in range(N)])
    return x, None if samples[0].label is None else np.asarray([by_row[i].label for i in range(N)])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The six images as PNG files in class folders, in a flat folder, and the arrays as .npy/.npz files."""
    root = tmp_path_factory.mktemp("data")
    for i, (img, label) in enumerate(zip(PIXELS, Y)):
        (root / "classes" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(root / "classes" / str(label) / f"{i}.png")
        (root / "flat").mkdir(exist_ok=True)
        Image.fromarray(img, "L").save(root / "flat" / f"{i}.png")
    np.save(root / "x.npy", X)
    np.savez(root / "xy.npz", x=X, y=Y)
    np.savez(root / "by_name.npz", image=X, labels=Y)
    return {"root": root}


def _tf():
    import tensorflow as tf

    return tf


# Each way a user holds the same six labeled samples, and the DataSource it becomes.
KINDS = {
    "image folder": (lambda r: r / "classes", ImageFolder),
    "(x, y) arrays": (lambda r: (X, Y), ArraySource),
    ".npz with x and y": (lambda r: r / "xy.npz", ArraySource),
    "ArraySource, one-hot y": (lambda r: ArraySource(X, np.eye(3)[Y]), ArraySource),
    "tf.data (x, y)": (lambda r: _tf().data.Dataset.from_tensor_slices((X, Y)), TFDataSource),
    "tf.data batched": (lambda r: _tf().data.Dataset.from_tensor_slices((X, Y)).batch(4), TFDataSource),
    "generator function": (lambda r: lambda: ((x, y) for x, y in zip(X, Y)), IterableSource),
    "list of (x, y)": (lambda r: list(zip(X, Y)), IterableSource),
    "batched iterable": (lambda r: IterableSource([(X[:4], Y[:4]), (X[4:], Y[4:])], batched=True), IterableSource),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_labeled_kind_gives_the_same_samples(folders, kind):
    make, cls = KINDS[kind]
    source = as_source(make(folders["root"]), PRE)
    assert isinstance(source, cls) and source.has_labels
    x, y = _arrays(source)
    np.testing.assert_allclose(x, X, atol=1e-6)
    np.testing.assert_array_equal(y, Y)


@pytest.mark.parametrize("kind", ["flat folder", "array", ".npy", "generator"])
def test_every_unlabeled_kind_gives_the_same_inputs(folders, kind):
    data = {"flat folder": folders["root"] / "flat", "array": X, ".npy": folders["root"] / "x.npy",
            "generator": lambda: iter(X)}[kind]
    source = as_source(data, PRE)
    x, y = _arrays(source)
    assert y is None and not source.has_labels
    np.testing.assert_allclose(x, X, atol=1e-6)


def test_inputs_by_name_and_in_order(folders):
    by_name = as_source(folders["root"] / "by_name.npz")
    assert isinstance(by_name, ArraySource) and by_name.has_labels and len(by_name) == N
    first = next(by_name.samples())
    assert set(first.inputs) == {"image"} and first.label == 0
    pair = as_source({"a": X, "b": X[:, :2]})
    s = next(pair.samples())
    assert set(s.inputs) == {"a", "b"} and s.inputs["b"].shape == (2, 8, 1)
    ordered = ArraySource([X, X[:, :2]], Y)
    assert [a.shape for a in next(ordered.samples()).inputs] == [(8, 8, 1), (2, 8, 1)]


def test_a_subset_is_seeded_and_keeps_each_samples_row():
    source = ArraySource(X, Y)
    a = list(source.samples(limit=3, seed=1))
    b = list(source.samples(limit=3, seed=1))
    assert [s.index for s in a] == [s.index for s in b] and len({s.index for s in a}) == 3
    for s in a:
        np.testing.assert_array_equal(s.inputs, X[s.index])
        assert s.label == Y[s.index]
    assert [s.index for s in source.samples()] == list(range(N))
    assert len(list(as_source(lambda: iter(X)).samples(limit=2))) == 2


def test_image_folder_subset_and_class_names(folders):
    source = as_source(folders["root"] / "classes", PRE, argument="evaluation")
    assert isinstance(source, ImageFolder) and source.class_names == ("0", "1", "2") and len(source) == N
    assert len(list(source.samples(limit=4, seed=0))) == 4
    assert class_labels(source, 3) == ("0", "1", "2")
    assert class_labels(source, 5) == ("0", "1", "2", "3", "4")
    with pytest.raises(LabelMismatchError) as info:
        class_labels(source, 2, "evaluation")
    assert info.value.argument == "evaluation"
    assert class_labels(as_source(folders["root"] / "flat", PRE), 3) is None
    assert class_labels(ArraySource(X, Y), 4) == ("0", "1", "2", "3")
    assert class_labels(ArraySource(X), 4) is None


def test_a_source_keeps_its_own_preprocessing(folders):
    own = Preprocess(size=(4, 4), color="l")
    source = ImageFolder(folders["root"] / "classes", own)
    assert as_source(source, PRE) is source
    bare = ImageFolder(folders["root"] / "classes")
    derived = as_source(bare, PRE)
    assert derived is not bare and derived.preprocess is PRE and bare.preprocess is None
    with pytest.raises(InvalidArgumentError, match="needs preprocessing") as info:
        next(bare.samples())
    assert info.value.argument == "preprocess"


def test_tf_data_length_is_known_only_unbatched():
    tf = _tf()
    assert TFDataSource(tf.data.Dataset.from_tensor_slices(X)).known_length() == N
    assert TFDataSource(tf.data.Dataset.from_tensor_slices(X).batch(2)).known_length() is None


@pytest.mark.parametrize(("data", "error", "argument", "message"), [
    ("nowhere/at/all", DataError, "calibration", "not found or not a data source"),
    ("missing.npy", DataError, "data", "file not found"),
    (np.float32(3.0), DataError, "data", "sample dimension"),
    (np.zeros((0, 4)), DataError, "data", "no samples"),
    ({"a": np.zeros((3, 2)), "b": np.zeros((4, 2))}, DataError, "data", "different numbers of samples"),
    (5, InvalidArgumentError, "calibration", "not a data source"),
])
def test_bad_data_is_refused_by_argument(tmp_path, monkeypatch, data, error, argument, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message) as info:
        as_source(data) if not isinstance(data, np.generic) else ArraySource(data)
    assert info.value.argument == argument and info.value.fix


def test_bad_files_and_labels(tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read NumPy file") as info:
        as_source(bad)
    assert info.value.received == str(bad)
    with pytest.raises(DataError, match="labels and samples differ") as info:
        ArraySource(X, Y[:3])
    assert info.value.argument == "y"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        as_source(empty, PRE, argument="evaluation")
    assert info.value.argument == "evaluation"


def test_a_used_iterator_cannot_be_read_twice():
    source = as_source(iter(list(X)))
    assert len(list(source.samples())) == N
    with pytest.raises(DataError, match="already consumed") as info:
        list(source.samples())
    assert "function returning a new generator" in info.value.fix


def test_check_label_range():
    check_label_range(np.array([0, 9]), 10, "y", "arrays")
    check_label_range(np.array([], int), 10, "y", "arrays")
    with pytest.raises(LabelMismatchError, match="label 10 is not an output") as info:
        check_label_range(np.array([0, 10]), 10, "y", "arrays")
    assert info.value.argument == "y" and info.value.received == "arrays"
    with pytest.raises(LabelMismatchError, match="label -1"):
        check_label_range(np.array([-1, 3]), 10, "y", "arrays")
