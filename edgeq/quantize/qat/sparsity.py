"""Weight clustering and magnitude pruning, fine-tuned, then int8 that keeps them.

``cluster(model, train, clusters=16)`` and ``prune(model, train, sparsity=0.5)`` follow the
QAT route (:mod:`edgeq.quantize.qat.train`): the model is rebuilt in ``tf_keras`` when it is
Keras 3, then

1. each layer tensorflow-model-optimization can cluster (or prune) is wrapped: clustering
   shares each kernel's values among N centroids (initialised equally spaced over the
   kernel's range, see below), pruning zeroes
   the smallest-magnitude weights up to the target sparsity on a schedule
   (``polynomial``: from 0 to the target over the first 70% of the steps, tfmot's
   ``PolynomialDecay``; ``constant``: the target from the first step, ``ConstantSparsity``);
   layers with weights it cannot handle are listed and left as they are;
2. the model is fine-tuned on the training data, then the wrappers are stripped;
3. quantization-aware training with tfmot's cluster-preserving scheme (with one weight
   scale per kernel, see below) or its pruning-preserving one
   (``Default8BitPrunePreserveQuantizeScheme``), so int8 keeps the clusters or the zeros;
4. :meth:`SparsityResult.convert` exports the int8 ``.tflite``.

Clustering pays only after compression (gzip, what a fleet update downloads), so two
choices aim at a small compressed file:

- One int8 scale per clustered kernel, not one per output channel (tfmot's default for
  convolutions). With per-channel scales the N shared centroids become up to N different
  int8 codes in every channel, many across the kernel; with one scale the whole kernel
  holds at most N codes (tfmot's QAT trains one copy of the centroids per output channel;
  the copies, which drift apart a little, are tied back after it). Measured with 16 clusters (gzip level 9, ratio to the plain int8
  file of the same model, top-1 on the 1,000 test digits): the demo digits CNN (57k weights,
  mostly one dense layer, already one scale per kernel) 0.551x per channel, 0.534x per
  kernel, 93.3% and 93.4%; a four-convolution digits CNN (249k weights, mostly convolution)
  0.575x per channel, 0.487x per kernel, 93.5% and 93.6%.
- Centroids initialised equally spaced (tfmot's ``LINEAR``), not by k-means++: most weights
  are small and share a few central centroids, so the codes' entropy is lower. On the demo
  CNN, k-means++ gave 0.618x (per channel) and 0.609x (per kernel), top-1 93.7% and 93.4%.

tfmot's wrappers wrap the model's own layer objects and replace their kernels by tensors,
so a layer wrapped once cannot be wrapped again: tfmot 0.8.1's pruning then fails during
``fit`` with ``AttributeError: 'EagerTensor' object has no attribute 'assign'`` inside
``tf_compat.assign``. Every technique here therefore works on its own fresh copy of the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.results.result_view import html_table, plain_text

from edgeq.errors import InvalidArgumentError, QATError
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import _console, progress_enabled
from edgeq.quantize.qat.data import positive
from edgeq.quantize.qat.plan import LayerPlan, _unsafe_lambdas, plan_quantization, quantize_model
from edgeq.quantize.qat.ranges import freeze_batch_norms, start_ranges
from edgeq.quantize.qat.train import QATResult, epoch_callback, loss_for, qat, read_training, to_tf_keras
from edgeq.quantize.result import ConversionResult

__all__ = ["SCHEDULES", "TECHNIQUES", "TRAINED_MODES", "SparsityResult", "check_clusters", "check_sparsity",
           "cluster", "prune", "trained_results"]

#: The weight techniques of this module, by the name their mode has in ``compare``.
TECHNIQUES = ("clustered", "pruned")
#: The modes that need training data (``compare(train=...)``).
TRAINED_MODES = ("qat", "clustered", "pruned")
#: Pruning schedules: how sparsity grows during fine-tuning.
SCHEDULES = ("polynomial", "constant")
_WEIGHTED = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def check_clusters(clusters: Any, argument: str = "clusters") -> int:
    """``clusters`` if it is an integer from 2 to 256, else :class:`InvalidArgumentError`."""
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) or not 2 <= clusters <= 256:
        raise InvalidArgumentError("must be an integer from 2 to 256", argument=argument, received=clusters,
                                   fix="give e.g. 16 (one centroid is no model; int8 weights hold at most 256 "
                                       "values)")
    return int(clusters)


def check_sparsity(sparsity: Any, argument: str = "sparsity") -> float:
    """``sparsity`` if it is a number strictly between 0 and 1, else :class:`InvalidArgumentError`."""
    if (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating))
            or not math.isfinite(sparsity) or not 0 < sparsity < 1):
        raise InvalidArgumentError("must be a fraction of the weights strictly between 0 and 1",
                                   argument=argument, received=sparsity,
                                   fix="give e.g. 0.5 (half of each pruned kernel set to zero)")
    return float(sparsity)


@dataclass(frozen=True)
class SparsityResult(QATResult):
    """A clustered or pruned, then cluster- or pruning-preserving QAT trained, ``tf_keras`` model.

    As :class:`~edgeq.quantize.qat.train.QATResult` (``convert()`` exports the int8 ``.tflite``), and:

    Attributes:
        technique: ``clustered`` or ``pruned``.
        amount: the clusters per kernel, or the target sparsity.
        fine_tune_history: per-epoch metrics of the clustering or pruning fine-tuning
            (``history`` is the QAT's that follows).
        fine_tune_epochs: epochs of that fine-tuning.
        weighted: the layers clustered or pruned.
        skipped: layers with weights that were left as they are, and why.
    """

    technique: str = "clustered"
    amount: float = 0.0
    fine_tune_history: dict[str, list[float]] = field(default_factory=dict)
    fine_tune_epochs: int = 0
    weighted: tuple[str, ...] = ()
    skipped: tuple[LayerPlan, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return dict(super().to_dict(), schema="edgeq/sparsity/1", technique=self.technique, amount=self.amount,
                    fine_tune_epochs=self.fine_tune_epochs, fine_tune_history=self.fine_tune_history,
                    weighted=list(self.weighted), skipped=[p.to_dict() for p in self.skipped])

    def __str__(self) -> str:
        return plain_text(f"{self.technique} {self.model.name}", self._view())

    def _repr_html_(self) -> str:
        """The summary as an HTML table (notebooks)."""
        return html_table(f"{self.technique} {self.model.name}", self._view())

    def _view(self) -> dict[str, Any]:
        what = (f"{int(self.amount)} clusters per kernel" if self.technique == "clustered"
                else f"{self.amount:.0%} sparsity")
        last = {k: v[-1] for k, v in self.fine_tune_history.items() if v}
        return {"technique": what, "fine-tuning epochs": self.fine_tune_epochs, "fine-tuning last epoch": last,
                **super()._view(), "layers": ", ".join(self.weighted),
                "left as they are": ", ".join(f"{p.layer} ({p.reason})" for p in self.skipped) or "none"}


def _fresh_copy(model: Any) -> Any:
    """A copy of a ``tf_keras`` model with new layer objects and the same weights (see the module docstring)."""
    import tf_keras

    with _unsafe_lambdas():
        copy = tf_keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _choose_layers(model: Any, technique: str, clusters: int) -> tuple[set[str], tuple[LayerPlan, ...]]:
    """The layers to wrap, and those with weights left as they are (with the reason)."""
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import (
        ClusteringRegistry,
    )
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    registry: Any = ClusteringRegistry if technique == "clustered" else PruneRegistry
    chosen: set[str] = set()
    skipped = []
    for layer in model.layers:
        kernels = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0] in _WEIGHTED]
        if not kernels:
            continue
        kind = type(layer).__name__
        if not registry.supports(layer):
            skipped.append(LayerPlan(layer.name, kind, "float32 weights" if technique == "pruned" else "unclustered",
                                     f"tensorflow-model-optimization cannot {technique[:-2]} a {kind}"))
        elif technique == "clustered" and min(int(np.prod(w.shape)) for w in kernels) <= clusters:
            skipped.append(LayerPlan(layer.name, kind, "unclustered",
                                     f"{min(int(np.prod(w.shape)) for w in kernels)} weights, not more than "
                                     f"{clusters} clusters"))
        else:
            chosen.add(layer.name)
    return chosen, tuple(skipped)


def _wrap(model: Any, technique: str, chosen: set[str], clusters: int, sparsity: float, schedule: str,
          steps: int) -> tuple[Any, list[Any]]:
    """The model with the chosen layers wrapped for clustering or pruning, and the ``fit`` callbacks it needs."""
    import tensorflow_model_optimization as tfmot
    import tf_keras

    callbacks: list[Any] = []
    if technique == "clustered":
        ck = tfmot.clustering.keras
        init = ck.CentroidInitialization.LINEAR  # lower code entropy than k-means++ (module docstring)

        def wrap(layer: Any) -> Any:
            return ck.cluster_weights(layer, number_of_clusters=clusters, cluster_centroids_init=init)
    else:
        pk = tfmot.sparsity.keras
        end = max(1, int(steps * 0.7))
        sched = (pk.ConstantSparsity(sparsity, begin_step=0, frequency=max(1, steps // 20))
                 if schedule == "constant"
                 else pk.PolynomialDecay(0.0, sparsity, begin_step=0, end_step=end, frequency=max(1, end // 10)))
        callbacks.append(pk.UpdatePruningStep())

        def wrap(layer: Any) -> Any:
            return pk.prune_low_magnitude(layer, pruning_schedule=sched)

    def clone_function(layer: Any) -> Any:
        # ``model`` is this run's own copy: its other layers are used as they are, weights and all.
        return wrap(layer) if layer.name in chosen else layer

    with _unsafe_lambdas():
        wrapped = tf_keras.models.clone_model(model, clone_function=clone_function)
    return wrapped, callbacks


def _strip(model: Any, technique: str) -> Any:
    import tensorflow_model_optimization as tfmot

    if technique == "clustered":
        return tfmot.clustering.keras.strip_clustering(model)
    return tfmot.sparsity.keras.strip_pruning(model)


def _scheme(technique: str) -> Any:
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
        default_8bit_prune_preserve_quantize_scheme as prune_preserve,
    )

    if technique == "clustered":
        return _per_kernel_scheme()
    return prune_preserve.Default8BitPrunePreserveQuantizeScheme()


def _per_kernel_scheme() -> Any:
    """tfmot's cluster-preserving 8-bit scheme with one weight scale per kernel (not per output channel)."""
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        cluster_preserve_quantize_registry as registry,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as cluster_preserve,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as default_registry,
    )

    class Registry(registry.Default8bitClusterPreserveQuantizeRegistry):  # type: ignore[misc]
        def __init__(self, preserve_sparsity: bool) -> None:
            super().__init__(preserve_sparsity)
            self.preserve_sparsity = preserve_sparsity

        def get_quantize_config(self, layer: Any) -> Any:
            if not self.supports(layer):  # as tfmot's registry: quantize_model leaves the layer float
                raise ValueError(f"Layer {type(layer)} is not supported.")
            config = default_registry.Default8BitQuantizeRegistry(disable_per_axis=True).get_quantize_config(layer)
            if self._no_trainable_weights(layer) or self._disable_cluster_preserve(layer):
                return config
            config.weight_quantizer = registry.ClusterPreserveDefault8BitWeightsQuantizer(self.preserve_sparsity)
            return config

    class Scheme(cluster_preserve.Default8BitClusterPreserveQuantizeScheme):  # type: ignore[misc]
        def get_quantize_registry(self) -> Any:
            return Registry(self.preserve_sparsity)

    return Scheme(preserve_sparsity=False)


def _train(model: Any, technique: str, amount: float, *, schedule: str, train: Any, validation: Any,
           epochs: int, qat_epochs: int, learning_rate: float, batch_size: int, preprocess: Preprocess | None,
           samples: int | None, seed: int, tolerance: float, progress: bool | None,
           labels: Sequence[str] | str | os.PathLike[str] | None) -> SparsityResult:
    import tf_keras

    positive(epochs, "epochs", "2")
    positive(qat_epochs, "qat_epochs", "1")
    positive(batch_size, "batch_size", "32")
    positive(learning_rate, "learning_rate", "1e-4", integer=False)
    if samples is not None:
        positive(samples, "samples", "2000")
    data = read_training(model, train, validation, preprocess, labels, samples, seed)
    x = data.x[0] if len(data.x) == 1 else data.x
    show = progress_enabled(progress)
    tf_keras.utils.set_random_seed(seed)
    rebuilt, diff = to_tf_keras(data.loaded, [a[:8] for a in data.x], tolerance)
    base = _fresh_copy(rebuilt)
    clusters = int(amount) if technique == "clustered" else 0
    chosen, skipped = _choose_layers(base, technique, clusters)
    if not chosen:
        raise QATError(f"no layer of the model can be {technique}", argument="model", received=data.loaded.name,
                       fix="give a model with Conv2D, DepthwiseConv2D or Dense layers")
    steps = epochs * -(-len(data.y) // batch_size)
    loss = loss_for(base, data.x)  # before wrapping, which takes over base's layers
    wrapped, callbacks = _wrap(base, technique, chosen, clusters, amount, schedule, steps)
    wrapped.compile(optimizer=tf_keras.optimizers.Adam(learning_rate=float(learning_rate)), loss=loss,
                    metrics=["accuracy"])
    what = f"{clusters} clusters" if technique == "clustered" else f"{amount:.0%} sparsity ({schedule})"
    if show:
        _console.print(f"{technique}: {len(data.y)} training samples, {what} on {len(chosen)} layer(s): "
                       f"{', '.join(sorted(chosen))}"
                       + ("; left as they are: " + ", ".join(f"{p.layer} ({p.reason})" for p in skipped)
                          if skipped else ""), highlight=False, soft_wrap=True)
    start = time.perf_counter()
    tuned = wrapped.fit(x, data.y, validation_data=data.validation, epochs=epochs, batch_size=batch_size,
                        shuffle=True, verbose=0, callbacks=[*callbacks, epoch_callback(epochs, show, technique)])
    stripped = _strip(wrapped, technique)
    plan = plan_quantization(stripped)
    qmodel, plan = quantize_model(stripped, plan, scheme=_scheme(technique))
    start_ranges(qmodel, data.x, batch_size=batch_size, seed=seed)
    freeze_batch_norms(qmodel)  # the preserving QAT epoch keeps the statistics the fine-tune left
    qmodel = tf_keras.Model(qmodel.inputs, qmodel.outputs, name=f"{data.loaded.name}_{technique}")
    qmodel.compile(optimizer=tf_keras.optimizers.Adam(learning_rate=float(learning_rate)), loss=loss,
                   metrics=["accuracy"])
    with _quiet_tf():  # the preserving schemes train the centroids, not the kernels: tf warns per step
        history = qmodel.fit(x, data.y, validation_data=data.validation, epochs=qat_epochs, batch_size=batch_size,
                             shuffle=True, verbose=0, callbacks=[epoch_callback(qat_epochs, show, "qat")])
    if technique == "clustered":
        _tie_clusters(qmodel, stripped, chosen)
    return SparsityResult(
        model=qmodel, float_model=stripped, plan=plan,
        history={k: [float(v) for v in vals] for k, vals in history.history.items()}, epochs=qat_epochs,
        seconds=time.perf_counter() - start, rebuild_max_diff=diff, preprocess=data.preprocess,
        train_source=data.source, labels=data.labels, technique=technique, amount=amount,
        fine_tune_history={k: [float(v) for v in vals] for k, vals in tuned.history.items()},
        fine_tune_epochs=epochs, weighted=tuple(sorted(chosen)), skipped=skipped)


def _tie_clusters(qmodel: Any, stripped: Any, chosen: set[str]) -> None:
    """Give every clustered kernel of the QAT model at most its N clustered values again.

    tfmot's cluster-preserving QAT trains one copy of the centroids per output channel, so
    the copies of a centroid drift apart by a little, enough to round to two int8 codes.
    Each kernel value is put back with the others nearest the same centroid of the
    clustered (``stripped``) model, as their mean.
    """
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", None)
        # the wrapper holds the kernel variable (``conv/kernel:0``), beside ``quant_conv/kernel_min:0``
        kernels = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0] == "kernel"]
        if inner is None or inner.name not in chosen or len(kernels) != 1:
            continue
        centroids = np.unique(stripped.get_layer(inner.name).get_weights()[0])
        values = kernels[0].numpy()
        nearest = np.abs(values[..., None] - centroids).argmin(axis=-1)
        for j in np.unique(nearest):
            values[nearest == j] = values[nearest == j].mean()
        kernels[0].assign(values)


@contextlib.contextmanager
def _quiet_tf() -> Any:
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


@quiet_native_logs()
def cluster(model: Any, train: Any, *, clusters: int = 16, validation: Any = None, epochs: int = 2,
            qat_epochs: int = 1, learning_rate: float = 1e-4, batch_size: int = 32,
            preprocess: Preprocess | None = None, samples: int | None = None, seed: int = 0,
            tolerance: float = 1e-5, progress: bool | None = None,
            labels: Sequence[str] | str | os.PathLike[str] | None = None) -> SparsityResult:
    """Cluster each kernel's weights to ``clusters`` values, fine-tune, then cluster-preserving QAT.

    Args:
        model: a Keras 3 or tf_keras classifier, or a ``.keras``/``.h5`` file.
        train: labeled training data, in the forms :func:`edgeq.qat` takes.
        clusters: centroids per kernel, 2 to 256 (16: 4 bits of information per weight).
        validation: labeled validation data (optional).
        epochs: epochs of fine-tuning with clustered weights.
        qat_epochs: epochs of cluster-preserving quantization-aware training after it.
        learning_rate, batch_size, preprocess, samples, seed, tolerance, progress, labels: as :func:`edgeq.qat`.

    Returns:
        a :class:`SparsityResult`; ``.convert()`` writes the int8 ``.tflite``, each clustered kernel
        holding at most ``clusters`` distinct int8 values (one weight scale per kernel).

    Raises:
        InvalidArgumentError: ``clusters`` outside 2..256, or another bad option.
        QATError: no layer can be clustered, or the model cannot be rebuilt or prepared.
        DataError, LabelMismatchError: as :func:`edgeq.qat`.
    """
    n = check_clusters(clusters)
    return _train(model, "clustered", n, schedule="", train=train, validation=validation, epochs=epochs,
                  qat_epochs=qat_epochs, learning_rate=learning_rate, batch_size=batch_size, preprocess=preprocess,
                  samples=samples, seed=seed, tolerance=tolerance, progress=progress, labels=labels)


@quiet_native_logs()
def prune(model: Any, train: Any, *, sparsity: float = 0.5, schedule: str = "polynomial", validation: Any = None,
          epochs: int = 2, qat_epochs: int = 1, learning_rate: float = 1e-4, batch_size: int = 32,
          preprocess: Preprocess | None = None, samples: int | None = None, seed: int = 0,
          tolerance: float = 1e-5, progress: bool | None = None,
          labels: Sequence[str] | str | os.PathLike[str] | None = None) -> SparsityResult:
    """Zero the smallest-magnitude weights of each kernel to ``sparsity``, fine-tune, then pruning-preserving QAT.

    Args:
        model: a Keras 3 or tf_keras classifier, or a ``.keras``/``.h5`` file.
        train: labeled training data, in the forms :func:`edgeq.qat` takes.
        sparsity: the fraction of each pruned kernel set to zero, strictly between 0 and 1.
        schedule: ``polynomial`` (from 0 to ``sparsity`` over the first 70% of the fine-tuning steps)
            or ``constant`` (``sparsity`` from the first step).
        validation: labeled validation data (optional).
        epochs: epochs of fine-tuning while pruning.
        qat_epochs: epochs of pruning-preserving quantization-aware training after it.
        learning_rate, batch_size, preprocess, samples, seed, tolerance, progress, labels: as :func:`edgeq.qat`.

    Returns:
        a :class:`SparsityResult`; ``.convert()`` writes the int8 ``.tflite`` whose pruned kernels
        keep the zeros.

    Raises:
        InvalidArgumentError: ``sparsity`` not in (0, 1), an unknown ``schedule``, or another bad option.
        QATError: no layer can be pruned, or the model cannot be rebuilt or prepared.
        DataError, LabelMismatchError: as :func:`edgeq.qat`.
    """
    s = check_sparsity(sparsity)
    if schedule not in SCHEDULES:
        raise InvalidArgumentError("unknown pruning schedule", argument="schedule", received=schedule,
                                   fix=f"use one of: {', '.join(SCHEDULES)}")
    return _train(model, "pruned", s, schedule=schedule, train=train, validation=validation, epochs=epochs,
                  qat_epochs=qat_epochs, learning_rate=learning_rate, batch_size=batch_size, preprocess=preprocess,
                  samples=samples, seed=seed, tolerance=tolerance, progress=progress, labels=labels)


def trained_results(model: Any, modes: Sequence[str], train: Any, *, clusters: int = 16, sparsity: float = 0.5,
                    epochs: int = 2, calibration: Any = None, samples: int = 200, seed: int = 0, io: str = "float",
                    preprocess: Preprocess | None = None, labels: Sequence[str] | None = None,
                    progress: bool | None = None) -> dict[str, ConversionResult]:
    """The int8 ``.tflite`` of each of ``modes`` (``qat``, ``clustered``, ``pruned``), trained on ``train``.

    Each result's source name ends in the mode (``<model>_clustered``), so its file name differs
    from the plain int8 one. ``calibration`` (default: the training data) fills in any tensor
    training did not quantize.
    """
    found: dict[str, ConversionResult] = {}
    for mode in modes:
        common: dict[str, Any] = dict(epochs=epochs, preprocess=preprocess, seed=seed, progress=progress,
                                      labels=labels or None)
        if mode == "clustered":
            result: QATResult = cluster(model, train, clusters=clusters, **common)
        elif mode == "pruned":
            result = prune(model, train, sparsity=sparsity, **common)
        elif mode == "qat":
            result = qat(model, train, **common)
        else:
            raise InvalidArgumentError("not a mode that trains", argument="modes", received=mode,
                                       fix=f"use one of: {', '.join(TRAINED_MODES)}")
        res = result.convert(io=io, calibration=calibration, samples=samples, seed=seed, progress=progress)
        found[mode] = (res if res.source_name.endswith(f"_{mode}")
                       else dataclasses.replace(res, source_name=f"{res.source_name}_{mode}"))
    return found
