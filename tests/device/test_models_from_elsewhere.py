"""Models edgeq did not make give the right numbers with no flags.

Public MediaPipe models (standard TFLite metadata, labels packed in the model) on real photos,
integer-input models with no metadata (fed raw pixels, as their authors feed them), models
whose metadata TFLite Support's own writer wrote; every figure is checked against the plain
LiteRT loop a user writes, fed what the model's authors feed it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from edgeq_device import (
    EvalResult,
    ModelFileError,
    ModelInfo,
    evaluate,
    list_image_folder,
    model_info,
    read_flat_model,
)
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.model.preprocess_choice import GuessedPreprocessWarning, choose_preprocess
from edgeq_device.model.tflite_metadata import read_tflite_metadata
from edgeq_device.tasks.fidelity import evaluate_fidelity
from fixtures.elsewhere import PHOTOS, PUBLIC_MODELS, WORDS, plain_loop_outputs, write_classifier_metadata
from label_folders import class_files, subset

FACE = PUBLIC_MODELS / "face_detection_short_range.tflite"
SELFIE = PUBLIC_MODELS / "selfie_segmentation.tflite"


def _photos() -> list[Path]:
    return list(list_image_folder(PHOTOS).paths)


def test_reads_the_metadata_mediapipe_wrote():
    face = read_tflite_metadata(FACE)
    assert face is not None and face.name == "Short Range Face Detection"
    assert face.mean == (127.5,) and face.std == (127.5,) and face.color == "rgb"
    assert face.inputs[0].kind == "image" and face.inputs[0].stats_min == (-1.0,)
    assert [t.name for t in face.outputs] == ["raw boxes/keypoints", "scores"] and face.labels is None

    selfie = read_tflite_metadata(SELFIE)
    assert selfie is not None and selfie.packed == ("labels.txt",)
    with zipfile.ZipFile(SELFIE) as z:  # the zip appended to the flatbuffer, read on its own
        packed = z.read("labels.txt").decode().split()
    assert selfie.labels == tuple(packed) == ("selfie",) and selfie.class_offset == 0
    out = selfie.outputs[0]
    assert out.kind == "image" and out.color == "grayscale" and out.files == ("labels.txt",)
    assert selfie.mean == (0.0,) and selfie.std == (255.0,)


def test_a_model_without_the_standard_metadata_reads_as_none(models):
    assert read_tflite_metadata(models["float32"]) is None


def test_face_detector_with_no_flags_matches_a_plain_litert_loop(tmp_path):
    photos = _photos()
    ref = plain_loop_outputs(FACE, photos, "float", (128, 128), mean=127.5, std=127.5)
    np.savez(tmp_path / "ref.npz", **{str(k): np.concatenate([o[k] for o in ref]) for k in range(len(ref[0]))})
    r = evaluate_fidelity(FACE, PHOTOS, tmp_path / "ref.npz")
    assert r.samples == len(photos) == 6
    assert [o.max_abs_error for o in r.outputs] == [0.0, 0.0]
    assert r.preprocessing.startswith("(pixel - 127.5) / 127.5 (TFLite metadata); 128x128 rgb")
    assert r.preprocess_sources == {"size": "input", "color": "TFLite metadata", "normalization": "TFLite metadata"}
    # What edgeq fed before it read the metadata ([0, 1]) is not what the authors feed.
    old = evaluate_fidelity(FACE, PHOTOS, tmp_path / "ref.npz", preprocess=Preprocess(size=(128, 128)))
    assert min(o.max_abs_error for o in old.outputs) > 0.1


def test_flags_then_edgeq_metadata_then_tflite_metadata(model_tools, tmp_path):
    meta = model_tools.mnist_metadata()
    meta["preprocess"].update(size=[128, 128], color="rgb", mean=[10.0], std=[20.0])
    both = tmp_path / "both.tflite"
    both.write_bytes(model_tools.add_edgeq_metadata(FACE.read_bytes(), meta))
    assert read_tflite_metadata(both) is not None  # the standard metadata is still there
    c = choose_preprocess(both)
    assert c.preprocess.mean == (10.0,) and c.sources["normalization"] == "edgeq metadata"
    assert c.summary.startswith("(pixel - 10) / 20 (edgeq metadata)")
    c = choose_preprocess(both, mean=1.0, std=2.0)
    assert c.preprocess.mean == (1.0,) and c.sources["normalization"] == "flag"
    assert c.summary.startswith("(pixel - 1) / 2 (--mean/--std)")
    assert choose_preprocess(FACE, std=2.0).preprocess.mean == (127.5,)  # one flag replaces one part


def test_float_input_with_no_metadata_warns_that_it_guesses(models):
    with pytest.warns(GuessedPreprocessWarning, match=r"float32 input and no metadata.*--mean/--std"):
        c = choose_preprocess(models["float32"])
    assert c.guessed and c.preprocess.mean == (0.0,) and c.preprocess.std == (255.0,)
    assert c.summary == ("(pixel - 0) / 255, a guess (model input is float32, no metadata: give --mean/--std); "
                         "28x28 l (input shape)")


def _raw_top1(model: Path, files: list[tuple[Path, int]]) -> float:
    outs = plain_loop_outputs(model, [f for f, _ in files], "raw", (28, 28), color="L")
    return float(np.mean([int(np.argmax(o[0])) == c for o, (_, c) in zip(outs, files)]))


@pytest.mark.slow
@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_integer_input_is_fed_raw_pixels(pm1_models, mnist_dir, tmp_path, cli, io):
    data = subset(mnist_dir / "test", tmp_path / "data", {d: None for d in range(10)}, per_class=10)
    ref = _raw_top1(pm1_models[io], class_files(data, {str(d): d for d in range(10)}))
    r = evaluate(pm1_models[io], data)
    assert r.top1 == pytest.approx(ref, abs=0) and ref > 0.85
    want = "raw uint8 pixels" if io == "uint8" else "raw pixels - 128 as int8"
    assert r.preprocessing == f"{want} (model input is {io}, no metadata); 28x28 l (input shape)"
    assert r.preprocess_sources is not None and r.preprocess_sources["normalization"] == "input"
    # The old default, pixels / 255 quantized with the input's scale, shows the model [0, 1], not [-1, 1].
    assert EvalResult.from_json(r.to_json()) == r
    old = evaluate(pm1_models[io], data, preprocess=Preprocess(size=(28, 28), color="l"))
    assert old.top1 < ref - 0.2

    proc = cli("eval", pm1_models[io], data, "-q")
    assert proc.returncode == 0, proc.stderr
    assert f"preprocessing  {want} (model input is {io}, no metadata)" in proc.stdout
    assert "warning" not in proc.stderr
    payload = json.loads(cli("eval", pm1_models[io], data, "-q", "--json", "-").stdout)
    assert payload["top1"] == r.top1 and payload["preprocess_sources"]["normalization"] == "input"
    assert payload["preprocessing"].startswith(want)


@pytest.mark.slow
def test_bench_and_profile_say_what_their_inputs_stand_for(pm1_models, cli, mnist_dir):
    proc = cli("bench", pm1_models["uint8"], "--runs", "3", "--min-secs", "0", "--warmup", "0",
               "--data", mnist_dir / "test")
    assert proc.returncode == 0, proc.stderr
    assert "preprocessing  raw uint8 pixels (model input is uint8, no metadata)" in proc.stdout
    proc = cli("bench", FACE, "--runs", "3", "--min-secs", "0", "--warmup", "0", "--json", "-")
    payload = json.loads(proc.stdout)
    assert payload["preprocessing"] == ("none: random floats over what (pixel - 127.5) / 127.5 makes of pixels "
                                        "0..255 (normalization from TFLite metadata)")
    proc = cli("profile", pm1_models["int8"], "--runs", "2", "--min-secs", "0", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "preprocessing  none: random integers over each input's whole range" in proc.stdout


def test_info_shows_the_standard_metadata(cli):
    proc = cli("info", SELFIE)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "tflite     ImageSegmenter (TFLite metadata)" in lines
    assert "  input    image rgb, normalization (pixel - 0) / 255" in lines
    assert "  output   segmentation_masks: image grayscale, labels (1) selfie" in lines
    assert "  packed   labels.txt" in lines
    payload = json.loads(cli("info", FACE, "--json", "-").stdout)
    assert payload["tflite_metadata"]["inputs"][0]["mean"] == [127.5]
    assert payload["preprocessing"].startswith("(pixel - 127.5) / 127.5 (TFLite metadata)")
    info = model_info(SELFIE)
    assert ModelInfo.from_json(info.to_json()) == info and info.tflite_metadata == read_tflite_metadata(SELFIE)


def _custom_op_model(path: Path, buffer: int = 0) -> Path:
    """One CUSTOM operator, both tensors on ``buffer`` and an empty buffer list (LiteRT loads it with buffer 0)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    m = s.ModelT()
    m.version = 3
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    code.customCode, code.version = "MyCustomOp", 1
    sg = s.SubGraphT()
    sg.tensors = []
    for name in ("in", "out"):
        t = s.TensorT()
        t.shape, t.type, t.buffer, t.name = np.array([1, 4], np.int32), s.TensorType.FLOAT32, buffer, name
        sg.tensors.append(t)
    sg.inputs, sg.outputs = np.array([0], np.int32), np.array([1], np.int32)
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, np.array([0], np.int32), np.array([1], np.int32)
    sg.operators = [op]
    m.operatorCodes, m.subgraphs, m.buffers = [code], [sg], []
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


def test_a_model_the_runtime_loads_passes_validation_and_its_refusal_is_one_line(cli, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    model = _custom_op_model(tmp_path / "custom.tflite")
    flat = read_flat_model(model)  # the validator is not stricter than the runtime
    assert len(flat.buffer_spans) == 0 and flat.main.operators[0].custom_code == "MyCustomOp"
    interp = Interpreter(model_path=str(model))
    with pytest.raises(RuntimeError, match="unresolved custom op: MyCustomOp") as runtime_says:
        interp.allocate_tensors()
    first = " ".join(str(runtime_says.value).split())[:60]
    for args in (("bench", model), ("eval", model, "--inputs", tmp_path / "x.npy", "--reference", tmp_path / "y.npz")):
        np.save(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
        np.savez(tmp_path / "y.npz", out=np.zeros((1, 4), np.float32))
        proc = cli(*args)
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr
        assert first in errors[0] and "Traceback" not in proc.stderr
    with pytest.raises(ModelFileError, match="refers to buffer 3, the model has 0 buffers"):
        read_flat_model(_custom_op_model(tmp_path / "bad.tflite", buffer=3))


@pytest.mark.slow
@pytest.mark.parametrize(("io", "background", "channels"),
                         [("float", False, 1), ("float", False, 3), ("uint8", False, 1), ("uint8", True, 1)])
def test_tflite_support_metadata_needs_no_flags(pm1_models, tflite_support_python, mnist_dir, tmp_path, cli, io,
                                                background, channels):
    model = tmp_path / f"digits_{io}_meta.tflite"
    labels = ("background", *WORDS) if background else WORDS  # 11 labels for 10 outputs: class offset 1
    # Writers repeat one value per channel of an RGB image; the grayscale input takes it once.
    per_channel = (127.5,) * channels
    shown = write_classifier_metadata(tflite_support_python, pm1_models[io], model, labels, per_channel, per_channel)
    meta = read_tflite_metadata(model)
    assert meta is not None
    # The reader agrees with TFLite Support's own displayer.
    sub = shown["json"]["subgraph_metadata"][0]
    norm = sub["input_tensor_metadata"][0]["process_units"][0]["options"]
    assert meta.mean == tuple(norm["mean"]) and meta.std == tuple(norm["std"])
    assert meta.packed == tuple(shown["packed"]) == ("labels.txt",)
    assert [t.name for t in meta.outputs] == [t["name"] for t in sub["output_tensor_metadata"]]
    assert meta.labels == labels and meta.name == shown["json"]["name"]
    assert meta.class_offset == int(background) and meta.class_names(10) == WORDS
    if background:
        assert "  class offset 1 (the first label, 'background', is no class)" in cli("info", model).stdout

    data = subset(mnist_dir / "test", tmp_path / "data", {d: WORDS[d] for d in range(10)}, per_class=10)
    files = class_files(data, {w: d for d, w in enumerate(WORDS)})
    if io == "float":
        outs = plain_loop_outputs(model, [f for f, _ in files], "float", (28, 28), color="L", mean=127.5, std=127.5)
        ref = float(np.mean([int(np.argmax(o[0])) == c for o, (_, c) in zip(outs, files)]))
    else:
        ref = _raw_top1(model, files)
    proc = cli("eval", model, data, "-q", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["top1"] == pytest.approx(ref, abs=0) and ref > 0.85
    assert payload["labels_from"] == "TFLite metadata" and payload["classes"] == list(WORDS)
    norm_from = "TFLite metadata" if io == "float" else "input"
    assert payload["preprocess_sources"]["normalization"] == norm_from
    if io == "float":
        assert payload["preprocess"]["mean"] == [127.5] and payload["preprocess"]["std"] == [127.5]
    assert "warning" not in proc.stderr
    old = evaluate(model, data, preprocess=Preprocess(size=(28, 28), color="l"))  # [0, 1] as before
    assert old.top1 < ref - 0.2


def test_the_public_files_say_where_they_came_from():
    for folder in (PUBLIC_MODELS, PHOTOS):
        notice = (folder / "NOTICE").read_text(encoding="utf-8")
        for f in folder.iterdir():
            if f.name != "NOTICE":
                assert f.name in notice, f"{f.name} is not in {folder / 'NOTICE'}"


def test_damaged_standard_metadata_never_stops_a_model_the_runtime_runs(cli, tmp_path):
    import random

    from edgeq_device.model.tflite_metadata import (
        TFLITE_METADATA_NAME,
        UnreadableMetadataWarning,
        parse_tflite_metadata,
    )

    flat = read_flat_model(SELFIE)
    raw = flat.metadata[TFLITE_METADATA_NAME]
    start = flat.raw.index(raw)
    rng = random.Random(20261207)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(400):  # seeded mutants of the metadata buffer alone: parsed, or ValueError-like, never worse
        b = bytearray(raw)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        try:
            parse_tflite_metadata(bytes(b))
            outcomes["read"] += 1
        except (ValueError, IndexError, UnicodeDecodeError, TypeError):
            outcomes["refused"] += 1
    assert outcomes["read"] and outcomes["refused"]

    broken = bytearray(flat.raw)
    broken[start:start + len(raw)] = bytes(len(raw))  # the entry zeroed: not a metadata flatbuffer
    model = tmp_path / "broken_meta.tflite"
    model.write_bytes(bytes(broken))
    with pytest.raises(ModelFileError, match="TFLITE_METADATA entry is not TFLite metadata"):
        read_tflite_metadata(model)
    with pytest.warns(UnreadableMetadataWarning):
        assert read_tflite_metadata(model, strict=False) is None
    with pytest.warns(UnreadableMetadataWarning):
        c = choose_preprocess(model, warn=False)
    assert c.sources["normalization"] == "default"
    proc = cli("info", model)
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and warned[0].startswith("warning: the model's TFLITE_METADATA entry cannot be read")


def test_a_scale_on_a_tensor_no_kernel_reads_it_from_is_the_runtimes_business(pm1_models, model_tools, tmp_path):
    """LiteRT runs a model whose INT32 shape constant carries a zero scale; so does edgeq."""
    from ai_edge_litert import schema_py_generated as s
    from ai_edge_litert.interpreter import Interpreter

    flat = read_flat_model(pm1_models["int8"])
    shape_const = next(t for t in flat.main.tensors if t.dtype == "INT32" and t.buffer_size
                       and not t.quantization.scale)

    def edit(m) -> None:  # type: ignore[no-untyped-def]
        q = s.QuantizationParametersT()
        q.scale, q.zeroPoint = np.array([0.0], np.float32), np.array([0], np.int64)
        m.subgraphs[0].tensors[shape_const.index].quantization = q

    model = tmp_path / "zero_scale_int32.tflite"
    model.write_bytes(model_tools.rewrite_model(pm1_models["int8"].read_bytes(), edit))
    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    interp.invoke()  # the runtime takes it
    assert read_flat_model(model).main.tensors[shape_const.index].quantization.scale == (0.0,)
    x = np.zeros((2, 28, 28, 1), np.float32)
    from edgeq_device import ModelRunner

    assert ModelRunner(model).run(x)[0].shape == (2, 10)


@pytest.mark.slow
def test_detector_metadata_reads_as_tflite_support_wrote_it(tflite_support_python, tmp_path, cli):
    from fixtures.elsewhere import detector_file

    model = tmp_path / "det_meta.tflite"
    shown = write_classifier_metadata(tflite_support_python, detector_file(tmp_path / "det.tflite"), model,
                                      ("circle", "square", "triangle"), 0.0, 255.0, kind="detector")
    meta = read_tflite_metadata(model)
    assert meta is not None
    outs = shown["json"]["subgraph_metadata"][0]["output_tensor_metadata"]
    assert [t.name for t in meta.outputs] == [t["name"] for t in outs]
    names = {"location": "boxes", "category": "classes", "score": "scores", "number of detections": "count"}
    assert meta.output_roles() == {names[t["name"]]: i for i, t in enumerate(outs)}
    box = next(t for t in meta.outputs if t.name == "location")
    want = next(t for t in outs if t["name"] == "location")["content"]
    assert box.kind == "bounding_box" and box.bounding_box is not None
    assert list(box.bounding_box.index) == want["content_properties"]["index"]
    assert box.bounding_box.type == want["content_properties"]["type"].lower() and box.bounding_box.coordinates == "ratio"
    assert box.value_range == (want["range"]["min"], want["range"]["max"])
    category = next(t for t in meta.outputs if t.name == "category")
    assert category.value_labels == meta.labels == ("circle", "square", "triangle") and category.labels is None
    proc = cli("info", model)
    assert "  output   location: bounding_box, boxes boundaries ratio index [1, 0, 3, 2]" in proc.stdout


def _signature_of_another_rank(m) -> None:  # type: ignore[no-untyped-def]
    sg = m.subgraphs[0]
    sg.tensors[sg.operators[1].outputs[0]].shapeSignature = np.array([1, 2], np.int32)


def _name_not_utf8(m) -> None:  # type: ignore[no-untyped-def]
    m.subgraphs[0].tensors[3].name = b"\xff\xfeconv"


@pytest.mark.parametrize("edit", [_signature_of_another_rank, _name_not_utf8], ids=["signature-rank", "name-bytes"])
def test_what_litert_runs_edgeq_runs(models, model_tools, edit):
    from ai_edge_litert.interpreter import Interpreter
    from edgeq_device import ModelRunner

    data = model_tools.rewrite_model(models["int8"].read_bytes(), edit)
    interp = Interpreter(model_content=data)
    interp.allocate_tensors()
    interp.invoke()
    read_flat_model(data)
    assert ModelRunner(data).run(np.zeros((1, 28, 28, 1), np.float32))[0].shape == (1, 10)
