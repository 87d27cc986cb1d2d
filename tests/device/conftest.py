"""Real models for the edgeq-device tests, made once per session.

The session's trained digits CNN (tests/conftest.py, ``digits_cnn``) converted with plain
``tf.lite.TFLiteConverter`` in every mode: float32, float16, dynamic range, int8 with
float I/O, int8 with int8 I/O and int8 with uint8 I/O. TensorFlow is used only by those
fixtures (the tests of ``edgeq_device`` itself never need it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MNIST = REPO / "datasets" / "mnist5k"
MODES = ("float32", "float16", "dynamic", "int8", "int8_io_int8", "int8_io_uint8")


@dataclass(frozen=True)
class TestModels:
    """Paths of the converted test models and the data they were trained on."""

    __test__ = False

    root: Path
    paths: dict[str, Path]
    train_x: np.ndarray

    def __getitem__(self, mode: str) -> Path:
        return self.paths[mode]


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def rewrite_model(data: bytes, edit: Callable[[Any], None]) -> bytes:
    """Unpack a .tflite with TFLite's flatbuffer object API, apply ``edit(model_t)``, pack it again."""
    import flatbuffers

    schema = _schema()
    model_t = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    edit(model_t)
    builder = flatbuffers.Builder(max(1024, len(data)))
    builder.Finish(model_t.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def add_edgeq_metadata(data: bytes, meta: dict[str, Any]) -> bytes:
    """Add a buffer holding ``meta`` as JSON and a metadata entry named "edgeq" pointing at it."""
    schema = _schema()

    def edit(m: Any) -> None:
        buf = schema.BufferT()
        buf.data = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
        m.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name = "edgeq"
        entry.buffer = len(m.buffers) - 1
        m.metadata = [*(m.metadata or []), entry]

    return rewrite_model(data, edit)


def as_edgetpu_model(data: bytes, opcode_name: str = "SOFTMAX") -> bytes:
    """Turn one operator code into the Edge TPU compiler's CUSTOM ``edgetpu-custom-op``."""
    schema = _schema()
    wanted = getattr(schema.BuiltinOperator, opcode_name)

    def edit(m: Any) -> None:
        for code in m.operatorCodes:
            if max(code.builtinCode, code.deprecatedBuiltinCode) == wanted:
                code.builtinCode = schema.BuiltinOperator.CUSTOM
                code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
                code.customCode = "edgetpu-custom-op"
                return
        raise AssertionError(f"no {opcode_name} operator in the model")

    return rewrite_model(data, edit)


def mnist_metadata(io: str = "uint8") -> dict[str, Any]:
    """The edgeq metadata of the test models (see edgeq_device.model.metadata)."""
    return {
        "schema": 1, "mode": "int8", "io": io,
        "preprocess": {"size": [28, 28], "color": "l", "resize": "bilinear", "crop": "none",
                       "crop_fraction": 0.875, "mean": [0.0], "std": [255.0], "layout": "nhwc"},
        "labels": [str(d) for d in range(10)],
        "source": "tests/device/conftest.py", "edgeq_version": None, "created": None, "extra": {},
    }


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return MNIST


@pytest.fixture(scope="session")
def models(digits_plain_tflite: dict[str, Path], digits_train_arrays: tuple[np.ndarray, np.ndarray],
           tmp_path_factory: pytest.TempPathFactory) -> TestModels:
    """The session's trained CNN converted in every mode (see MODES), plus variants with metadata."""
    root = tmp_path_factory.mktemp("models")
    paths: dict[str, Path] = dict(digits_plain_tflite)
    with_meta = add_edgeq_metadata(paths["int8_io_uint8"].read_bytes(), mnist_metadata())
    paths["meta_uint8"] = root / "mnist_meta_uint8.tflite"
    paths["meta_uint8"].write_bytes(with_meta)
    paths["edgetpu"] = root / "mnist_edgetpu.tflite"
    paths["edgetpu"].write_bytes(as_edgetpu_model(paths["int8_io_uint8"].read_bytes()))
    return TestModels(root=root, paths=paths, train_x=digits_train_arrays[0])


@pytest.fixture(scope="session")
def small_test_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labeled folder of 200 mnist5k test images (20 per class)."""
    root = tmp_path_factory.mktemp("mnist_small")
    for digit in range(10):
        (root / str(digit)).mkdir()
        for f in sorted((MNIST / "test" / str(digit)).glob("*.png"))[:20]:
            shutil.copy(f, root / str(digit) / f.name)
    return root


def cli_command() -> list[str]:
    """How to start the edgeq-device command of this environment."""
    exe = Path(sys.executable).parent / "edgeq-device"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "edgeq_device.cli"]


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 120,
            env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``edgeq-device ARGS`` in a subprocess (real stderr, native output included).

    ``prefix`` goes before the command, e.g. a wrapper that changes its privileges.
    """
    env = {**{k: v for k, v in os.environ.items() if k != "EDGEQ_RUNTIME"}, **(env or {})}
    return subprocess.run([*prefix, *cli_command(), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env, check=False)


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli("bench", model, ...)`` runs the edgeq-device command in a subprocess."""
    return run_cli


@dataclass(frozen=True)
class ModelTools:
    """The flatbuffer editing helpers, handed to tests as a fixture."""

    rewrite_model: Callable[..., bytes]
    add_edgeq_metadata: Callable[..., bytes]
    as_edgetpu_model: Callable[..., bytes]
    mnist_metadata: Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def model_tools() -> ModelTools:
    return ModelTools(rewrite_model, add_edgeq_metadata, as_edgetpu_model, mnist_metadata)


@pytest.fixture(scope="session")
def tflite_support_python() -> str:
    """The Python of a cached venv with TFLite Support's metadata writers (see fixtures.elsewhere)."""
    from fixtures.elsewhere import TFLITE_SUPPORT, tflite_support_python

    py = tflite_support_python()
    if py is None:
        pytest.skip(f"pip cannot install {TFLITE_SUPPORT} into a venv here")
    return py
