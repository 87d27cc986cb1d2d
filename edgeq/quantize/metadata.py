"""The edgeq metadata a converted model carries: built, checked and embedded in the flatbuffer.

The entry (:class:`~edgeq_device.metadata.EdgeqMetadata`, named ``"edgeq"``) tells a board
how to preprocess inputs, the class labels, the mode and I/O, and where the model came from;
``edgeq_device`` reads it back with ``flatbuffers`` alone.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import numpy as np
from edgeq_device.metadata import METADATA_NAME, EdgeqMetadata
from edgeq_device.preprocess import Preprocess

from edgeq._version import __version__
from edgeq.errors import LabelMismatchError
from edgeq.inputs.data import DataSource, class_labels

__all__ = ["build_metadata", "embed_metadata", "labels_for"]


def build_metadata(*, mode: str, io: str, preprocess: Preprocess | None, labels: Sequence[str] | None,
                   source: str, extra: dict[str, Any]) -> EdgeqMetadata:
    """The metadata of a conversion made now by this edgeq version."""
    return EdgeqMetadata(
        mode=mode, io=io, preprocess=preprocess,
        labels=None if labels is None else tuple(str(x) for x in labels),
        source=source, edgeq_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra=extra,
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

    An existing ``"edgeq"`` entry is replaced. Uses TFLite's schema object API.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    payload = np.frombuffer(metadata.to_json().encode("utf-8"), dtype=np.uint8)
    buf = schema.BufferT()
    buf.data = payload
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
