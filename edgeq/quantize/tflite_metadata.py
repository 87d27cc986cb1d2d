"""The standard TFLite metadata of a converted image model, beside edgeq's own entry.

The ecosystem's tools (MediaPipe Tasks, the TFLite Support task library, Android Studio's
model binding) read a ``ModelMetadata`` flatbuffer (``metadata_schema.fbs``, file identifier
``M001``) stored as the model's metadata entry ``"TFLITE_METADATA"``, and the files it names
(the labels) from a zip archive appended to the model. This module builds that flatbuffer from
what edgeq records (:class:`~edgeq_device.model.metadata.EdgeqMetadata`: preprocessing, labels, task)
the way TFLite Support's and MediaPipe's metadata writers do:

- each image input: its name, ``ImageProperties`` (``RGB`` or ``GRAYSCALE``), the normalization
  ``mean``/``std`` per channel (``NormalizationOptions``) and the value range it yields (``Stats``);
- a classifier's class-score output: the labels file ``labels.txt`` (``TENSOR_AXIS_LABELS``);
- a detector's outputs: the boxes' ``BoundingBoxProperties`` (``[ymin, xmin, ymax, xmax]``,
  ratios of the image), the class output's labels (``TENSOR_VALUE_LABELS``), the score and count;
- a segmenter's output: a ``GRAYSCALE`` mask image (dimensions 1..2), labelled per channel
  (``TENSOR_AXIS_LABELS``, a score map) or per value (``TENSOR_VALUE_LABELS``, a class map).

Neither writer installs beside TensorFlow 2.21 (tflite-support 0.4.4 needs ``protobuf<4``; MediaPipe's
wheels that take numpy 2 need ``absl-py~=2.3`` where tensorflow-model-optimization needs ``~=1.2``),
so the flatbuffer is built here with ``flatbuffers``' ``Builder``, field numbers following the
schema (version 1.5.0; what is written needs a 1.0.0 parser).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
from edgeq_device.errors import DataError
from edgeq_device.model.flatbuffer import FlatModel
from edgeq_device.model.metadata import EdgeqMetadata
from edgeq_device.tasks.detection import identify_outputs

__all__ = ["LABELS_FILE", "STANDARD_METADATA_NAME", "StandardMetadata", "standard_metadata"]

#: The metadata entry the ecosystem's readers look for.
STANDARD_METADATA_NAME = "TFLITE_METADATA"
#: The labels file packed into the model (one label a line, in class order).
LABELS_FILE = "labels.txt"
_MIN_PARSER_VERSION = "1.0.0"

# metadata_schema.fbs enums and union tags
_AXIS_LABELS, _VALUE_LABELS = 2, 3
_RGB, _GRAYSCALE = 1, 2
_FEATURE, _IMAGE, _BOX = 1, 2, 3  # ContentProperties
_NORMALIZATION = 1  # ProcessUnitOptions
_BOUNDARIES = 1  # BoundingBoxType; CoordinateType RATIO is the default 0
_BOX_INDEX = (1, 0, 3, 2)  # where xmin, ymin, xmax, ymax sit in a [ymin, xmin, ymax, xmax] box


@dataclass(frozen=True)
class StandardMetadata:
    """The ``TFLITE_METADATA`` flatbuffer and the files to pack into the model with it."""

    buffer: bytes
    files: dict[str, bytes]


class _Writer:
    """Tables of ``metadata_schema.fbs`` written into one ``flatbuffers.Builder`` (children first)."""

    def __init__(self) -> None:
        self.b = flatbuffers.Builder(1024)
        self.labelled = False  # a tensor names the labels file

    def string(self, text: str | None) -> int | None:
        return None if text is None else self.b.CreateString(text)

    def table(self, fields: int, *slots: tuple[str, int, Any]) -> int:
        b = self.b
        b.StartObject(fields)
        for kind, slot, value in slots:
            if value is None:
                continue
            if kind == "off":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "i8":
                b.PrependInt8Slot(slot, value, 0)
            elif kind == "u8":
                b.PrependUint8Slot(slot, value, 0)
            elif kind == "i32":
                b.PrependInt32Slot(slot, value, 0)
        return int(b.EndObject())

    def tables(self, offsets: list[int]) -> int | None:
        if not offsets:
            return None
        self.b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            self.b.PrependUOffsetTRelative(off)
        return int(self.b.EndVector())

    def floats(self, values: list[float] | None) -> int | None:
        return None if values is None else self.b.CreateNumpyVector(np.asarray(values, np.float32))

    def associated_file(self, name: str, description: str, type_: int) -> int:
        n, d = self.string(name), self.string(description)
        return self.table(5, ("off", 0, n), ("off", 1, d), ("i8", 2, type_))

    def content(self, kind: int, properties: int, value_range: tuple[int, int] | None = None) -> int:
        rng = None if value_range is None else self.table(2, ("i32", 0, value_range[0]), ("i32", 1, value_range[1]))
        return self.table(3, ("u8", 0, kind), ("off", 1, properties), ("off", 2, rng))

    def image_content(self, color_space: int, value_range: tuple[int, int] | None = None) -> int:
        return self.content(_IMAGE, self.table(2, ("i8", 0, color_space)), value_range)

    def box_content(self) -> int:
        index = self.b.CreateNumpyVector(np.asarray(_BOX_INDEX, np.uint32))
        return self.content(_BOX, self.table(3, ("off", 0, index), ("i8", 1, _BOUNDARIES)), (2, 2))

    def normalization(self, mean: list[float], std: list[float]) -> int:
        options = self.table(2, ("off", 0, self.floats(mean)), ("off", 1, self.floats(std)))
        return self.table(2, ("u8", 0, _NORMALIZATION), ("off", 1, options))

    def tensor(self, name: str, description: str | None = None, content: int | None = None,
               process_units: list[int] | None = None, stats: tuple[list[float], list[float]] | None = None,
               files: list[int] | None = None) -> int:
        n, d = self.string(name), self.string(description)
        units = self.tables(process_units or [])
        st = None
        if stats is not None:
            low, high = stats
            st = self.table(2, ("off", 0, self.floats(high)), ("off", 1, self.floats(low)))
        assoc = self.tables(files or [])
        return self.table(7, ("off", 0, n), ("off", 1, d), ("off", 3, content), ("off", 4, units),
                          ("off", 5, st), ("off", 6, assoc))

    def finish(self, name: str, description: str, version: str, inputs: list[int], outputs: list[int]) -> bytes:
        ins, outs = self.tables(inputs), self.tables(outputs)
        subgraph = self.table(10, ("off", 2, ins), ("off", 3, outs))
        subgraphs = self.tables([subgraph])
        n, d, v = self.string(name), self.string(description), self.string(version)
        author, parser = self.string("edgeq"), self.string(_MIN_PARSER_VERSION)
        root = self.table(8, ("off", 0, n), ("off", 1, d), ("off", 2, v), ("off", 3, subgraphs),
                          ("off", 4, author), ("off", 7, parser))
        self.b.Finish(root, file_identifier=b"M001")
        return bytes(self.b.Output())


def _per_channel(values: tuple[float, ...], channels: int) -> list[float]:
    return [float(v) for v in values] if len(values) == channels else [float(values[0])] * channels


def _input(w: _Writer, flat: FlatModel, index: int, meta: EdgeqMetadata) -> int:
    tensor = flat.main.tensors[index]
    pre = meta.preprocess
    if pre is None or len(tensor.shape) != 4:  # not an image: its name only
        return w.tensor(tensor.name)
    gray = pre.color.value == "l"
    channels = 1 if gray else 3
    mean, std = _per_channel(pre.mean, channels), _per_channel(pre.std, channels)
    stats: tuple[list[float], list[float]] | None = None
    if tensor.dtype.upper() == "FLOAT32":
        stats = ([(0.0 - m) / s for m, s in zip(mean, std)], [(255.0 - m) / s for m, s in zip(mean, std)])
    if len(set(mean)) == 1 and len(set(std)) == 1:  # one value each (MediaPipe takes no other)
        mean, std = mean[:1], std[:1]
        stats = None if stats is None else (stats[0][:1], stats[1][:1])
    elif tensor.dtype.upper() == "UINT8":
        stats = ([0.0], [255.0])
    # The schema's images are NHWC; a channels-first input keeps its normalization as a plain feature.
    content = (w.image_content(_GRAYSCALE if gray else _RGB) if pre.layout.value == "nhwc"
               else w.content(_FEATURE, w.table(0)))
    return w.tensor(tensor.name, "Input image to be processed.", content, [w.normalization(mean, std)], stats)


def _labels_file(w: _Writer, type_: int) -> int:
    w.labelled = True
    what = "per class, in output order" if type_ == _AXIS_LABELS else "per output value (class id)"
    return w.associated_file(LABELS_FILE, f"Labels {what}.", type_)


def _classifier_outputs(w: _Writer, flat: FlatModel, labels: tuple[str, ...] | None) -> list[int]:
    out, labelled = [], False
    for index in flat.main.outputs:
        t = flat.main.tensors[index]
        files = []
        if labels and not labelled and t.shape and t.shape[-1] == len(labels):
            files, labelled = [_labels_file(w, _AXIS_LABELS)], True
        out.append(w.tensor(t.name, "Class scores." if files else None, w.content(_FEATURE, w.table(0)),
                            files=files))
    return out


def _detector_outputs(w: _Writer, flat: FlatModel, meta: EdgeqMetadata) -> list[int]:
    order = list(flat.io_order("outputs"))
    try:
        roles = {order[pos]: role for role, pos in identify_outputs(flat, meta.task_settings.get("outputs")).items()}
    except DataError:  # the conversion refuses such a detector with its own message
        roles = {}
    out = []
    for index in flat.main.outputs:
        t, role = flat.main.tensors[index], roles.get(index)
        if role == "boxes":
            out.append(w.tensor(t.name, "The locations of the detected boxes: [ymin, xmin, ymax, xmax], "
                                        "ratios of the image.", w.box_content()))
        elif role == "classes":
            files = [_labels_file(w, _VALUE_LABELS)] if meta.labels else []
            offset = meta.task_settings.get("class_offset", 1)
            out.append(w.tensor(t.name, f"The categories of the detected boxes (class id = value + {offset}).",
                                w.content(_FEATURE, w.table(0), (2, 2)), files=files))
        elif role == "scores":
            out.append(w.tensor(t.name, "The scores of the detected boxes.",
                                w.content(_FEATURE, w.table(0), (2, 2))))
        elif role == "count":
            out.append(w.tensor(t.name, "The number of the detected boxes.", w.content(_FEATURE, w.table(0))))
        else:
            out.append(w.tensor(t.name))
    return out


def _segmenter_outputs(w: _Writer, flat: FlatModel, labels: tuple[str, ...] | None) -> list[int]:
    out = []
    for i, index in enumerate(flat.main.outputs):
        t = flat.main.tensors[index]
        files = []
        if labels and i == 0:  # a score map has a channel per class; a class map holds class ids
            score_map = len(t.shape) == 4 and t.shape[-1] == len(labels)
            files = [_labels_file(w, _AXIS_LABELS if score_map else _VALUE_LABELS)]
        out.append(w.tensor(t.name, "Masks over the image." if i == 0 else None,
                            w.image_content(_GRAYSCALE, (1, 2)) if i == 0 else None, files=files))
    return out


def standard_metadata(flat: FlatModel, meta: EdgeqMetadata) -> StandardMetadata | None:
    """The standard metadata of an image model ``flat`` that edgeq converted with ``meta``.

    None when the model has no recorded preprocessing (not converted from images), so nothing
    standard can be said about its inputs.
    """
    if meta.preprocess is None or not flat.main.inputs:
        return None
    w = _Writer()
    inputs = [_input(w, flat, i, meta) for i in flat.main.inputs]
    labels = meta.labels or None
    if meta.task == "detection":
        outputs, name = _detector_outputs(w, flat, meta), "ObjectDetector"
    elif meta.task == "segmentation":
        outputs, name = _segmenter_outputs(w, flat, labels), "ImageSegmenter"
    else:
        outputs, name = _classifier_outputs(w, flat, labels), "ImageClassifier"
    title = meta.source or name
    buffer = w.finish(title, f"{name}: {meta.mode} ({meta.io} I/O), converted by edgeq {meta.edgeq_version}.",
                      meta.edgeq_version or "", inputs, outputs)
    files = {}
    if labels and w.labelled:
        files[LABELS_FILE] = "".join(" ".join(str(x).splitlines()) + "\n" for x in labels).encode("utf-8")
    return StandardMetadata(buffer, files)
