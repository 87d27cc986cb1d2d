"""Top-1 accuracy and latency of ``.tflite`` bytes on this machine, for the accuracy budget.

Labeled evaluation data is read once (:class:`EvalData`): an image folder is streamed
through ``edgeq_device.tasks.evaluation.predict``, the loop a board runs; arrays are held in
memory and run through ``edgeq_device``'s :class:`~edgeq_device.run.runtime.ModelRunner`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from edgeq_device.measure.bench import LatencyStats, random_inputs, time_invocations
from edgeq_device.model.metadata import read_metadata
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.model.tflite_metadata import read_tflite_metadata
from edgeq_device.run.runtime import ModelRunner
from edgeq_device.tasks.evaluation import model_preprocess, output_classes, predict

from edgeq.errors import DataError
from edgeq.inputs.data import DataSource, ImageFolder, as_source, check_label_range
from edgeq.inputs.models import InputSpec, LoadedModel, load_model
from edgeq.quantize.calibration import default_preprocess

__all__ = ["EvalData", "latency_ms", "top1_accuracy"]


class EvalData:
    """The labeled evaluation data, read once: an image folder (streamed through the shared
    ``edgeq_device.tasks.evaluation.predict`` loop) or arrays held in memory.

    Raises:
        DataError: the data has no labels or no sample; LabelMismatchError: a label is not
            one of the model's ``outputs``.
    """

    def __init__(self, source: DataSource, loaded: LoadedModel, limit: int | None, seed: int,
                 outputs: int) -> None:
        if not source.has_labels:
            raise DataError("evaluation data needs labels", argument="evaluation", received=source.description,
                            fix="give an image folder with one subfolder per class, or (x, y) arrays")
        self.description = source.description
        self.listing = None
        self.preprocess: Preprocess | None = None
        if isinstance(source, ImageFolder):
            listing = source.listing.fit_outputs(outputs, "evaluation")
            self.listing = listing.sample(limit, seed) if limit is not None else listing
            self.preprocess = source.preprocess
            self.count = len(self.listing)
            return
        xs, ys = [], []
        names = [s.name for s in loaded.inputs]
        for sample in source.samples(limit=limit, seed=seed):
            x = sample.inputs
            if isinstance(x, dict):
                x = [x[n] for n in names]
            xs.append(x)
            ys.append(sample.label)
        if not xs:
            raise DataError("the evaluation source gave no sample", argument="evaluation",
                            received=source.description, fix="give a source with labeled samples")
        self.x = [np.stack([np.asarray(x[i]) for x in xs]).astype(np.float32) for i in range(len(names))] \
            if isinstance(xs[0], list) else [np.stack([np.asarray(x) for x in xs]).astype(np.float32)]
        self.y = np.asarray(ys, np.int64)
        self.count = len(self.y)
        check_label_range(self.y, outputs, "evaluation", source.description)

    def outputs(self, model_bytes: bytes) -> tuple[np.ndarray, np.ndarray]:
        """The model's outputs on every sample (one row each) and the labels, in the same order."""
        if self.listing is not None:
            assert self.preprocess is not None
            out, labels = predict(model_bytes, self.listing, self.preprocess)
            assert labels is not None
            return out, labels
        runner = ModelRunner(model_bytes)
        dynamic = any(int(s) < 0 for d in runner.input_details
                      for s in d.get("shape_signature", d["shape"])[:1])
        step = 64 if dynamic else 1
        outs = []
        for i in range(0, self.count, step):
            batch = [x[i:i + step] for x in self.x]
            outs.append(np.asarray(runner.run(batch)[0]).reshape(len(batch[0]), -1))
        return np.concatenate(outs), self.y

    def top1(self, model_bytes: bytes) -> float:
        """Top-1 accuracy (0..1) of the model on the data."""
        out, y = self.outputs(model_bytes)
        return float((out.argmax(axis=1) == y).mean()) if len(y) else 0.0


def top1_accuracy(model: bytes, evaluation: Any, *, source_model: Any = None, preprocess: Preprocess | None = None,
                  limit: int | None = None, seed: int = 0) -> float:
    """Top-1 accuracy (0..1) of ``.tflite`` bytes on labeled data (an image folder, ``(x, y)`` arrays...).

    An image folder's class folders are matched to the model's metadata labels by name, else
    numbered as :mod:`edgeq_device.run.images` says.

    ``source_model`` (the Keras model) tells input names and the default preprocessing;
    without it, the ``.tflite``'s own input shape does.
    """
    loaded = load_model(source_model) if source_model is not None else None
    if preprocess is None and loaded is not None and len(loaded.inputs) == 1:
        preprocess = default_preprocess(loaded.inputs[0])
    if preprocess is None and loaded is None:
        preprocess = model_preprocess(model)
    meta = read_metadata(model)
    labels = meta.labels if meta is not None else None
    if labels is None:  # a model made elsewhere: the labels its standard TFLite metadata packs, if they fit
        std_meta = read_tflite_metadata(model, strict=False)
        labels = std_meta.class_names(output_classes(model)) if std_meta is not None else None
    src = as_source(evaluation, preprocess, argument="evaluation", labels=labels)
    if loaded is None:
        loaded = LoadedModel("tflite", None, "model", [InputSpec("input", (None,))], 1)
    return EvalData(src, loaded, limit, seed, output_classes(model)).top1(model)


def latency_ms(model_bytes: bytes) -> float:
    """Median latency of one inference (batch 1, random input) on this machine, in milliseconds."""
    runner = ModelRunner(model_bytes)
    runner.set_inputs(random_inputs(runner.input_details, seed=0))
    for _ in range(3):
        runner.invoke()
    samples, _ = time_invocations(runner.invoke, runs=20, min_secs=0.05, max_secs=1.0)
    return LatencyStats.from_ns(samples).p50_us / 1000.0
