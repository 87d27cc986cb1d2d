"""edgeq-device info: figures checked against the TFLite interpreter and TFLite's own schema reader."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from edgeq_device import InvalidArgumentError, ModelFileError, ModelInfo, model_info
from edgeq_device.model.info import format_info

MODES = ("float32", "float16", "dynamic", "int8", "int8_io_int8", "int8_io_uint8")
IO_DTYPE = {"float32": "FLOAT32", "float16": "FLOAT32", "dynamic": "FLOAT32", "int8": "FLOAT32",
            "int8_io_int8": "INT8", "int8_io_uint8": "UINT8"}


def _schema_op_counts(data: bytes) -> Counter[str]:
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in m.operatorCodes]
    return Counter(names[codes[op.opcodeIndex]] for op in m.subgraphs[0].operators)


@pytest.mark.parametrize("mode", MODES)
def test_info_matches_interpreter_and_schema(models, mode):
    from ai_edge_litert.interpreter import Interpreter

    path = models[mode]
    data = path.read_bytes()
    info = model_info(path)
    interp = Interpreter(model_path=str(path))
    for ours, theirs in ((info.inputs, interp.get_input_details()),
                         (info.outputs, interp.get_output_details())):
        assert len(ours) == len(theirs) == 1
        t, d = ours[0], theirs[0]
        assert t.name == d["name"]
        assert t.dtype == np.dtype(d["dtype"]).name.upper()
        assert t.shape == tuple(int(x) for x in d["shape"])
        assert t.shape_signature == tuple(int(x) for x in d["shape_signature"])
        q = d["quantization_parameters"]
        np.testing.assert_allclose(t.scale, q["scales"], rtol=1e-7)
        assert list(t.zero_point) == [int(z) for z in q["zero_points"]]
    assert info.inputs[0].dtype == IO_DTYPE[mode]
    assert info.inputs[0].is_quantized == (IO_DTYPE[mode] != "FLOAT32")
    assert info.inputs[0].is_dynamic and info.inputs[0].shape_signature == (-1, 28, 28, 1)
    assert dict(info.op_counts) == dict(_schema_op_counts(data))
    assert info.num_ops == sum(info.op_counts.values())
    assert info.model_size_bytes == len(data)
    assert info.model_sha256 == hashlib.sha256(data).hexdigest()
    assert not info.edgetpu and info.metadata is None
    assert 0 < info.constant_bytes < info.model_size_bytes
    if mode.startswith("int8"):
        assert "QUANTIZE" in info.op_counts or IO_DTYPE[mode] != "FLOAT32"
        assert info.op_counts["CONV_2D"] == 2
    if mode == "float16":
        assert info.op_counts.get("DEQUANTIZE", 0) >= 1  # float16 weights are dequantized at load


def test_weights_shrink_with_quantization(models):
    sizes = {m: model_info(models[m]).constant_bytes for m in ("float32", "float16", "dynamic", "int8")}
    assert sizes["float16"] < sizes["float32"]
    assert sizes["dynamic"] < sizes["float16"]
    assert sizes["int8"] < sizes["float16"]


def test_info_reads_edgeq_metadata_and_edgetpu_op(models):
    info = model_info(models["meta_uint8"])
    assert info.metadata is not None
    assert info.metadata.labels == tuple(str(d) for d in range(10))
    assert info.metadata.preprocess is not None and info.metadata.preprocess.size == (28, 28)
    assert "edgeq" in info.metadata_names
    assert "labels (10)" in format_info(info)
    tpu = model_info(models["edgetpu"])
    assert tpu.edgetpu and tpu.custom_ops == ("edgetpu-custom-op",)
    assert "Edge TPU" in format_info(tpu)


def test_info_json_round_trip(models):
    info = model_info(models["meta_uint8"])
    d = json.loads(info.to_json())
    assert d["schema"] == "edgeq-device/info/2"
    assert d["model_sha256"] == info.model_sha256 and "sha256" not in d
    assert d["inputs"][0]["dtype"] == "UINT8"
    assert d["metadata"]["labels"][3] == "3"
    assert ModelInfo.from_dict(d) == info
    from_bytes = model_info(models["meta_uint8"].read_bytes())
    assert from_bytes.model is None and from_bytes.op_counts == info.op_counts


def test_info_reads_version_1_json(models):
    """JSON written before the model fields took their common names still reads."""
    info = model_info(models["meta_uint8"])
    d = json.loads(info.to_json())
    old = {{"model": "path", "model_sha256": "sha256", "model_size_bytes": "size_bytes"}.get(k, k): v
           for k, v in d.items()}
    old["schema"] = "edgeq-device/info/1"
    assert ModelInfo.from_dict(old) == info
    with pytest.raises(InvalidArgumentError, match="info/3"):
        ModelInfo.from_dict(dict(d, schema="edgeq-device/info/3"))
    with pytest.raises(InvalidArgumentError, match="lacks 'model_sha256'"):
        ModelInfo.from_dict({k: v for k, v in d.items() if k != "model_sha256"})


def test_info_reads_as_text_and_html(models):
    info = model_info(models["meta_uint8"])
    assert str(info) == format_info(info)
    page = info._repr_html_()
    assert page.startswith("<div>") and "edgeq-device/info/2" in page and "model_sha256" in page
    assert "<script" not in page


def test_info_bad_files(tmp_path, models):
    with pytest.raises(ModelFileError, match="not found"):
        model_info(tmp_path / "missing.tflite")
    text = tmp_path / "notes.tflite"
    text.write_text("this is not a model at all")
    with pytest.raises(ModelFileError, match="TFL3"):
        model_info(text)
    data = models["float32"].read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelFileError, match="truncated"):
        model_info(cut)


def test_info_reports_compute_and_memory(models):
    """info carries the analysis: MACs, parameters and the activation-memory estimate."""
    from edgeq_device.model.analysis import analyze_flat_model
    from edgeq_device.model.info import format_info, model_info

    info = model_info(models.paths["float32"])
    graph = analyze_flat_model(models.paths["float32"])
    assert info.macs == graph.total_macs > 0
    assert info.params == graph.total_params > 0
    assert info.peak_activation_bytes == graph.peak_activation_bytes > 0
    assert f"{info.macs:,} multiply-accumulates" in format_info(info)
