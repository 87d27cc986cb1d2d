"""A small detector and a small segmenter trained on ``datasets/shapes`` (seeded, seconds on two cores).

:func:`train_detector` returns a Keras 3 model whose outputs are a detector's four
(``boxes`` ``[1, K, 4]`` normalized ``[ymin, xmin, ymax, xmax]``, ``classes`` ``[1, K]``
as float class indices, model class 0 = category id 1, ``scores`` ``[1, K]``,
``count`` ``[1]``), decoded inside the graph from a 6x6 grid of cells with one box each
(K = 36), with built-in operators only, so it converts in every mode and
``edgeq-device eval --task detection`` reads it by its output names.
:func:`train_segmenter` returns a small encoder-decoder with per-pixel scores
``[1, 96, 96, 4]`` (0 background, 1 circle, 2 square, 3 triangle).

Both take pixels in ``[0, 1]`` (edgeq_device's default preprocessing at 96x96 RGB).

With ``EDGEQ_EXAMPLES_CACHE`` set to a folder, each trained model is kept there (``.keras``, under
a hash of this file and the arguments) and loaded on the next call instead of trained again: a
notebook re-run, or another process of the same test run, gets the same model in a second.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DATA", "DETECTION_SETTINGS", "GRID", "SEGMENTATION_SETTINGS", "SIZE", "detection_targets", "dihedral",
           "load_split", "train_detector", "train_segmenter"]

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "datasets" / "shapes"
SIZE = 96
GRID = 6  # cells per side; one box per cell
CLASSES = 3
#: what ``edgeq.convert(..., task="detection", task_settings=...)`` records for the detector
DETECTION_SETTINGS: dict[str, Any] = {"class_offset": 1, "num_classes": CLASSES}
#: what ``edgeq.convert(..., task="segmentation", task_settings=...)`` records for the segmenter
SEGMENTATION_SETTINGS: dict[str, Any] = {"ignore_index": 255, "num_classes": CLASSES + 1}


def load_split(split: str, root: Path = DATA) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """A split's images ``[N, 96, 96, 3]`` in [0, 1] (edgeq_device's preprocessing), masks ``[N, 96, 96]`` and
    COCO annotations, in the annotations' image order."""
    from edgeq_device.model.preprocess import Preprocess, load_image
    from PIL import Image

    coco = json.loads((root / "annotations" / f"instances_{split}.json").read_text(encoding="utf-8"))
    pre = Preprocess(size=(SIZE, SIZE), color="rgb")
    names = [im["file_name"] for im in coco["images"]]
    x = np.stack([load_image(root / split / n, pre) for n in names]).astype(np.float32)
    masks = []
    for n in names:
        with Image.open(root / "masks" / split / n) as m:
            masks.append(np.asarray(m, np.uint8))
    return x, np.stack(masks), coco


def dihedral(a: np.ndarray, variant: int) -> np.ndarray:
    """Images ``[N, H, W, C]`` or masks ``[N, H, W]`` turned by one of the square's 8 symmetries
    (``variant`` bits: 1 transpose, 2 mirror left-right, 4 mirror top-bottom); every shape keeps its class."""
    if variant & 1:
        a = np.swapaxes(a, 1, 2)
    if variant & 2:
        a = a[:, :, ::-1]
    if variant & 4:
        a = a[:, ::-1]
    return np.ascontiguousarray(a)


def detection_targets(coco: dict[str, Any], variant: int = 0) -> np.ndarray:
    """``[N, 6, 6, 8]`` training targets: objectness, one-hot class (3), box centre in its cell (y, x), size (h, w).

    ``variant`` gives the targets of the images turned by :func:`dihedral`.
    """
    index = {im["id"]: k for k, im in enumerate(coco["images"])}
    t = np.zeros((len(index), GRID, GRID, 4 + CLASSES + 1), np.float32)
    for a in coco["annotations"]:
        x, y, w, h = (float(v) for v in a["bbox"])
        if variant & 1:
            x, y, w, h = y, x, h, w
        if variant & 2:
            x = SIZE - x - w
        if variant & 4:
            y = SIZE - y - h
        cy, cx = (y + h / 2) / SIZE * GRID, (x + w / 2) / SIZE * GRID
        r, c = min(int(cy), GRID - 1), min(int(cx), GRID - 1)
        t[index[a["image_id"]], r, c] = [1.0, *np.eye(CLASSES)[int(a["category_id"]) - 1], cy - r, cx - c,
                                         h / SIZE, w / SIZE]
    return t


def _detection_loss(y_true: Any, y_pred: Any) -> Any:
    import keras
    from keras import ops

    obj_t, cls_t, box_t = y_true[..., 0], y_true[..., 1:4], y_true[..., 4:8]
    obj = ops.mean(keras.losses.binary_crossentropy(obj_t[..., None], y_pred[..., 0:1], from_logits=True))
    n = ops.maximum(ops.sum(obj_t), 1.0)
    cls = ops.sum(keras.losses.categorical_crossentropy(cls_t, y_pred[..., 1:4], from_logits=True) * obj_t) / n
    box = ops.sum(ops.sum(ops.square(ops.sigmoid(y_pred[..., 4:8]) - box_t), axis=-1) * obj_t) / n
    return 4.0 * obj + cls + 10.0 * box


def _grid_decode_layer() -> Any:
    """The :class:`GridDecode` layer class (made once Keras is imported)."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="edgeq_shapes")
    class GridDecode(keras.layers.Layer):  # type: ignore[misc]
        """The grid's raw ``[1, 6, 6, 8]`` as ``boxes``, ``classes``, ``scores``, ``count``, with built-in ops only.

        The class index is the expectation of a sharpened softmax (no ARG_MAX and no CAST, so an
        integer-only model has no float op); the score is objectness times the class probability.
        Every cell is a detection (COCOeval ranks them by score): ``count`` is the constant 36, a
        constant output tensor in every mode (a count computed in the graph, a SUM of ones, comes
        out 1 in int16x8).
        """

        def call(self, raw: Any) -> dict[str, Any]:
            k = GRID * GRID
            cells = np.stack(list(np.mgrid[0:GRID, 0:GRID]), axis=-1).astype(np.float32)  # (row, col) per cell
            obj = ops.sigmoid(raw[..., 0])
            probs = ops.softmax(raw[..., 1:4], axis=-1)
            sharp = ops.softmax(raw[..., 1:4] * 16.0, axis=-1)
            classes = ops.sum(sharp * ops.convert_to_tensor(np.arange(CLASSES, dtype=np.float32)), axis=-1)
            scores = ops.reshape(obj * ops.max(probs, axis=-1), (-1, k))
            geo = ops.sigmoid(raw[..., 4:8])
            centre = (geo[..., 0:2] + ops.convert_to_tensor(cells)) / GRID  # (y, x)
            half = geo[..., 2:4] / 2.0  # (h, w) / 2
            boxes = ops.concatenate([centre - half, centre + half], axis=-1)
            return {"boxes": ops.reshape(boxes, (-1, k, 4)), "classes": ops.reshape(classes, (-1, k)),
                    "scores": scores, "count": ops.full((1,), float(k))}

        def compute_output_spec(self, raw: Any) -> dict[str, Any]:
            k, b = GRID * GRID, raw.shape[0]
            return {"boxes": keras.KerasTensor((b, k, 4)), "classes": keras.KerasTensor((b, k)),
                    "scores": keras.KerasTensor((b, k)), "count": keras.KerasTensor((b,))}

    return GridDecode


def _kept(name: str, train: Callable[[], Any], **args: Any) -> Any:
    """``train()``'s model, kept under ``$EDGEQ_EXAMPLES_CACHE`` (when set) by this file's hash and ``args``."""
    cache = os.environ.get("EDGEQ_EXAMPLES_CACHE")
    if not cache:
        return train()
    import hashlib

    from keep import keep_trained  # examples/keep.py, beside this file

    key = hashlib.sha256(Path(__file__).read_bytes() + repr(sorted(args.items())).encode()).hexdigest()[:16]
    return keep_trained(Path(cache) / f"{name}-{key}", name, train, {"GridDecode": _grid_decode_layer()})


def train_detector(root: Path = DATA, epochs: int = 8, seed: int = 0, verbose: int = 0) -> Any:
    """A grid detector trained on ``root``'s train split (turned 8 ways, :func:`dihedral`), seeded; Keras 3.

    Returns the model with decoded outputs (``boxes``, ``classes``, ``scores``, ``count``).
    """
    return _kept("shapes_detector", lambda: _train_detector(root, epochs, seed, verbose),
                 root=str(Path(root).resolve()), epochs=epochs, seed=seed)


def _train_detector(root: Path, epochs: int, seed: int, verbose: int) -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x, _, coco = load_split("train", root)
    x = np.concatenate([dihedral(x, v) for v in range(8)])
    y = np.concatenate([detection_targets(coco, v) for v in range(8)])
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    h = layers.AveragePooling2D(2)(inp)  # 48x48 is enough to tell the shapes apart
    for filters in (24, 32, 48):  # 48 -> 6
        h = layers.MaxPooling2D()(_conv(h, filters))
    h = _conv(_conv(h, 64), 64)
    raw = layers.Conv2D(4 + CLASSES + 1, 1, name="grid")(h)
    trainer = keras.Model(inp, raw, name="shapes_grid")
    steps = epochs * -(-len(x) // 32)
    trainer.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                    loss=_detection_loss)
    trainer.fit(x, y, epochs=epochs, batch_size=32, shuffle=True, verbose=verbose)
    return keras.Model(inp, _grid_decode_layer()(name="decode")(trainer.output), name="shapes_detector")


def train_segmenter(root: Path = DATA, epochs: int = 4, seed: int = 0, verbose: int = 0) -> Any:
    """A small encoder-decoder trained on ``root``'s train split and masks (turned 8 ways), seeded; Keras 3.

    It works at 48x48 inside (down to 6x6, additive skips back up to 48) and returns per-pixel
    class scores ``[1, 96, 96, 4]`` (softmax, upsampled bilinearly).
    """
    return _kept("shapes_segmenter", lambda: _train_segmenter(root, epochs, seed, verbose),
                 root=str(Path(root).resolve()), epochs=epochs, seed=seed)


def _train_segmenter(root: Path, epochs: int, seed: int, verbose: int) -> Any:
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    x, masks, _ = load_split("train", root)
    x = np.concatenate([dihedral(x, v) for v in range(8)])
    y = np.concatenate([dihedral(masks, v) for v in range(8)]).astype(np.int32)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    e1 = _conv(layers.AveragePooling2D(2)(inp), 16)  # 48
    e2 = _conv(e1, 32, 2)  # 24
    e3 = _conv(e2, 48, 2)  # 12
    e4 = _conv(_conv(e3, 64, 2), 64)  # 6: sees a whole shape
    d3 = _conv(layers.Add()([layers.UpSampling2D()(layers.Conv2D(48, 1)(e4)), e3]), 48)  # 12
    d2 = _conv(layers.Add()([layers.UpSampling2D()(layers.Conv2D(32, 1)(d3)), e2]), 24)  # 24
    d1 = _conv(layers.Add()([layers.UpSampling2D()(layers.Conv2D(16, 1)(d2)), e1]), 16)  # 48
    scores = layers.Conv2D(CLASSES + 1, 1, activation="softmax")(d1)
    out = layers.UpSampling2D(interpolation="bilinear", name="scores")(scores)
    model = keras.Model(inp, out, name="shapes_segmenter")
    steps = epochs * -(-len(x) // 32)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(5e-3, steps)),
                  loss="sparse_categorical_crossentropy")
    weight = np.where(y > 0, 3.0, 1.0).astype(np.float32)  # shapes are a fifth of the pixels
    model.fit(x, y, sample_weight=weight, epochs=epochs, batch_size=32, shuffle=True, verbose=verbose)
    return model


def _conv(t: Any, filters: int, strides: int = 1) -> Any:
    """3x3 convolution, batch normalization (folded away by the converter), ReLU."""
    from keras import layers

    t = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(t)
    return layers.ReLU()(layers.BatchNormalization(momentum=0.9)(t))
