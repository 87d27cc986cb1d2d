"""The sweep's grid: which options apply to which mode, what changes a cell's key, models.toml errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import InvalidArgumentError
from edgeq.sweeps.grid import ModelSpec, build_grid, data_hash, load_models_toml, model_specs

REPO = Path(__file__).resolve().parents[3]
SETTINGS = {"samples": 100, "seed": 0}


def _file_model(tmp_path: Path, name: str = "m", content: bytes = b"weights") -> ModelSpec:
    p = tmp_path / f"{name}.keras"
    p.write_bytes(content)
    return model_specs([p])[0]


def test_options_apply_only_to_their_modes(tmp_path):
    spec = _file_model(tmp_path)
    cells = build_grid([spec], ["float16", "int8"], {"ranges": ["minmax", "mse"], "a16": [0, 2], "io": "int8"},
                       {"calibration": "c"}, SETTINGS)
    names = [c.name for c in cells]
    assert names.count("m/float16") == 1  # not once per ranges × a16
    assert sorted(n for n in names if "int8" in n.split()[0]) == sorted([
        "m/int8 io=int8", "m/int8 a16=2 io=int8", "m/int8 io=int8 ranges=mse", "m/int8 a16=2 io=int8 ranges=mse"])
    assert len({c.key for c in cells}) == len(cells) == 5
    assert all("/" not in c.folder and " " not in c.folder for c in cells)


def test_the_key_follows_model_data_and_settings(tmp_path):
    a = _file_model(tmp_path, "a", b"one")
    key = build_grid([a], ["int8"], None, {"calibration": "c"}, SETTINGS)[0].key
    assert key == build_grid([a], ["int8"], None, {"calibration": "c"}, SETTINGS)[0].key
    assert key != build_grid([a], ["int8"], None, {"calibration": "d"}, SETTINGS)[0].key
    assert key != build_grid([a], ["int8"], None, {"calibration": "c"}, {**SETTINGS, "seed": 1})[0].key
    (tmp_path / "a.keras").write_bytes(b"two")  # the same name, other weights: another cell
    assert key != build_grid([a], ["int8"], None, {"calibration": "c"}, SETTINGS)[0].key


def test_data_hash_of_arrays_and_folders(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert data_hash((x, np.arange(3))) == data_hash((x.copy(), np.arange(3)))
    assert data_hash((x, np.arange(3))) != data_hash((x.reshape(4, 3), np.arange(3)))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("1")
    h = data_hash(tmp_path / "d")
    (tmp_path / "d" / "a.txt").write_text("2")
    assert data_hash(tmp_path / "d") != h
    with pytest.raises(InvalidArgumentError, match="evaluation: no data at this path"):
        data_hash(tmp_path / "missing", "evaluation")
    with pytest.raises(InvalidArgumentError, match="path or arrays"):
        data_hash([1, 2, 3], "calibration")


def test_models_toml_builders(tmp_path):
    models = load_models_toml(REPO / "examples" / "sweep_models.toml")
    assert [m.name for m in models] == ["digits_w4", "digits_w8", "digits_w16"]
    assert models[0].builder == "sweep_models:digits_cnn" and models[0].args == {"width": 4, "dense": 16}
    # a builder's hash covers its module's source, found without importing it
    assert models[0].content_hash() != models[1].content_hash()
    bad = tmp_path / "models.toml"
    bad.write_text('[[model]]\nname = "x"\nbuilder = "no_such_module_here:f"\n')
    with pytest.raises(InvalidArgumentError, match="cannot find the builder's module"):
        load_models_toml(bad)[0].content_hash()
    bad.write_text('[[model]]\nname = "x"\nfile = "a.keras"\nbuilder = "m:f"\n')
    with pytest.raises(InvalidArgumentError, match="exactly one of file or builder"):
        load_models_toml(bad)
    bad.write_text('[[model]]\nname = "x"\nbulider = "m:f"\n')
    with pytest.raises(InvalidArgumentError, match="unknown keys"):
        load_models_toml(bad)
    bad.write_text("[[model]\n")
    with pytest.raises(InvalidArgumentError, match="not valid TOML"):
        load_models_toml(bad)


def test_two_models_with_one_name_are_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "m.keras").write_bytes(b"1")
    (tmp_path / "m.keras").write_bytes(b"2")
    with pytest.raises(InvalidArgumentError, match="same name"):
        model_specs([tmp_path / "a" / "m.keras", tmp_path / "m.keras"])
    with pytest.raises(InvalidArgumentError, match="unknown sweep option"):
        build_grid(model_specs([tmp_path / "m.keras"]), ["int8"], {"rangez": ["mse"]}, {}, SETTINGS)


def test_a_mode_key_holds_only_what_it_uses(tmp_path):
    a = _file_model(tmp_path)

    def keys(hashes, settings):
        return {c.mode: c.key for c in build_grid([a], ["float16", "int8"], None, hashes, settings)}

    base = keys({"calibration": "c", "evaluation": "e", "train": None}, SETTINGS)
    other_calib = keys({"calibration": "c2", "evaluation": "e", "train": None}, {**SETTINGS, "samples": 7})
    assert other_calib["float16"] == base["float16"] and other_calib["int8"] != base["int8"]
    other_eval = keys({"calibration": "c", "evaluation": "e2", "train": None}, SETTINGS)
    assert other_eval["float16"] != base["float16"]
