"""Small real models for the task tests, made with TensorFlow on the host (the code under test never imports it).

``detector``: a float model whose signature outputs are ``boxes``/``classes``/``scores``/``count``
and whose answers are written in the image itself (first row, red channel, as k/255), so a
test decides each detection; ``segmenter``: a seeded conv giving per-pixel scores, in float32,
int8 and as an integer class map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DET_SIZE = 32  # the detector's input is DET_SIZE x DET_SIZE RGB
DET_W, DET_H = 64, 96  # images of the detection set: each code pixel is a 2 x 3 block, read back by nearest resize


def make_detector(path: Path, names: tuple[str, str, str, str] = ("boxes", "classes", "scores", "count")) -> Path:
    import tensorflow as tf

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, DET_SIZE, DET_SIZE, 3], tf.float32, name="image")])
        def __call__(self, x: Any) -> Any:
            code = x[0, 0, :, 0]
            return {names[0]: tf.reshape(code[0:8], [1, 2, 4]), names[1]: tf.reshape(code[8:10] * 255.0, [1, 2]),
                    names[2]: tf.reshape(code[10:12], [1, 2]), names[3]: tf.reshape(code[12] * 255.0, [1])}

    m = Det()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    path.write_bytes(conv.convert())
    return path


def detection_image(boxes: list[list[int]], classes: list[int], scores: list[int], count: int,
                    seed: int) -> Image.Image:
    """An image whose first row tells the detector its answer (values in 0..255, boxes as [y0, x0, y1, x1]/255)."""
    code = np.zeros(DET_SIZE, np.uint8)
    code[0:8] = np.asarray(boxes, np.uint8).ravel()
    code[8:10], code[10:12], code[12] = classes, scores, count
    img = np.random.default_rng(seed).integers(0, 255, (DET_H, DET_W, 3), dtype=np.uint8)
    sx, sy = DET_W // DET_SIZE, DET_H // DET_SIZE
    for c in range(DET_SIZE):
        img[0:sy, sx * c:sx * (c + 1), 0] = code[c]
    return Image.fromarray(img)


def detection_set(root: Path, n: int = 6) -> tuple[Path, Path, dict[str, Any]]:
    """``n`` images and their COCO annotations; the model finds most boxes, misplaces some, misses one."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    images, anns = [], []
    rng = np.random.default_rng(5)
    for k in range(n):
        truth = [[int(v) for v in sorted(rng.integers(0, 120, 2))] + [int(v) for v in sorted(rng.integers(130, 255, 2))]
                 for _ in range(2)]
        truth = [[t[0], t[1], t[2], t[3]] for t in truth]
        pred = [list(b) for b in truth]
        if k % 3 == 1:
            pred[1] = [min(v + 40, 255) for v in pred[1]]  # a poor box
        count = 1 if k == n - 1 else 2  # the last image: the second box missed
        detection_image(pred, [0, 1], [230, 150], count, seed=k).save(images_dir / f"im{k}.png")
        images.append({"id": 100 + k, "file_name": f"im{k}.png", "width": DET_W, "height": DET_H})
        for j, (y0, x0, y1, x1) in enumerate(truth):
            bbox = [x0 / 255 * DET_W, y0 / 255 * DET_H, (x1 - x0) / 255 * DET_W, (y1 - y0) / 255 * DET_H]
            anns.append({"id": len(anns) + 1, "image_id": 100 + k, "category_id": j + 1, "bbox": bbox,
                         "area": bbox[2] * bbox[3], "iscrowd": 0})
    coco = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    ann = root / "instances.json"
    ann.write_text(json.dumps(coco))
    return images_dir, ann, coco


SEG_SIZE, SEG_CLASSES = 16, 4


def make_segmenters(root: Path) -> dict[str, Path]:
    """``float32`` and ``int8`` (uint8 I/O) per-pixel scores [1, 16, 16, 4]; ``classmap`` [1, 16, 16] int32."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(7)
    inp = keras.Input((SEG_SIZE, SEG_SIZE, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(SEG_CLASSES, 1, activation="softmax")(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    calib = rng.uniform(0, 1, (32, SEG_SIZE, SEG_SIZE, 3)).astype(np.float32)
    paths = {}
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    paths["float32"] = root / "seg_float32.tflite"
    paths["float32"].write_bytes(conv.convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    paths["int8"] = root / "seg_int8.tflite"
    paths["int8"].write_bytes(conv.convert())

    class ClassMap(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, SEG_SIZE, SEG_SIZE, 3], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return tf.cast(tf.argmax(model(x), axis=-1), tf.int32)

    cm = ClassMap()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([cm.__call__.get_concrete_function()], cm)
    paths["classmap"] = root / "seg_classmap.tflite"
    paths["classmap"].write_bytes(conv.convert())
    return paths


def segmentation_set(root: Path, n: int = 5, size: tuple[int, int] = (24, 20)) -> tuple[Path, Path]:
    """``n`` RGB images of ``size`` (w, h) and class-index masks (classes 0..3, some pixels 255)."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(8)
    for k in range(n):
        w, h = size
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"s{k}.jpg", quality=95)
        m = rng.integers(0, SEG_CLASSES, (h, w)).astype(np.uint8)
        m[: h // 5] = 255
        Image.fromarray(m).save(masks / f"s{k}.png")
    return images, masks


PP_CLASSES = 2  # classes of the post-processed detector (plus background)


def make_postprocess_detector(path: Path) -> Path:
    """A detector ending in the runtime's own ``TFLite_Detection_PostProcess`` custom operator.

    TensorFlow turns the image's first row (as :func:`detection_image` writes it) into SSD
    box encodings ``[1, 2, 4]`` against two unit anchors and class scores ``[1, 2, 3]``; the
    post-processing operator (decode, non-max suppression, top boxes) is appended to the
    flatbuffer with TFLite's schema object API, as the object-detection exporters do, and
    its four outputs become the model's outputs.
    """
    import flatbuffers
    import tensorflow as tf
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    class Head(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, DET_SIZE, DET_SIZE, 3], tf.float32)])
        def __call__(self, x: Any) -> Any:
            code = x[0, 0, :, 0]
            b = tf.reshape(code[0:8], [2, 4])  # y0, x0, y1, x1
            yc, xc = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            h, w = tf.maximum(b[:, 2] - b[:, 0], 1e-3), tf.maximum(b[:, 3] - b[:, 1], 1e-3)
            enc = tf.stack([(yc - 0.5) * 10.0, (xc - 0.5) * 10.0, 5.0 * tf.math.log(h), 5.0 * tf.math.log(w)], 1)
            classes = tf.cast(tf.round(code[8:10] * 255.0), tf.int32) + 1  # 0 is the background
            scores = tf.one_hot(classes, PP_CLASSES + 1) * code[10:12][:, None]
            return tf.reshape(enc, [1, 2, 4]), tf.reshape(scores, [1, 2, PP_CLASSES + 1])

    head = Head()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([head.__call__.get_concrete_function()], head)
    data = bytearray(conv.convert())
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    sg = m.subgraphs[0]
    outs = list(sg.outputs)
    shapes = [list(sg.tensors[i].shape) for i in outs]
    enc_out, cls_out = (outs[0], outs[1]) if shapes[0][-1] == 4 else (outs[1], outs[0])

    def tensor(name: str, shape: list[int], buffer: int = 0) -> int:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, shape, schema.TensorType.FLOAT32, buffer
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    buf = schema.BufferT()
    buf.data = np.frombuffer(np.array([[0.5, 0.5, 1.0, 1.0]] * 2, np.float32).tobytes(), np.uint8)
    m.buffers.append(buf)
    anchors = tensor("anchors", [2, 4], len(m.buffers) - 1)
    results = [tensor("TFLite_Detection_PostProcess", [1, 2, 4]), tensor("TFLite_Detection_PostProcess:1", [1, 2]),
               tensor("TFLite_Detection_PostProcess:2", [1, 2]), tensor("TFLite_Detection_PostProcess:3", [1])]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "TFLite_Detection_PostProcess"
    code.version = 1
    m.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.inputs, op.outputs = [enc_out, cls_out, anchors], results
    op.customOptions = list(flexbuffers.Dumps({
        "max_detections": 2, "max_classes_per_detection": 1, "detections_per_class": 2, "use_regular_nms": False,
        "nms_score_threshold": 0.05, "nms_iou_threshold": 0.6, "num_classes": PP_CLASSES,
        "y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}))
    op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
    sg.operators.append(op)
    sg.outputs = results
    m.signatureDefs = []  # the outputs are the operator's, named by their tensors
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path
