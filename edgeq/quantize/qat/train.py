"""Quantization-aware training (QAT): fine-tune with simulated int8, then export int8.

``qat(model, train, validation=..., epochs=2)`` is built from public steps:

1. :func:`to_tf_keras`: tensorflow-model-optimization works on ``tf_keras`` models only, so
   a Keras 3 model is rebuilt in ``tf_keras`` with the same weights and checked to give
   the same outputs (:mod:`edgeq.quantize.qat.rebuild`); a ``tf_keras`` model is used as it is.
2. :func:`plan_quantization`: decides, layer by layer, how it is quantized (:mod:`edgeq.quantize.qat.plan`).
3. :func:`quantize_model`: annotates the layers accordingly and applies
   ``tfmot.quantization.keras.quantize_apply``; the activation ranges then start where the
   training data puts them, not at tfmot's ±6 (:mod:`edgeq.quantize.qat.ranges`).
4. training with ``fit`` on the same data sources as calibration (image folders with
   class subfolders, arrays, tf.data), progress per epoch on stderr; under a
   ``tf.distribute`` strategy's scope when one is given.

The result's :meth:`QATResult.convert` exports an int8 ``.tflite`` through :func:`edgeq.convert`.

How layers are quantized (``default``, ``output``, ``passthrough``, ``float``) is decided in
:mod:`edgeq.quantize.qat.plan`; the training data is read and checked by
:mod:`edgeq.quantize.qat.data`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.results.result_view import html_table, plain_text
from edgeq_device.tasks.evaluation import read_labels

from edgeq.deprecation import renamed_arguments
from edgeq.errors import InvalidArgumentError, QATError
from edgeq.inputs.data import DataSource, ImageFolder, as_source, check_label_range
from edgeq.inputs.models import LoadedModel, load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import _console, progress_enabled
from edgeq.quantize.calibration import default_preprocess
from edgeq.quantize.conversion import convert_mode
from edgeq.quantize.qat.data import class_names, positive, training_arrays
from edgeq.quantize.qat.plan import LayerPlan, plan_quantization, quantize_model
from edgeq.quantize.qat.ranges import freeze_batch_norms, start_ranges
from edgeq.quantize.qat.rebuild import rebuild
from edgeq.quantize.result import ConversionResult

__all__ = [
    "LayerPlan",
    "QATResult",
    "TrainingData",
    "epoch_callback",
    "loss_for",
    "plan_quantization",
    "qat",
    "quantize_model",
    "read_training",
    "to_tf_keras",
]


@dataclass(frozen=True)
class QATResult:
    """A quantization-aware trained ``tf_keras`` model, ready to export as int8.

    Attributes:
        model: the trained ``tf_keras`` model with fake-quantization (tfmot).
        float_model: the ``tf_keras`` model training started from (the rebuild, for Keras 3).
        plan: how each layer was quantized.
        history: per-epoch metrics (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).
        epochs: epochs trained.
        seconds: training time.
        rebuild_max_diff: largest output difference between the Keras 3 model and its
            tf_keras rebuild (None when the model was tf_keras already).
        preprocess: how images became input (stored in the exported model's metadata).
        train_source: the training data (default calibration for :meth:`convert`).
        labels: class names, when the training data has them.
    """

    model: Any
    float_model: Any
    plan: tuple[LayerPlan, ...]
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    rebuild_max_diff: float | None
    preprocess: Preprocess | None
    train_source: DataSource = field(repr=False)
    labels: tuple[str, ...] | None = None

    @property
    def float_layers(self) -> tuple[str, ...]:
        """Layers left unquantized during training (the converter calibrates them)."""
        return tuple(p.layer for p in self.plan if p.how == "float")

    @property
    def special_layers(self) -> tuple[LayerPlan, ...]:
        """Layers tfmot does not support that got an output-only or passthrough config, or stayed float."""
        return tuple(p for p in self.plan if p.how != "default")

    def convert(self, io: str = "float", *, calibration: Any = None, samples: int = 200, seed: int = 0,
                batch_size: int | None = None, allow_float_fallback: bool = False,
                progress: bool | None = None) -> ConversionResult:
        """Export the trained model as an int8 ``.tflite`` (see :func:`edgeq.convert`).

        The fake-quantization ranges learnt in training are used; ``calibration`` (default:
        the training data) fills in any tensor training did not quantize.
        """
        return convert_mode(self.model, "int8", calibration=self.train_source if calibration is None else calibration,
                            samples=samples, seed=seed, io=io, batch_size=batch_size, preprocess=self.preprocess,
                            labels=self.labels, allow_float_fallback=allow_float_fallback,
                            progress=progress)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"schema": "edgeq/qat/1", "model": self.model.name, "epochs": self.epochs,
                "seconds": round(self.seconds, 3), "history": self.history,
                "rebuild_max_diff": self.rebuild_max_diff, "float_layers": list(self.float_layers),
                "plan": [p.to_dict() for p in self.plan if p.how != "default"]}

    def __str__(self) -> str:
        return plain_text(f"QAT of {self.model.name}", self._view())

    def _repr_html_(self) -> str:
        """The summary as an HTML table (notebooks)."""
        return html_table(f"QAT of {self.model.name}", self._view())

    def _view(self) -> dict[str, Any]:
        last = {k: v[-1] for k, v in self.history.items() if v}
        return {"epochs": self.epochs, "seconds": round(self.seconds, 1), "last epoch": last,
                "rebuild max diff": self.rebuild_max_diff, "float layers": ", ".join(self.float_layers) or "none"}


# --- step 1: a tf_keras model ------------------------------------------------------------------

def to_tf_keras(model: Any, inputs: list[np.ndarray] | None = None,
                tolerance: float = 1e-5) -> tuple[Any, float | None]:
    """A ``tf_keras`` model for ``model``: rebuilt (and checked on ``inputs``) if Keras 3.

    Returns:
        ``(tf_keras model, max output difference or None)``.

    Raises:
        QATError: a Keras 3 layer cannot be rebuilt, or the rebuild's outputs differ.
    """
    loaded = load_model(model)
    if loaded.kind == "tf_keras":
        return loaded.obj, None
    if loaded.kind != "keras3":
        raise QATError("a SavedModel has no Keras layers to train", argument="model", received=str(loaded.path),
                       fix="give the Keras model (object, .keras or .h5 file)")
    built = rebuild(loaded.obj, inputs, tolerance=tolerance)
    return built.model, built.max_abs_diff


@dataclass(frozen=True)
class TrainingData:
    """A model to fine-tune and its labeled data, read and checked (what every training route starts from).

    Attributes:
        loaded: the model.
        preprocess: how images become input.
        source: the training data source (the default calibration of the int8 export).
        x: the training inputs, one array per model input.
        y: the training labels.
        validation: ``(inputs, labels)`` for ``fit``'s ``validation_data``, or None.
        labels: the class names, when known.
    """

    loaded: LoadedModel
    preprocess: Preprocess | None
    source: DataSource = field(repr=False)
    x: list[np.ndarray] = field(repr=False)
    y: np.ndarray = field(repr=False)
    validation: tuple[Any, np.ndarray] | None = field(repr=False)
    labels: tuple[str, ...] | None


def read_training(model: Any, train: Any, validation: Any = None, preprocess: Preprocess | None = None,
                  labels: Sequence[str] | str | os.PathLike[str] | None = None, samples: int | None = None,
                  seed: int = 0) -> TrainingData:
    """Load ``model`` and read its labeled training (and validation) data, checked (see :func:`qat`).

    Raises:
        QATError: a SavedModel (no Keras layers to train).
        DataError, LabelMismatchError: as :func:`qat`.
    """
    loaded: LoadedModel = load_model(model)
    if loaded.kind == "saved_model":
        raise QATError("a SavedModel has no Keras layers to train", argument="model", received=str(loaded.path),
                       fix="give the Keras model (object, .keras or .h5 file)")
    if preprocess is None and len(loaded.inputs) == 1:
        preprocess = default_preprocess(loaded.inputs[0])
    if isinstance(labels, (str, os.PathLike)):
        labels = read_labels(labels)
    train_src = as_source(train, preprocess, argument="train", labels=labels)
    x, y = training_arrays(train_src, loaded.inputs, "train", samples, seed)
    outputs = int(np.prod(np.shape(loaded.predict([a[:1] for a in x])[0])[1:]))
    names = class_names(labels, train_src, y, outputs)
    val = None
    if validation is not None:
        val_src = as_source(validation, preprocess, argument="validation", labels=names)
        if isinstance(val_src, ImageFolder) and val_src.listing.labels is not None:
            val_src.listing.fit_outputs(outputs, "validation")
        vx, vy = training_arrays(val_src, loaded.inputs, "validation")
        check_label_range(vy, outputs, "validation", val_src.description)
        val = (vx[0] if len(vx) == 1 else vx, vy)
    return TrainingData(loaded, preprocess, train_src, x, y, val, names)


# --- training --------------------------------------------------------------------------------

def loss_for(model: Any, x: list[np.ndarray]) -> Any:
    """Sparse categorical cross-entropy on probabilities or logits, as the model's output is."""
    import tf_keras

    out = np.asarray(model(x[0][:16] if len(x) == 1 else [a[:16] for a in x], training=False))
    if out.ndim >= 2 and out.shape[-1] == 1:
        probs = bool(np.all((out >= 0) & (out <= 1)))
        return tf_keras.losses.BinaryCrossentropy(from_logits=not probs)
    probs = bool(np.all(out >= 0) and np.allclose(out.sum(axis=-1), 1.0, atol=1e-3))
    return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)


def epoch_callback(epochs: int, show: bool, label: str = "qat") -> Any:
    """A ``tf_keras`` callback printing each epoch's metrics and time on stderr as ``<label> epoch i/n``."""
    import tf_keras

    class EpochProgress(tf_keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if not show:
                return
            parts = [f"{k} {float(v):.4f}" for k, v in (logs or {}).items()]
            _console.print(f"{label} epoch {epoch + 1}/{epochs}: {', '.join(parts)} "
                           f"({time.perf_counter() - self._start:.1f}s)", highlight=False, soft_wrap=True)

    return EpochProgress()


@renamed_arguments(show_progress="progress")
@quiet_native_logs()
def qat(
    model: Any,
    train: Any,
    *,
    validation: Any = None,
    epochs: int = 2,
    learning_rate: float = 1e-4,
    batch_size: int = 32,
    strategy: Any = None,
    preprocess: Preprocess | None = None,
    loss: Any = None,
    samples: int | None = None,
    seed: int = 0,
    tolerance: float = 1e-5,
    progress: bool | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    freeze_batch_norm: bool = True,
) -> QATResult:
    """Quantization-aware fine-tuning of a trained Keras classifier.

    Args:
        model: a Keras 3 or tf_keras model, or a ``.keras``/``.h5`` file.
        train: labeled training data: an image folder with class subfolders, ``(x, y)`` arrays,
            a ``.npz`` with ``x``/``y``, a ``tf.data.Dataset`` of ``(x, y)``, or a DataSource.
        validation: labeled validation data, in the same forms (optional).
        epochs: epochs of fine-tuning (1-3 is usual for a trained model).
        learning_rate: Adam's learning rate (small: the model is already trained).
        batch_size: training batch size.
        strategy: a ``tf.distribute`` strategy; the model is prepared under its scope.
        preprocess: how images become input (default: derived from the input shape, pixels to [0, 1]).
        loss: a ``tf_keras`` loss (default: sparse categorical cross-entropy, on probabilities
            or logits as the model's output is).
        samples: train on a seeded subset of this many samples (default: all).
        seed: seed of the subset, the shuffling and the initial weights of quantizers.
        tolerance: largest output difference allowed between a Keras 3 model and its rebuild.
        progress: progress per epoch on stderr (default: on unless ``EDGEQ_PROGRESS=0``).
        labels: class names in output order (or a text file, one per line): an image folder's class
            folders are the outputs of their names. Default: integer folder names are their output,
            other names sorted as Keras does (see :mod:`edgeq_device.run.images`); the validation
            folder is matched to the training folder's classes by name.
        freeze_batch_norm: keep batch normalization in inference mode (its learnt statistics,
            as the exported model uses them) while fine-tuning, as for any fine-tune of a trained
            model; False lets batches of the training data move its statistics.

    Raises:
        QATError: the model cannot be rebuilt or prepared (the layer is named).
        DataError: the data has no labels or does not fit the model's input;
            NonFiniteCalibrationError (a DataError): a sample holds NaN or Inf.
        LabelMismatchError: a class folder or label is not one of the model's outputs.
        InvalidArgumentError: a bad option.
    """
    import tf_keras

    positive(epochs, "epochs", "2")
    positive(batch_size, "batch_size", "32")
    positive(learning_rate, "learning_rate", "1e-4", integer=False)
    if samples is not None:
        positive(samples, "samples", "2000")
    if strategy is not None and not hasattr(strategy, "scope"):
        raise InvalidArgumentError("not a tf.distribute strategy", argument="strategy",
                                   received=type(strategy).__name__,
                                   fix="give e.g. tf.distribute.MirroredStrategy(), or leave it out")
    data = read_training(model, train, validation, preprocess, labels, samples, seed)
    loaded, preprocess, train_src, x, y, val, names = (data.loaded, data.preprocess, data.source, data.x, data.y,
                                                       data.validation, data.labels)
    show = progress_enabled(progress)
    tf_keras.utils.set_random_seed(seed)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        base, diff = to_tf_keras(loaded, [a[:8] for a in x], tolerance)
        plan = plan_quantization(base)
        qmodel, plan = quantize_model(base, plan)
        start_ranges(qmodel, x, batch_size=batch_size, seed=seed)
        if freeze_batch_norm:
            freeze_batch_norms(qmodel)
        qmodel = tf_keras.Model(qmodel.inputs, qmodel.outputs, name=f"{loaded.name}_qat")
        qmodel.compile(optimizer=tf_keras.optimizers.Adam(learning_rate=float(learning_rate)),
                       loss=loss if loss is not None else loss_for(base, x), metrics=["accuracy"])
    if show:
        unusual = [p for p in plan if p.how != "default"]
        _console.print(f"qat: {len(x[0])} training samples, {epochs} epoch(s), {len(plan)} layers"
                       + (f"; {len(unusual)} handled specially: "
                          + ", ".join(f"{p.layer} ({p.kind}: {p.how})" for p in unusual) if unusual else ""),
                       highlight=False, soft_wrap=True)
    start = time.perf_counter()
    history = qmodel.fit(x[0] if len(x) == 1 else x, y, validation_data=val, epochs=epochs,
                         batch_size=batch_size, shuffle=True, verbose=0,
                         callbacks=[epoch_callback(epochs, show)])
    seconds = time.perf_counter() - start
    return QATResult(
        model=qmodel, float_model=base, plan=plan,
        history={k: [float(v) for v in vals] for k, vals in history.history.items()},
        epochs=epochs, seconds=seconds, rebuild_max_diff=diff, preprocess=preprocess,
        train_source=train_src, labels=names)

