"""Load what users call a Keras model and hand it to the TFLite converter.

Accepted: a Keras 3 model, a ``tf_keras`` (Keras 2) model, a ``.keras`` or ``.h5``
file, or a SavedModel folder. Every converted model gets one signature,
``serving_default``, whose inputs are named after the model's inputs and whose
outputs are ``output_0 .. output_{n-1}`` in the model's order, so the
interpreter's outputs can be matched to the Keras model's.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import natural_key

from edgeq.errors import InvalidArgumentError, ModelLoadError
from edgeq.nativelog import quiet_native_logs

__all__ = ["InputSpec", "LoadedModel", "custom_objects_from_file", "load_model", "register_custom_objects"]


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape (``None`` for unknown dimensions) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        """The shape of one sample (without the batch dimension)."""
        return self.shape[1:]


@dataclass
class LoadedModel:
    """A model ready for conversion, with its input specs and a name for files and reports."""

    kind: str  # "keras3" | "tf_keras" | "saved_model"
    obj: Any
    name: str
    inputs: list[InputSpec]
    num_outputs: int
    path: Path | None = None

    def predict(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the float model on a batch (one array per input, in order); outputs in order."""
        if self.kind == "saved_model":
            fn = self.obj.signatures["serving_default"]
            import tensorflow as tf

            out = fn(**{s.name: tf.constant(a) for s, a in zip(self.inputs, inputs)})
            return [np.asarray(out[k]) for k in sorted(out, key=natural_key)]
        x: Any = inputs[0] if len(inputs) == 1 else list(inputs)
        out = self.obj(x, training=False)
        if isinstance(out, dict):
            out = list(out.values())
        if not isinstance(out, (list, tuple)):
            out = [out]
        return [np.asarray(o) for o in out]

    def rescales_input(self) -> bool | None:
        """Whether the model scales its own input: a Rescaling or Normalization layer (or an
        arithmetic op or Lambda that may do it) comes before the first layer with weights.

        ``None`` when the layers are not known (a SavedModel).
        """
        if self.kind == "saved_model":
            return None
        return _leading_rescale(self.obj) is not False

    @contextmanager
    def converter(self, batch_size: int | None = None) -> Iterator[Any]:
        """A ``tf.lite.TFLiteConverter`` for this model, inputs' batch fixed to ``batch_size`` if given."""
        import tensorflow as tf

        specs = [tf.TensorSpec((batch_size, *s.shape[1:]), s.dtype, name=s.name) for s in self.inputs]
        tmp = export_folder()
        try:
            if self.kind == "keras3":
                model = self.obj
                if batch_size is not None:
                    # Same layers and weights behind inputs with a static batch dimension.
                    import keras

                    fixed = [keras.Input(batch_shape=(batch_size, *s.shape[1:]), dtype=s.dtype, name=s.name)
                             for s in self.inputs]
                    model = keras.Model(fixed[0] if len(fixed) == 1 else fixed,
                                        model(fixed[0] if len(fixed) == 1 else fixed), name=model.name)
                yield tf.lite.TFLiteConverter.from_keras_model(model)
            elif self.kind == "tf_keras":
                model = self.obj
                n = len(specs)

                @tf.function(input_signature=specs)
                def serve(*args: Any) -> Any:
                    out = model(args[0] if n == 1 else list(args), training=False)
                    if isinstance(out, dict):
                        out = list(out.values())
                    return {f"output_{i}": o for i, o in enumerate(out if isinstance(out, (list, tuple)) else [out])}

                tf.saved_model.save(model, tmp, signatures={"serving_default": serve.get_concrete_function()})
                yield tf.lite.TFLiteConverter.from_saved_model(tmp)
            else:
                if batch_size is None:
                    yield tf.lite.TFLiteConverter.from_saved_model(str(self.path))
                else:
                    sig = self.obj.signatures["serving_default"]
                    names = [s.name for s in self.inputs]

                    @tf.function(input_signature=specs)
                    def serve_fixed(*args: Any) -> Any:
                        out = sig(**dict(zip(names, args)))
                        return {f"output_{i}": out[k] for i, k in enumerate(sorted(out, key=natural_key))}

                    tf.saved_model.save(self.obj, tmp, signatures={"serving_default": serve_fixed.get_concrete_function()})
                    yield tf.lite.TFLiteConverter.from_saved_model(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


EXPORT_PREFIX = "edgeq-export-"
# An export folder is removed when its conversion ends, however it ends; only a process that
# dies (a crash, SIGKILL, SIGTERM) leaves one. Such a folder, named after a process that no
# longer runs and untouched for this long, is removed when the next export folder is made.
_STALE_SECONDS = 600.0


def export_folder() -> str:
    """A new temporary folder for a SavedModel export, ``<tmp>/edgeq-export-<pid>-<random>``.

    The caller removes it (``LoadedModel.converter`` does, on success, error and Ctrl-C);
    folders left by edgeq processes that died are swept first (see :func:`sweep_stale_exports`).
    """
    sweep_stale_exports()
    return tempfile.mkdtemp(prefix=f"{EXPORT_PREFIX}{os.getpid()}-")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return True
    except OSError:  # exists, another user's
        return False
    return False


def sweep_stale_exports(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove export folders of this user whose edgeq process no longer runs; returns them.

    Only folders named ``edgeq-export-<pid>-...`` untouched for 10 minutes are considered.
    POSIX only (elsewhere nothing is removed).
    """
    if os.name != "posix":
        return []
    folder = Path(tempfile.gettempdir() if root is None else root)
    removed: list[Path] = []
    try:
        entries = list(folder.glob(f"{EXPORT_PREFIX}*-*"))
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        pid = path.name[len(EXPORT_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            st = path.lstat()
        except OSError:
            continue
        if (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and now - st.st_mtime > _STALE_SECONDS
                and _process_gone(int(pid))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# Layers and ops that may scale a model's input (Keras 3 and tf_keras class names). A leading
# Lambda or arithmetic op may be ``x / 255``: counted as rescaling, so no false alarm is raised.
_RESCALING = {"Rescaling", "Normalization", "BatchNormalization", "LayerNormalization", "Lambda",
              "TFOpLambda", "TrueDivide", "Divide", "Multiply", "Subtract", "Add"}
# Layers with weights that do not change the scale of what they pass on: QAT's input fake-quantizer.
_TRANSPARENT = {"QuantizeLayer"}


def _leading_rescale(model: Any) -> bool | None:
    """True: a rescaling layer comes before the first layer with weights; False: a weighted layer
    comes first; None: no weighted layer (walks nested models in order)."""
    ops = getattr(model, "operations", None) or getattr(model, "layers", None) or []
    for op in ops:
        inner = getattr(op, "layer", None)  # a wrapper (QAT's QuantizeWrapper): judge what it wraps
        op = inner if inner is not None and hasattr(inner, "weights") else op
        kind = type(op).__name__
        if kind in _RESCALING:
            return True
        if kind in _TRANSPARENT:
            continue
        if getattr(op, "layers", None) is not None:  # a nested model
            found = _leading_rescale(op)
            if found is not None:
                return found
        elif getattr(op, "weights", None):
            return False
    return None


def _keras_inputs(model: Any, kind: str) -> list[InputSpec]:
    try:
        tensors = model.inputs
    except AttributeError:
        tensors = None
    if not tensors:
        raise ModelLoadError(
            "the model has no defined inputs (a subclassed or unbuilt model)", argument="model",
            received=getattr(model, "name", type(model).__name__),
            fix="build it with keras.Input(...) (Functional/Sequential) or call it once on data")
    specs = []
    for i, t in enumerate(tensors):
        name = getattr(t, "name", None) or f"input_{i}"
        name = name.split(":")[0]
        shape = tuple(None if d is None else int(d) for d in t.shape)
        dtype = str(getattr(t.dtype, "name", t.dtype))
        specs.append(InputSpec(name, shape, dtype))
    return specs


def _num_outputs(model: Any) -> int:
    outs = getattr(model, "outputs", None)
    return len(outs) if outs else 1


def _is_keras3(obj: Any) -> bool:
    try:
        import keras

        return isinstance(obj, keras.Model) and str(keras.__version__).startswith("3")
    except ImportError:
        return False


def _is_tf_keras(obj: Any) -> bool:
    try:
        import tf_keras

        return isinstance(obj, tf_keras.Model)
    except ImportError:
        return False


# How Keras 3 and tf_keras say a saved model names a class or function they do not know.
_UNKNOWN_OBJECT = (re.compile(r"Could not locate (?:class|function) '([^']+)'"),
                   re.compile(r"Unknown [a-z ]+: '([^']+)'"),
                   re.compile(r"Received: layer=([A-Za-z_][\w.>]*) of type <class 'str'>"))


def _unknown_objects(messages: list[str]) -> list[str]:
    """The custom class or function names a failed load could not find, in order."""
    found: dict[str, None] = {}
    for text in messages:
        for pattern in _UNKNOWN_OBJECT:
            found.update((name, None) for name in pattern.findall(text))
    return list(found)


def custom_objects_from_file(path: str | os.PathLike[str], argument: str = "custom_objects") -> dict[str, Any]:
    """The custom Keras objects a Python file defines, to load a model that uses them.

    The file's ``custom_objects`` dict if it defines one, else every class and function
    defined at its top level (not the ones it imports), keyed by name.

    Raises:
        InvalidArgumentError: the file is missing, not Python, fails to import, or defines nothing.
    """
    p = Path(path)
    if not p.is_file() or p.suffix != ".py":
        raise InvalidArgumentError("file not found" if not p.is_file() else "not a Python (.py) file",
                                   argument=argument, received=str(p),
                                   fix="give the .py file that defines the model's custom layers")
    name = f"edgeq_custom_objects_{p.stem}" if p.stem in sys.modules else p.stem
    spec = importlib.util.spec_from_file_location(name, p)
    if spec is None or spec.loader is None:
        raise InvalidArgumentError("cannot import it", argument=argument, received=str(p),
                                   fix="give the .py file that defines the model's custom layers")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # Keras may look the classes' module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise InvalidArgumentError(f"importing it failed: {type(exc).__name__}: {first}", argument=argument,
                                   received=str(p), fix="fix the file so that `python FILE.py` runs") from exc
    declared = getattr(module, "custom_objects", None)
    if declared is not None:
        if not isinstance(declared, Mapping) or not all(isinstance(k, str) for k in declared):
            raise InvalidArgumentError("its custom_objects is not a dict of names to classes or functions",
                                       argument=argument, received=str(p),
                                       fix="define custom_objects = {'MyLayer': MyLayer, ...}")
        return dict(declared)
    objects = {k: v for k, v in vars(module).items()
               if not k.startswith("_") and (inspect.isclass(v) or inspect.isfunction(v))
               and getattr(v, "__module__", None) == name}
    if not objects:
        raise InvalidArgumentError("it defines no classes or functions", argument=argument, received=str(p),
                                   fix="give the file that defines the model's custom layers, or define "
                                       "custom_objects = {'MyLayer': MyLayer} in it")
    return objects


def register_custom_objects(custom_objects: Mapping[str, Any]) -> Callable[[], None]:
    """Make ``custom_objects`` known to every Keras 3 and tf_keras load; returns the function undoing it."""
    registries: list[dict[str, Any]] = []
    try:
        import keras

        registries.append(keras.saving.get_custom_objects())
    except ImportError:
        pass
    try:
        import tf_keras

        registries.append(tf_keras.utils.get_custom_objects())
    except ImportError:
        pass
    saved = [{k: r[k] for k in custom_objects if k in r} for r in registries]
    for r in registries:
        r.update(custom_objects)

    def undo() -> None:
        for r, before in zip(registries, saved):
            for k in custom_objects:
                r.pop(k, None)
            r.update(before)

    return undo


@quiet_native_logs()
def load_model(model: Any, custom_objects: Mapping[str, Any] | None = None) -> LoadedModel:
    """Load a Keras 3 / tf_keras model object, a ``.keras``/``.h5`` file or a SavedModel folder.

    Args:
        model: the model or its path.
        custom_objects: the custom layers, functions... a model file uses, by the name it
            was saved with (``{"MyLayer": MyLayer}``); see also :func:`custom_objects_from_file`.

    Raises:
        ModelLoadError: the path is missing or holds no model edgeq can load, or the model
            uses a custom class that was not given (the error names it).
    """
    if isinstance(model, LoadedModel):
        return model
    if _is_keras3(model):
        return LoadedModel("keras3", model, model.name, _keras_inputs(model, "keras3"), _num_outputs(model))
    if _is_tf_keras(model):
        return LoadedModel("tf_keras", model, model.name, _keras_inputs(model, "tf_keras"), _num_outputs(model))
    if not isinstance(model, (str, os.PathLike)):
        raise InvalidArgumentError(
            "not a Keras model or a model path", argument="model", received=type(model).__name__,
            fix="give a keras.Model, a tf_keras.Model, a .keras/.h5 file or a SavedModel folder")
    path = Path(model)
    if not path.exists():
        raise ModelLoadError("model path not found", argument="model", received=str(path),
                             fix="give an existing .keras/.h5 file or SavedModel folder")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelLoadError("folder is not a SavedModel (no saved_model.pb)", argument="model",
                                 received=str(path), fix="give a SavedModel folder or a .keras/.h5 file")
        return _load_saved_model(path)
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelLoadError("not a Keras model file", argument="model", received=str(path),
                             fix="give a .keras or .h5 file, or a SavedModel folder")
    errors = []
    messages: list[str] = []
    order = ("tf_keras", "keras") if path.suffix != ".keras" else ("keras", "tf_keras")
    for lib in order:
        try:
            if lib == "keras":
                import keras

                obj = keras.saving.load_model(path, custom_objects=dict(custom_objects or {}), compile=False)
                loaded = load_model(obj)
            else:
                import tf_keras

                obj = tf_keras.models.load_model(path, custom_objects=dict(custom_objects or {}), compile=False)
                loaded = load_model(obj)
            loaded.path = path
            loaded.name = path.stem
            return loaded
        except ModelLoadError:
            raise
        except Exception as exc:
            messages.append(str(exc))
            errors.append(f"{lib}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
    unknown = [n for n in _unknown_objects(messages) if n not in (custom_objects or {})]
    if unknown:
        names = ", ".join(unknown)
        given = ", ".join(f"'{n.split('>')[-1]}': {n.split('>')[-1]}" for n in unknown)
        raise ModelLoadError(
            f"the model uses custom {'classes' if len(unknown) > 1 else 'class'} {names} that Keras cannot "
            "find", argument="model", received=str(path),
            fix=f"give {'them' if len(unknown) > 1 else 'it'}: load_model(path, custom_objects={{{given}}}), "
                "or on the command line --custom-objects FILE.py (the Python file that defines "
                f"{'them' if len(unknown) > 1 else 'it'})")
    raise ModelLoadError("cannot load the model file (" + "; ".join(errors) + ")", argument="model",
                         received=str(path), fix="check it is a Keras model saved with model.save()")


def _load_saved_model(path: Path) -> LoadedModel:
    import tensorflow as tf

    try:
        obj = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"cannot load SavedModel: {str(exc).splitlines()[0][:200]}", argument="model",
                             received=str(path), fix="save it again with tf.saved_model.save") from exc
    sigs = getattr(obj, "signatures", {})
    if "serving_default" not in sigs:
        raise ModelLoadError("SavedModel has no serving_default signature", argument="model",
                             received=str(path), fix="save it with a serving_default signature")
    fn = sigs["serving_default"]
    args = fn.structured_input_signature[1]
    inputs = [InputSpec(k, tuple(None if d is None else int(d) for d in v.shape), v.dtype.name)
              for k, v in sorted(args.items())]
    return LoadedModel("saved_model", obj, path.name, inputs, len(fn.structured_outputs), path)
