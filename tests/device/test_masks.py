"""Segmentation masks as people store them, scored against an independent computation.

The repo's shapes masks (datasets/shapes/masks/val, classes 0..3) are re-encoded as Pascal VOC
palette PNGs (255 on the boundary between classes) and as Cityscapes label-ID PNGs (each class
a label ID whose train ID is the class; boundaries ``unlabeled``, the top rows ``ego vehicle``).
The truth the checks use is the original class mask with the ignored pixels known beforehand, the
predictions come from the runtime's interpreter driven by hand, the IoU from set counting: none
of it goes through the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from edgeq_device.errors import DataError, InvalidArgumentError, LabelMismatchError
from edgeq_device.model.preprocess import Preprocess, load_image
from edgeq_device.tasks.masks import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_TRAIN_IDS,
    load_label_map,
    parse_ignore,
    read_mask,
)
from edgeq_device.tasks.registry import evaluate_task
from edgeq_device.tasks.segmentation import SegmentationResult
from PIL import Image
from task_models import SEG_CLASSES, SEG_SIZE, make_segmenters

SHAPES = Path(__file__).resolve().parents[2] / "datasets" / "shapes"
N = 8  # images of the set
#: the train IDs 0..3 (road, sidewalk, building, wall) as Cityscapes label IDs
LABEL_IDS = {0: 7, 1: 8, 2: 11, 3: 12}
VOID, UNLABELED, EGO = 255, 0, 1


def _voc_palette() -> list[int]:
    """Pascal VOC's colour map (the bit-interleaving one its devkit builds)."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another class (VOC marks them void)."""
    edge = np.zeros(mask.shape, bool)
    edge[1:] |= mask[1:] != mask[:-1]
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    return edge


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory) -> dict[str, object]:
    """N shapes images; their truth (class, ignored) and the masks as VOC palette PNGs and Cityscapes label IDs."""
    root = tmp_path_factory.mktemp("masks")
    images, voc, city = root / "images", root / "voc", root / "cityscapes"
    for d in (images, voc, city):
        d.mkdir()
    truth = {}
    for path in sorted((SHAPES / "masks" / "val").glob("*.png"))[:N]:
        shutil.copy(SHAPES / "val" / path.name, images / path.name)
        cls = np.asarray(Image.open(path), np.int64)
        edge = _boundary(cls)
        truth[path.stem] = (cls, edge)
        v = cls.astype(np.uint8).copy()
        v[edge] = VOID
        im = Image.frombytes("P", (v.shape[1], v.shape[0]), v.tobytes())
        im.putpalette(_voc_palette())
        im.save(voc / path.name)
        c = np.vectorize(LABEL_IDS.get)(cls).astype(np.uint8)
        c[edge] = UNLABELED
        c[:4] = EGO
        Image.fromarray(c).save(city / path.name)
    return {"images": images, "voc": voc, "cityscapes": city, "truth": truth}


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory) -> dict[str, Path]:
    return make_segmenters(tmp_path_factory.mktemp("segmenters"))


def _predictions(model: Path, images: Path) -> dict[str, np.ndarray]:
    """Each image's predicted class at the image's size: the interpreter by hand, Pillow's nearest resize."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    pre = Preprocess(size=(SEG_SIZE, SEG_SIZE), color="rgb", mean=0.0, std=255.0)
    out = {}
    for img in sorted(images.iterdir()):
        it.set_tensor(din["index"], load_image(img, pre)[None])  # float inputs only: [0, 1] pixels
        it.invoke()
        y = it.get_tensor(dout["index"])
        pred = (y[0].argmax(-1) if y.ndim == 4 else y[0]).astype(np.uint8)
        with Image.open(img) as im:
            out[img.stem] = np.asarray(Image.fromarray(pred).resize(im.size, Image.NEAREST), np.int64)
    return out


def _independent(model: Path, shapes_set: dict, ignored: str = "edge", top_rows: bool = False
                 ) -> tuple[dict[int, float], float]:
    """IoU per class present (in truth or prediction, over counted pixels) and pixel accuracy, by set counting."""
    preds = _predictions(model, shapes_set["images"])
    inter: dict[int, int] = {}
    union: dict[int, int] = {}
    hits = total = 0
    for stem, (cls, edge) in shapes_set["truth"].items():
        keep = ~edge
        if top_rows:
            keep[:4] = False
        t, p = cls[keep], preds[stem][keep]
        for c in set(np.unique(t)) | set(np.unique(p)):
            inter[int(c)] = inter.get(int(c), 0) + int(((t == c) & (p == c)).sum())
            union[int(c)] = union.get(int(c), 0) + int(((t == c) | (p == c)).sum())
        hits += int((t == p).sum())
        total += t.size
    return {c: inter[c] / union[c] for c in union}, hits / total


def _check(r: SegmentationResult, ious: dict[int, float], acc: float) -> None:
    got = {c: v.iou for c, v in enumerate(r.per_class) if v.iou is not None}
    assert got.keys() == ious.keys()
    for c, v in ious.items():
        assert got[c] == pytest.approx(v, abs=1e-12)
    assert r.miou == pytest.approx(float(np.mean(list(ious.values()))), abs=1e-12)
    assert r.pixel_accuracy == pytest.approx(acc, abs=1e-12)


def test_voc_palette_masks_read_as_class_indices_with_void_ignored(shapes_set, segmenters):
    """Palette PNGs give their indices (not their colours); 255 (the void boundary) counts nowhere by default."""
    first = next(iter(sorted(shapes_set["voc"].iterdir())))
    with Image.open(first) as im:
        assert im.mode == "P"
    cls, edge = shapes_set["truth"][first.stem]
    assert np.array_equal(read_mask(first), np.where(edge, VOID, cls))
    r = evaluate_task(segmenters["float32"], shapes_set["images"], task="segmentation", masks=shapes_set["voc"],
                      workers=2)
    assert isinstance(r, SegmentationResult) and r.images == N and r.ignore == (255,)
    _check(r, *_independent(segmenters["float32"], shapes_set))
    assert SegmentationResult.from_json(r.to_json()) == r


def test_cityscapes_label_ids_through_the_built_in_mapping(cli, shapes_set, segmenters, tmp_path):
    """--label-map cityscapes: label IDs become train IDs, the rest (unlabeled, ego vehicle) 255; a class-map
    model then has Cityscapes' 19 classes, named, without --num-classes."""
    out = tmp_path / "city.json"
    proc = cli("eval", segmenters["classmap"], shapes_set["images"], "--task", "segmentation", "--masks",
               shapes_set["cityscapes"], "--label-map", "cityscapes", "--size", "16x16", "--json", out, "-q")
    assert proc.returncode == 0, proc.stderr
    r = SegmentationResult.from_json(out.read_text())
    assert r.classes == 19 and [c.name for c in r.per_class] == list(CITYSCAPES_CLASSES)
    assert r.label_map == "cityscapes" and "mapped by cityscapes" in proc.stdout
    _check(r, *_independent(segmenters["classmap"], shapes_set, top_rows=True))
    # without the mapping the label IDs are not classes: one line naming the fix
    proc = cli("eval", segmenters["float32"], shapes_set["images"], "--task", "segmentation", "--masks",
               shapes_set["cityscapes"], "--size", "16x16", "-q")
    assert proc.returncode == 2 and "--label-map" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("kind", ["json-object", "json-pairs", "csv"])
def test_a_mapping_of_ones_own_equals_the_built_in_one(kind, shapes_set, segmenters, tmp_path):
    pairs = [(k, v) for k, v in CITYSCAPES_TRAIN_IDS.items() if k in (0, 1, *LABEL_IDS.values())]
    if kind == "json-object":
        path = tmp_path / "map.json"
        path.write_text(json.dumps({str(k): v for k, v in pairs}))
    elif kind == "json-pairs":
        path = tmp_path / "map.json"
        path.write_text(json.dumps([[k, v] for k, v in pairs]))
    else:
        path = tmp_path / "map.csv"
        path.write_text("label_id,train_id\n" + "".join(f"{k},{v}\n" for k, v in pairs))
    common = {"task": "segmentation", "masks": shapes_set["cityscapes"], "workers": 1}
    mine = evaluate_task(segmenters["float32"], shapes_set["images"], label_map=path, **common)
    theirs = evaluate_task(segmenters["float32"], shapes_set["images"], label_map="cityscapes", **common)
    assert mine.confusion == theirs.confusion and mine.label_map == str(path)
    _check(mine, *_independent(segmenters["float32"], shapes_set, top_rows=True))


def test_several_ignore_values_and_ranges(cli, shapes_set, segmenters, tmp_path):
    """A mask marking the boundary 255 and the top rows 254: both ignored by a list or a range; one alone is
    not enough (the other is then a class beyond the model's)."""
    masks = tmp_path / "masks"
    masks.mkdir()
    for stem, (cls, edge) in shapes_set["truth"].items():
        m = cls.astype(np.uint8).copy()
        m[edge] = 255
        m[:4] = 254
        Image.fromarray(m).save(masks / f"{stem}.png")
    ious, acc = _independent(segmenters["float32"], shapes_set, top_rows=True)
    for spec in ("254,255", "250-255", [255, 254]):
        r = evaluate_task(segmenters["float32"], shapes_set["images"], task="segmentation", masks=masks,
                          ignore_index=spec, workers=1)
        assert r.ignore == (tuple(range(250, 256)) if spec == "250-255" else (254, 255))
        _check(r, ious, acc)
    args = ("eval", segmenters["float32"], shapes_set["images"], "--task", "segmentation", "--masks", masks,
            "--size", "16x16", "-q")
    proc = cli(*args, "--ignore-index", "255")
    assert proc.returncode == 2 and "mask holds class 254" in proc.stderr and "--ignore-index" in proc.stderr
    proc = cli(*args, "--ignore-index", "250-255")
    assert proc.returncode == 0 and "ignoring 250-255" in proc.stdout, proc.stderr
    proc = cli(*args, "--ignore-index", "255-250")
    assert proc.returncode == 2 and "--ignore-index" in proc.stderr and "Traceback" not in proc.stderr


def test_labels_name_the_classes_and_count_those_of_a_class_map(cli, shapes_set, segmenters, tmp_path):
    names = ["background", "circle", "square", "triangle"]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names) + "\n")
    out = tmp_path / "r.json"
    proc = cli("eval", segmenters["classmap"], shapes_set["images"], "--task", "segmentation", "--masks",
               shapes_set["voc"], "--labels", labels, "--size", "16x16", "--json", out, "-q")
    assert proc.returncode == 0, proc.stderr
    r = SegmentationResult.from_json(out.read_text())
    assert r.classes == SEG_CLASSES and [c.name for c in r.per_class] == names
    _check(r, *_independent(segmenters["classmap"], shapes_set))
    labels.write_text("\n".join(names[:3]) + "\n")
    proc = cli("eval", segmenters["float32"], shapes_set["images"], "--task", "segmentation", "--masks",
               shapes_set["voc"], "--labels", labels, "-q")
    assert proc.returncode == 2 and "3 class names for a model with 4 classes" in proc.stderr
    with pytest.raises(LabelMismatchError):
        evaluate_task(segmenters["float32"], shapes_set["images"], task="segmentation", masks=shapes_set["voc"],
                      labels=names[:3])


def test_bad_masks_mappings_and_ignore_values_are_one_clear_error(shapes_set, segmenters, tmp_path):
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4)).save(rgb)
    with pytest.raises(DataError, match="palette"):
        read_mask(rgb)
    assert parse_ignore("none") == () and parse_ignore(None) == () and parse_ignore(7) == (7,)
    assert parse_ignore("0, 250-252") == (0, 250, 251, 252)
    for bad in ("x", "3-1", "-4", True):
        with pytest.raises(InvalidArgumentError, match="ignore_index"):
            parse_ignore(bad)
    with pytest.raises(InvalidArgumentError, match="cityscapes"):
        load_label_map(tmp_path / "missing.json")
    bad = tmp_path / "bad.csv"
    bad.write_text("7\n")
    with pytest.raises(DataError, match="value,class"):
        load_label_map(bad)
    assert load_label_map({7: 0}).apply(np.array([[7, 9]])).tolist() == [[0, 9]]  # unlisted values stay
    with pytest.raises(InvalidArgumentError, match="applies to segmentation masks, not classification"):
        evaluate_task(segmenters["float32"], shapes_set["images"], task="classification", label_map="cityscapes")


def test_cityscapes_file_names_find_their_masks(shapes_set, segmenters, tmp_path):
    """Images named X_leftImg8bit.png find X_gtFine_labelIds.png with --label-map cityscapes and
    X_gtFine_labelTrainIds.png without it (Cityscapes' own layout, colour masks beside them): the same truth."""
    images, gt = tmp_path / "leftImg8bit", tmp_path / "gtFine"
    images.mkdir()
    gt.mkdir()
    for k, src in enumerate(sorted(shapes_set["images"].iterdir())):
        base = f"frankfurt_000000_{k:06d}"
        shutil.copy(src, images / f"{base}_leftImg8bit.png")
        shutil.copy(shapes_set["cityscapes"] / src.name, gt / f"{base}_gtFine_labelIds.png")
        cls, edge = shapes_set["truth"][src.stem]
        train = cls.astype(np.uint8).copy()
        train[edge] = 255
        train[:4] = 255
        Image.fromarray(train).save(gt / f"{base}_gtFine_labelTrainIds.png")
        Image.new("RGB", train.shape[::-1], (128, 64, 128)).save(gt / f"{base}_gtFine_color.png")
    common = {"task": "segmentation", "masks": gt, "workers": 1}
    ids = evaluate_task(segmenters["float32"], images, label_map="cityscapes", **common)
    train_ids = evaluate_task(segmenters["float32"], images, **common)
    assert ids.confusion == train_ids.confusion
    truth = {f"frankfurt_000000_{k:06d}_leftImg8bit": v for k, v in enumerate(shapes_set["truth"].values())}
    _check(ids, *_independent(segmenters["float32"], {**shapes_set, "images": images, "truth": truth},
                              top_rows=True))


@pytest.mark.slow
def test_voc_layout_evaluates_the_listed_images(cli, shapes_set, segmenters, tmp_path):
    """JPEGImages holds more images than SegmentationClass has masks; ImageSets/Segmentation/val.txt names
    the ones to score (--image-list)."""
    jpeg = tmp_path / "JPEGImages"
    jpeg.mkdir()
    for src in shapes_set["images"].iterdir():
        shutil.copy(src, jpeg / src.name)
    for extra in ("2007_000001.png", "2007_000002.png"):  # no masks: detection-only images
        Image.new("RGB", (96, 96), (10, 20, 30)).save(jpeg / extra)
    listed = tmp_path / "val.txt"
    listed.write_text("".join(f"{p.stem}\n" for p in sorted(shapes_set["images"].iterdir())))
    args = ("eval", segmenters["float32"], jpeg, "--task", "segmentation", "--masks", shapes_set["voc"], "-q")
    proc = cli(*args)
    assert proc.returncode == 2 and "no mask for image 2007_000001.png" in proc.stderr
    out = tmp_path / "r.json"
    proc = cli(*args, "--image-list", listed, "--json", out)
    assert proc.returncode == 0, proc.stderr
    r = SegmentationResult.from_json(out.read_text())
    assert r.images == N
    _check(r, *_independent(segmenters["float32"], shapes_set))
    listed.write_text("2008_999999\n")
    proc = cli(*args, "--image-list", listed)
    assert proc.returncode == 2 and "'2008_999999'" in proc.stderr and "Traceback" not in proc.stderr
