"""The edgeq metadata entry a converted ``.tflite`` carries.

The host writes it (``edgeq.convert``) as a flatbuffer ``metadata`` entry named
``"edgeq"`` holding UTF-8 JSON; anything with this package reads it back with
``flatbuffers`` alone. It says how to preprocess inputs, the class labels, the
quantization mode and I/O, where the model came from, and its task (with the
settings a board evaluates it with); metadata written before ``task`` existed reads
as ``task=None``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelFileError
from ..results.report_json import dumps_json
from .flatbuffer import ModelSource, read_flat_model
from .preprocess import Preprocess

__all__ = ["METADATA_NAME", "METADATA_VERSION", "EdgeqMetadata", "read_metadata"]

METADATA_NAME = "edgeq"
METADATA_VERSION = 1


@dataclass(frozen=True)
class EdgeqMetadata:
    """Everything a board needs to evaluate a model edgeq converted."""

    mode: str
    io: str = "float"
    preprocess: Preprocess | None = None
    labels: tuple[str, ...] | None = None
    source: str | None = None
    edgeq_version: str | None = None
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: what the model does: ``"classification"``, ``"detection"``, ``"segmentation"`` (None: not said)
    task: str | None = None
    #: the task's settings a board evaluates with, e.g. ``{"class_offset": 1}`` for detection,
    #: ``{"ignore_index": 255, "num_classes": 21}`` for segmentation, ``{"outputs": {"boxes": ...}}``
    task_settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize to the JSON stored in the model."""
        return dumps_json({
            "schema": METADATA_VERSION,
            "mode": self.mode,
            "io": self.io,
            "preprocess": None if self.preprocess is None else self.preprocess.to_dict(),
            "labels": None if self.labels is None else list(self.labels),
            "source": self.source,
            "edgeq_version": self.edgeq_version,
            "created": self.created,
            "extra": self.extra,
            "task": self.task,
            "task_settings": self.task_settings,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> EdgeqMetadata:
        """Parse the JSON stored in the model."""
        d = json.loads(text)
        pre = d.get("preprocess")
        labels = d.get("labels")
        return cls(
            mode=str(d.get("mode", "unknown")),
            io=str(d.get("io", "float")),
            preprocess=None if pre is None else Preprocess.from_dict(pre),
            labels=None if labels is None else tuple(str(x) for x in labels),
            source=d.get("source"),
            edgeq_version=d.get("edgeq_version"),
            created=d.get("created"),
            extra=dict(d.get("extra") or {}),
            task=None if d.get("task") is None else str(d["task"]),
            task_settings=dict(d.get("task_settings") or {}),
        )


def read_metadata(model: ModelSource) -> EdgeqMetadata | None:
    """Return the edgeq metadata of a ``.tflite`` (path or bytes), or None if it has none.

    Raises:
        ModelFileError: the file is not a readable TFLite model, or its edgeq entry is corrupt.
    """
    flat = read_flat_model(model)
    raw = flat.metadata.get(METADATA_NAME)
    if raw is None:
        return None
    try:
        return EdgeqMetadata.from_json(raw.decode("utf-8"))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelFileError("the model's edgeq metadata entry is not valid JSON", argument="model",
                             fix="convert the model again with edgeq") from exc
