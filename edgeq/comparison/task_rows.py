"""The task side of a comparison: detection mAP or segmentation mIoU of the Keras model and of every mode,
and every mode's fidelity to the Keras model's outputs (:func:`edgeq.compare` with ``task=``).

:class:`TaskRun` holds what the Keras model gave before any conversion (so bad
annotations or masks fail first, with nothing written); :meth:`TaskRun.measure` then
scores one converted model through ``edgeq_device``'s one evaluation loop
(:mod:`edgeq.measure.tasks`) and its outputs against the Keras model's
(:mod:`edgeq.measure.reference`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.tasks.masks import IgnoreLike, LabelMapLike

from edgeq.inputs.models import LoadedModel
from edgeq.measure.reference import (
    fidelity_rows,
    keras_all_outputs,
    match_outputs,
    npz_bytes,
    reference_arrays,
    tflite_fidelity,
)
from edgeq.measure.tasks import (
    TaskData,
    TaskScore,
    keras_task_score,
    load_task_data,
    task_roles,
    tflite_task_score,
)

__all__ = ["TaskRun", "keras_output_names", "reference_files", "summary_fidelity"]


def keras_output_names(loaded: LoadedModel, x: np.ndarray) -> list[str]:
    """The Keras model's output names in :meth:`LoadedModel.predict`'s order (dict keys where it answers a
    dict, else its ``output_names``, else ``output_0 ..``)."""
    if loaded.kind in ("keras3", "tf_keras"):
        out = loaded.obj(x[:1], training=False)
        if isinstance(out, dict):
            return [str(k) for k in out]
        names = getattr(loaded.obj, "output_names", None)
        if names and len(names) == loaded.num_outputs:
            return [str(n) for n in names]
    return [f"output_{i}" for i in range(loaded.num_outputs)]


def summary_fidelity(outputs: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """One row's fidelity figures from its outputs': the lowest SQNR and cosine, the largest error, and the
    first arg-max agreement of a vector output."""
    if not outputs:
        return {"sqnr_db": None, "cosine": None, "max_abs_error": None, "agreement": None}
    agree = next((o["argmax_agreement"] for o in outputs if o.get("argmax_agreement") is not None), None)
    return {"sqnr_db": min(float(o["sqnr_db"]) for o in outputs), "cosine": min(float(o["cosine"]) for o in outputs),
            "max_abs_error": max(float(o["max_abs_error"]) for o in outputs), "agreement": agree}


def reference_files(model_bytes: bytes, x: np.ndarray, outputs: list[np.ndarray],
                    names: Sequence[str] | None = None) -> dict[str, bytes]:
    """``inputs.npz`` and ``reference.npz`` keyed as the converted model (see :mod:`edgeq.measure.reference`)."""
    ins, ref = reference_arrays(model_bytes, x, outputs, names)
    return {"inputs.npz": npz_bytes(ins), "reference.npz": npz_bytes(ref)}


@dataclass
class TaskRun:
    """A task's evaluation data and the Keras model's figures on it; :meth:`measure` scores one mode."""

    data: TaskData
    preprocess: Preprocess
    keras_outputs: list[np.ndarray]
    keras_names: list[str]
    keras_score: TaskScore
    roles: dict[str, int] | None
    class_offset: int
    ignore_index: IgnoreLike
    progress: bool | None
    class_names: tuple[str, ...] | None = None
    scores: dict[str, TaskScore] = field(default_factory=dict)
    _reference: tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None = None

    @classmethod
    def start(cls, task: str, loaded: LoadedModel, evaluation: str | os.PathLike[str], preprocess: Preprocess | None,
              *, annotations: str | os.PathLike[str] | None, masks: str | os.PathLike[str] | None,
              outputs: Mapping[str, str] | None, class_offset: int, ignore_index: IgnoreLike,
              class_names: Sequence[str] | None, limit: int | None, seed: int,
              progress: bool | None, label_map: LabelMapLike = None) -> TaskRun:
        """Read and check the data, run the Keras model on it and score it (before any conversion).

        Raises:
            InvalidArgumentError, DataError: see :func:`edgeq.measure.tasks.load_task_data`,
                :func:`~edgeq.measure.tasks.task_roles` and :func:`~edgeq.measure.tasks.keras_task_score`.
        """
        data = load_task_data(task, evaluation, preprocess, annotations=annotations, masks=masks, limit=limit,
                              seed=seed, label_map=label_map)
        assert preprocess is not None
        outs = keras_all_outputs(loaded, data.x)
        names = keras_output_names(loaded, data.x)
        roles = task_roles(names, outputs) if task == "detection" else None
        score = keras_task_score(data, outs, roles=roles, class_offset=class_offset, ignore_index=ignore_index,
                                 class_names=class_names)
        return cls(data, preprocess, outs, names, score, roles, class_offset, ignore_index, progress,
                   tuple(class_names) if class_names else None)

    @property
    def task(self) -> str:
        """``detection`` or ``segmentation``."""
        return self.data.task

    def files(self, model_bytes: bytes) -> dict[str, bytes]:
        """``inputs.npz`` and ``reference.npz`` for a converted model of this Keras model."""
        return reference_files(model_bytes, self.data.x, self.keras_outputs, self.keras_names)

    def measure(self, name: str, model_bytes: bytes) -> dict[str, Any]:
        """The task figures and per-output fidelity of one mode (ModeRow fields)."""
        outputs = None
        if self.roles is not None:
            keys = match_outputs(model_bytes, self.keras_names, len(self.keras_outputs))
            outputs = {role: keys[pos] for role, pos in self.roles.items()}
        score = tflite_task_score(model_bytes, self.data, self.preprocess, outputs=outputs,
                                  class_offset=self.class_offset, ignore_index=self.ignore_index,
                                  class_names=self.class_names, progress=self.progress)
        self.scores[name] = score
        if self._reference is None:
            self._reference = reference_arrays(model_bytes, self.data.x, self.keras_outputs, self.keras_names)
        fid = fidelity_rows(tflite_fidelity(model_bytes, *self._reference, progress=self.progress))
        first = next(iter(score.metrics))
        keras_first = self.keras_score.metrics[first]
        return {"task_metrics": dict(score.metrics), "outputs_fidelity": fid,
                "task_change_points": (score.metrics[first] - keras_first) * 100, **summary_fidelity(fid)}

    def keras_fields(self) -> dict[str, Any]:
        """The Keras row's task fields."""
        return {"task_metrics": dict(self.keras_score.metrics), "task_change_points": 0.0}

    def details(self, keras: str) -> dict[str, Any]:
        """What the task's plots draw (``Comparison.task_details``), the Keras row under ``keras``."""
        every = {keras: self.keras_score, **self.scores}

        def clean(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        out: dict[str, Any] = {"per_class": {n: {c: clean(v) for c, v in s.per_class.items()}
                                             for n, s in every.items()}}
        if self.task == "detection":
            out["curves"] = {n: s.curve for n, s in every.items() if s.curve is not None}
        out["seconds"] = {n: s.seconds for n, s in self.scores.items()}
        return out
