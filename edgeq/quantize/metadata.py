"""The edgeq metadata a converted model carries: built, checked and embedded in the flatbuffer.

The entry (:class:`~edgeq_device.model.metadata.EdgeqMetadata`, named ``"edgeq"``) tells a board
how to preprocess inputs, the class labels, the mode and I/O, and where the model came from;
``edgeq_device`` reads it back with ``flatbuffers`` alone.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.metadata import METADATA_NAME, EdgeqMetadata
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.tasks.detection import OUTPUT_ROLES

from edgeq._version import __version__
from edgeq.errors import InvalidArgumentError, LabelMismatchError
from edgeq.inputs.data import DataSource, class_labels
from edgeq.quantize.flatbuffer import read_model, write_model
from edgeq.quantize.tflite_metadata import STANDARD_METADATA_NAME, standard_metadata

__all__ = ["MODEL_TASKS", "TASK_SETTINGS", "build_metadata", "check_task", "embed_metadata", "labels_for"]

#: The tasks a converted model can record (``edgeq-device eval`` then needs no ``--task``).
MODEL_TASKS = ("classification", "detection", "segmentation")
#: The settings each task records, read by ``edgeq_device.tasks.registry.evaluate_task`` on the board.
TASK_SETTINGS: dict[str, tuple[str, ...]] = {
    "classification": (),
    "detection": ("class_offset", "num_classes", "outputs"),
    "segmentation": ("ignore_index", "num_classes"),
}


def _int_setting(value: Any, key: str, low: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidArgumentError(f"task setting {key!r} must be an integer >= {low}", argument="task_settings",
                                   received={key: value}, fix=f"give e.g. {{{key!r}: {example}}}")
    return value


def check_task(task: str | None, settings: dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """``(task, settings)`` checked and normalized for the metadata.

    Detection takes ``class_offset`` (category id = model class + it, default 1), ``num_classes``
    and ``outputs`` (``{"boxes": NAME, "classes": NAME, "scores": NAME, "count": NAME}``, output
    names of the converted model); segmentation ``ignore_index`` (a value >= 0, a list of them,
    or None: every mask value counts) and ``num_classes``; classification none.

    Raises:
        InvalidArgumentError: an unknown task, settings without a task, an unknown or bad setting.
    """
    given = dict(settings or {})
    if task is None:
        if given:
            raise InvalidArgumentError("task settings need a task", argument="task_settings", received=given,
                                       fix=f"give task= one of {', '.join(MODEL_TASKS)} (--task at the CLI)")
        return None, {}
    name = str(task).lower()
    if name not in MODEL_TASKS:
        raise InvalidArgumentError("unknown task", argument="task", received=task,
                                   fix=f"give one of {', '.join(MODEL_TASKS)}")
    allowed = TASK_SETTINGS[name]
    unknown = sorted(k for k in given if k not in allowed)
    if unknown:
        raise InvalidArgumentError(f"{name} has no setting {unknown[0]!r}", argument="task_settings",
                                   received=given, fix=f"its settings are {', '.join(allowed) or 'none'}")
    out: dict[str, Any] = {}
    for key, value in given.items():
        if key == "class_offset":
            out[key] = _int_setting(value, key, -1000, "1")
        elif key == "num_classes":
            out[key] = _int_setting(value, key, 1, "3")
        elif key == "ignore_index":  # one value, several (a list), or None: every value counts
            values = value if isinstance(value, (list, tuple)) else [value]
            checked = [_int_setting(v, key, 0, "255") for v in values if v is not None]
            out[key] = None if not checked else checked[0] if len(checked) == 1 else sorted(set(checked))
        elif key == "outputs":
            roles = value if isinstance(value, dict) else None
            if not roles or any(r not in OUTPUT_ROLES or not isinstance(n, str) or not n for r, n in roles.items()) \
                    or not {"boxes", "classes", "scores"} <= set(roles):
                raise InvalidArgumentError("task setting 'outputs' names the detector's outputs by role",
                                           argument="task_settings", received={key: value},
                                           fix="give {'outputs': {'boxes': NAME, 'classes': NAME, 'scores': NAME, "
                                               "'count': NAME}} (count may be left out)")
            out[key] = {r: roles[r] for r in OUTPUT_ROLES if r in roles}
    return name, out


def build_metadata(*, mode: str, io: str, preprocess: Preprocess | None, labels: Sequence[str] | None,
                   source: str, extra: dict[str, Any], task: str | None = None,
                   task_settings: dict[str, Any] | None = None) -> EdgeqMetadata:
    """The metadata of a conversion made now by this edgeq version (``task``, ``task_settings`` as checked by
    :func:`check_task`)."""
    return EdgeqMetadata(
        mode=mode, io=io, preprocess=preprocess,
        labels=None if labels is None else tuple(str(x) for x in labels),
        source=source, edgeq_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra=extra, task=task, task_settings=dict(task_settings or {}),
    )


def labels_for(labels: Sequence[str] | None, source: DataSource | None, outputs: int) -> tuple[str, ...] | None:
    """The labels to store: one per output, given or from the calibration folder's classes.

    Raises:
        LabelMismatchError: the labels given do not number the outputs.
    """
    if labels is None:
        return None if source is None else class_labels(source, outputs, "calibration")
    names = tuple(str(x) for x in labels)
    if names and len(names) != outputs:
        raise LabelMismatchError(
            f"{len(names)} labels for a model with {outputs} outputs", argument="labels", received=len(names),
            fix=f"give exactly {outputs} labels, one per output in output order (--labels FILE at the CLI), "
                "or labels=() to store none")
    return names or None


def embed_metadata(model_bytes: bytes, metadata: EdgeqMetadata) -> bytes:
    """Return the model with ``metadata`` stored as the flatbuffer metadata entry ``"edgeq"``.

    An image model (``metadata.preprocess`` set) also gets the standard TFLite metadata
    (:func:`edgeq.quantize.tflite_metadata.standard_metadata`: entry ``"TFLITE_METADATA"``, its
    labels file packed after the flatbuffer) that MediaPipe Tasks and TFLite Support read.
    Existing ``"edgeq"`` and ``"TFLITE_METADATA"`` entries are replaced. Uses TFLite's schema
    object API.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(model_bytes)
    standard = standard_metadata(read_flat_model(model_bytes), metadata)
    entries = [(METADATA_NAME, metadata.to_json().encode("utf-8"))]
    if standard is not None:
        entries.append((STANDARD_METADATA_NAME, standard.buffer))
    names = {n for n, _ in entries}
    model.metadata = [m for m in (model.metadata or [])
                      if (m.name.decode() if isinstance(m.name, bytes) else m.name) not in names]
    for name, payload in entries:
        buf = schema.BufferT()
        buf.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    return write_model(model, None if standard is None else standard.files)
