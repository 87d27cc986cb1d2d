"""Run by the tests in a separate venv with MediaPipe: a third-party reader of a model's standard metadata.

``python mediapipe_consumer.py read MODEL`` prints the model's ``TFLITE_METADATA`` as MediaPipe's
generated schema code parses it (inputs, outputs, the files packed into the model);
``python mediapipe_consumer.py classify MODEL IMAGE...`` prints MediaPipe Tasks' ImageClassifier
top-1 (label, index, score) per image; ``segment MODEL IMAGE...`` its ImageSegmenter's labels and
category mask per image. Output: one JSON document on stdout.
"""

from __future__ import annotations

import io
import json
import sys
import zipfile
from typing import Any


def _files(files: Any, count: int) -> list[dict[str, Any]]:
    return [{"name": files(i).Name().decode(), "type": files(i).Type()} for i in range(count)]


def _tensor(t: Any) -> dict[str, Any]:
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb

    out: dict[str, Any] = {"name": t.Name().decode(), "files": _files(t.AssociatedFiles, t.AssociatedFilesLength())}
    content = t.Content()
    if content is not None:
        kind = content.ContentPropertiesType()
        out["content"] = kind
        table = content.ContentProperties()
        if kind == fb.ContentProperties.ImageProperties:
            props = fb.ImageProperties()
            props.Init(table.Bytes, table.Pos)
            out["color_space"] = props.ColorSpace()
        elif kind == fb.ContentProperties.BoundingBoxProperties:
            props = fb.BoundingBoxProperties()
            props.Init(table.Bytes, table.Pos)
            out["box_index"] = [int(v) for v in props.IndexAsNumpy()]
            out["box_type"] = props.Type()
            out["coordinate_type"] = props.CoordinateType()
        if content.Range() is not None:
            out["range"] = [content.Range().Min(), content.Range().Max()]
    for i in range(t.ProcessUnitsLength()):
        unit = t.ProcessUnits(i)
        if unit.OptionsType() == fb.ProcessUnitOptions.NormalizationOptions:
            norm = fb.NormalizationOptions()
            norm.Init(unit.Options().Bytes, unit.Options().Pos)
            out["mean"] = [float(v) for v in norm.MeanAsNumpy()]
            out["std"] = [float(v) for v in norm.StdAsNumpy()]
    if t.Stats() is not None:
        out["min"] = [float(v) for v in t.Stats().MinAsNumpy()]
        out["max"] = [float(v) for v in t.Stats().MaxAsNumpy()]
    return out


def read(path: str) -> dict[str, Any]:
    from mediapipe.tasks.metadata import metadata_schema_py_generated as fb
    from mediapipe.tasks.metadata import schema_py_generated as schema

    data = open(path, "rb").read()
    model = schema.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    raw = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes()
    assert fb.ModelMetadata.ModelMetadataBufferHasIdentifier(raw, 0)
    meta = fb.ModelMetadata.GetRootAs(raw, 0)
    sub = meta.SubgraphMetadata(0)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            packed = {n: archive.read(n).decode() for n in archive.namelist()}
    except zipfile.BadZipFile:  # nothing packed
        packed = {}
    return {"entries": sorted(entries), "name": meta.Name().decode(), "min_parser_version":
            meta.MinParserVersion().decode(),
            "inputs": [_tensor(sub.InputTensorMetadata(i)) for i in range(sub.InputTensorMetadataLength())],
            "outputs": [_tensor(sub.OutputTensorMetadata(i)) for i in range(sub.OutputTensorMetadataLength())],
            "packed": packed}


def classify(path: str, images: list[str]) -> list[list[Any]]:
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions, vision
    from PIL import Image

    opts = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path), max_results=1)
    out = []
    with vision.ImageClassifier.create_from_options(opts) as classifier:
        for p in images:
            pixels = np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB")))
            top = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
            best = top.classifications[0].categories[0]
            out.append([best.category_name, best.index, best.score])
    return out


def segment(path: str, images: list[str]) -> dict[str, Any]:
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import BaseOptions, vision
    from PIL import Image

    opts = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=path), output_category_mask=True)
    masks = []
    with vision.ImageSegmenter.create_from_options(opts) as segmenter:
        for p in images:
            pixels = np.ascontiguousarray(np.asarray(Image.open(p).convert("RGB")))
            result = segmenter.segment(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
            masks.append(result.category_mask.numpy_view()[..., 0].tolist())
        return {"labels": list(segmenter.labels), "masks": masks}


if __name__ == "__main__":
    command, model_path, *rest = sys.argv[1:]
    run = {"read": lambda: read(model_path), "classify": lambda: classify(model_path, rest),
           "segment": lambda: segment(model_path, rest)}[command]
    print(json.dumps(run()))
