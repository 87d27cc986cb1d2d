"""edgeq.inputs.models: every kind of model edgeq loads, custom objects from a file, and the errors."""

from __future__ import annotations

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from edgeq.errors import InvalidArgumentError, ModelLoadError
from edgeq.inputs.models import (
    InputSpec,
    LoadedModel,
    custom_objects_from_file,
    load_model,
    register_custom_objects,
)

X = np.random.default_rng(0).random((3, 6), dtype=np.float32)

# A custom layer, as a user keeps it in a Python file beside the model.
LAYERS = '''
import keras


@keras.saving.register_keras_serializable(package="edgeq_inputs_test")
class Twice(keras.layers.Layer):
    def call(self, x):
        return x * 2.0
'''


def _dense(name: str = "dense6") -> object:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,), name="x"), keras.layers.Dense(3)], name=name)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One small Dense model as a Keras 3 object, .keras, Keras 3 .h5, tf_keras .h5 and a SavedModel folder."""
    root = tmp_path_factory.mktemp("models")
    model = _dense()
    model.save(root / "dense6.keras")
    model.save(root / "k3.h5")
    tf_keras.utils.set_random_seed(0)
    tfk = tf_keras.Sequential([tf_keras.Input((6,), name="x"), tf_keras.layers.Dense(3)], name="tfk")
    tfk.save(root / "tfk.h5")

    module = tf.Module()
    module.w = tf.Variable(np.arange(18, dtype=np.float32).reshape(6, 3) / 10)
    module.serve = tf.function(lambda x: {"scores": tf.matmul(x, module.w), "sum": tf.reduce_sum(x, axis=1)},
                               input_signature=[tf.TensorSpec((None, 6), tf.float32, name="x")])
    tf.saved_model.save(module, str(root / "saved"), signatures={"serving_default": module.serve})
    no_sig = tf.Module()
    no_sig.v = tf.Variable(1.0)
    tf.saved_model.save(no_sig, str(root / "nosig"), signatures={})
    return {"root": root, "model": model, "tfk": tfk, "w": module.w.numpy()}


def test_keras3_object(files):
    model = files["model"]
    loaded = load_model(model)
    assert loaded.kind == "keras3" and loaded.obj is model and loaded.name == "dense6" and loaded.path is None
    assert loaded.inputs == [InputSpec("x", (None, 6), "float32")] and loaded.inputs[0].sample_shape == (6,)
    assert loaded.num_outputs == 1
    np.testing.assert_allclose(loaded.predict([X])[0], np.asarray(model(X)), rtol=1e-6)
    assert load_model(loaded) is loaded  # a LoadedModel passes through


def test_tf_keras_object(files):
    loaded = load_model(files["tfk"])
    assert loaded.kind == "tf_keras" and loaded.name == "tfk" and loaded.inputs[0].shape == (None, 6)
    np.testing.assert_allclose(loaded.predict([X])[0], np.asarray(files["tfk"](X)), rtol=1e-6)


@pytest.mark.parametrize(("name", "kind"), [("dense6.keras", "keras3"), ("k3.h5", "keras3"), ("tfk.h5", "tf_keras")])
def test_model_files(files, name, kind):
    path = files["root"] / name
    loaded = load_model(path)
    assert loaded.kind == kind and loaded.path == path and loaded.name == path.stem
    assert [s.name for s in loaded.inputs] == ["x"] and loaded.num_outputs == 1
    reference = files["tfk"] if name == "tfk.h5" else files["model"]
    np.testing.assert_allclose(loaded.predict([X])[0], np.asarray(reference(X)), rtol=1e-5, atol=1e-6)


def test_saved_model_folder(files):
    path = files["root"] / "saved"
    loaded = load_model(path)
    assert loaded.kind == "saved_model" and loaded.name == "saved" and loaded.path == path
    assert loaded.inputs == [InputSpec("x", (None, 6), "float32")] and loaded.num_outputs == 2
    assert loaded.rescales_input() is None  # layers unknown
    scores, sums = sorted(loaded.predict([X]), key=lambda a: a.ndim, reverse=True)
    np.testing.assert_allclose(scores, X @ files["w"], rtol=1e-5)
    np.testing.assert_allclose(sums, X.sum(axis=1), rtol=1e-5)


def test_two_inputs_two_outputs_keep_their_order():
    a, b = keras.Input((4,), name="first"), keras.Input((2, 2), name="second")
    joined = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
    model = keras.Model([a, b], [keras.layers.Dense(3, name="p")(joined), keras.layers.Dense(1, name="q")(joined)])
    loaded = load_model(model)
    assert [(s.name, s.shape) for s in loaded.inputs] == [("first", (None, 4)), ("second", (None, 2, 2))]
    assert loaded.num_outputs == 2
    outs = loaded.predict([np.ones((2, 4), np.float32), np.ones((2, 2, 2), np.float32)])
    assert [o.shape for o in outs] == [(2, 3), (2, 1)]


def test_rescales_input_of_a_model_object():
    plain = load_model(_dense("plain"))
    scaled = load_model(keras.Sequential([keras.Input((6,)), keras.layers.Rescaling(1 / 255), keras.layers.Dense(2)]))
    assert plain.rescales_input() is False and scaled.rescales_input() is True


@pytest.mark.slow
def test_converter_of_each_kind_gives_a_tflite_model(files):
    for model in (files["model"], files["tfk"], files["root"] / "saved"):
        loaded = load_model(model)
        with loaded.converter(batch_size=1) as conv:
            data = conv.convert()
        assert data[4:8] == b"TFL3"


@pytest.mark.parametrize(("make", "error", "message"), [
    (lambda root: root / "nowhere.keras", ModelLoadError, "model path not found"),
    (lambda root: root, ModelLoadError, "folder is not a SavedModel"),
    (lambda root: root / "nosig", ModelLoadError, "no serving_default signature"),
])
def test_bad_paths_name_the_argument(files, make, error, message):
    path = make(files["root"])
    with pytest.raises(error, match=message) as info:
        load_model(path)
    assert info.value.argument == "model" and info.value.received == str(path) and info.value.fix


def test_files_that_are_not_models(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a Keras model file") as info:
        load_model(text)
    assert info.value.argument == "model" and ".keras" in info.value.fix
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(ModelLoadError, match="cannot load the model file") as info:
        load_model(broken)
    assert info.value.received == str(broken) and "model.save()" in info.value.fix


def test_objects_that_are_not_models():
    with pytest.raises(InvalidArgumentError, match="not a Keras model or a model path") as info:
        load_model(42)
    assert info.value.argument == "model" and info.value.received == "int"

    class Unbuilt(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ModelLoadError, match="no defined inputs") as info:
        load_model(Unbuilt())
    assert "keras.Input" in info.value.fix


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, object]:
    """(the layers' file, a .keras model using its custom layer, the model's output on X)."""
    root = tmp_path_factory.mktemp("custom")
    source = root / "twice_layers.py"
    source.write_text(LAYERS)
    module_objects = custom_objects_from_file(source)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), name="x"), module_objects["Twice"](), keras.layers.Dense(2)],
                             name="twice")
    path = root / "twice.keras"
    model.save(path)
    # Forget the class, as a new Python process would not know it.
    keras.saving.get_custom_objects().pop("edgeq_inputs_test>Twice", None)
    return source, path, np.asarray(model(X))


def test_custom_layer_without_its_class_is_named_in_the_error(custom):
    _, path, _ = custom
    with pytest.raises(ModelLoadError, match=r"custom class .*Twice that Keras cannot find") as info:
        load_model(path)
    assert "--custom-objects FILE.py" in info.value.fix and "custom_objects=" in info.value.fix


def test_custom_objects_from_a_file_load_the_model(custom):
    source, path, expected = custom
    objects = custom_objects_from_file(source)
    assert list(objects) == ["Twice"]  # what the file defines, not what it imports (keras)
    loaded = load_model(path, custom_objects=objects)
    np.testing.assert_allclose(loaded.predict([X])[0], expected, rtol=1e-6)
    undo = register_custom_objects(objects)
    try:
        assert keras.saving.get_custom_objects()["Twice"] is objects["Twice"]
        assert tf_keras.utils.get_custom_objects()["Twice"] is objects["Twice"]
        np.testing.assert_allclose(load_model(path).predict([X])[0], expected, rtol=1e-6)
    finally:
        undo()
    assert "Twice" not in keras.saving.get_custom_objects()


def test_a_files_custom_objects_dict_wins(tmp_path):
    source = tmp_path / "declared.py"
    source.write_text("def helper():\n    return 1\n\n\ndef act(x):\n    return x\n\n\ncustom_objects = {'act': act}\n")
    objects = custom_objects_from_file(source)
    assert list(objects) == ["act"] and objects["act"](3) == 3


@pytest.mark.parametrize(("name", "text", "message"), [
    ("missing.py", None, "file not found"),
    ("layers.txt", "x = 1\n", r"not a Python \(\.py\) file"),
    ("crashes.py", "raise RuntimeError('half-written file')\n", "importing it failed: RuntimeError: half-written"),
    ("empty.py", "import os\nVALUE = 1\n", "defines no classes or functions"),
    ("baddict.py", "custom_objects = [1, 2]\n", "custom_objects is not a dict"),
])
def test_custom_objects_file_errors_name_the_argument(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(InvalidArgumentError, match=message) as info:
        custom_objects_from_file(path, argument="--custom-objects")
    assert info.value.argument == "--custom-objects" and info.value.received == str(path) and info.value.fix
    if name == "crashes.py":
        assert path.stem not in sys.modules  # a half-imported module is not left behind


def test_loaded_model_is_the_documented_record(files):
    loaded = load_model(files["root"] / "dense6.keras")
    assert isinstance(loaded, LoadedModel)
    assert loaded.rescales_input() is False
