"""The edgeq-device wheel packed from an installed distribution: its hashes, pip, tampering."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import Distribution, distributions
from pathlib import Path

import pytest

from edgeq.deployment import agent
from edgeq.deployment.wheel import build_device_wheel, record_hash, verify_wheel
from edgeq.errors import DeployError


def _dist(site: Path) -> Distribution:
    found = list(distributions(name="edgeq-device", path=[str(site)]))
    assert len(found) == 1
    return found[0]


def _record(text: str) -> dict[str, str]:
    return {row[0]: row[1] for row in csv.reader(io.StringIO(text)) if row}


def test_wheel_matches_the_installed_record(installed_device, tmp_path):
    dist = _dist(installed_device)
    wheel = build_device_wheel(tmp_path, distribution=dist)
    assert wheel.name == "edgeq_device-0.1.0-py3-none-any.whl"
    installed = {f.as_posix(): f"{f.hash.mode}={f.hash.value}" for f in dist.files or [] if f.hash}
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        info = next(n for n in names if n.endswith(".dist-info/RECORD")).rsplit("/", 1)[0]
        record = _record(zf.read(f"{info}/RECORD").decode())
        # every entry is in the wheel's RECORD with the sha256 of its bytes
        assert set(record) == set(names)
        for name in names:
            if name != f"{info}/RECORD":
                assert record[name] == record_hash(zf.read(name)), name
        # every module of the installed package is there, with the installed RECORD's hash
        modules = sorted(p for p in installed if p.startswith("edgeq_device/"))
        assert modules and sorted(n for n in names if n.startswith("edgeq_device/")) == modules
        for name in modules:
            assert record[name] == installed[name], name
            assert zf.read(name) == (installed_device / name).read_bytes()
        # METADATA and the console script's entry point come from the installed dist-info, byte for byte
        for extra in ("METADATA", "entry_points.txt"):
            assert zf.read(f"{info}/{extra}") == (installed_device / info / extra).read_bytes()
        # the installer's own records and compiled files stay out
        assert not [n for n in names if n.endswith((".pyc", "INSTALLER", "REQUESTED", "direct_url.json"))]
    assert verify_wheel(wheel, installed) == len(names)
    # the same installed files give the same wheel bytes (a board's venv is then reused)
    again = build_device_wheel(tmp_path / "other", distribution=dist)
    assert again.read_bytes() == wheel.read_bytes()


def test_pip_installs_the_wheel_and_it_holds_the_same_bytes(installed_device, tmp_path):
    wheel = build_device_wheel(tmp_path, distribution=_dist(installed_device))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                          "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    probe = ("import hashlib, importlib.metadata as m, importlib.util as u, pathlib\n"
             "d = m.distribution('edgeq-device')\n"
             "root = pathlib.Path(u.find_spec('edgeq_device').origin).parent\n"
             "for p in sorted(root.rglob('*.py')):\n"
             "    print(p.relative_to(root).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest())\n")
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=env,
                         check=True).stdout
    root = installed_device / "edgeq_device"
    host = "".join(f"{p.relative_to(root).as_posix()} {hashlib.sha256(p.read_bytes()).hexdigest()}\n"
                   for p in sorted(root.rglob("*.py")))
    assert out == host and "__init__.py" in out and "model/flatbuffer.py" in out  # the rooms are in the wheel
    assert (venv / "bin" / "edgeq-device").is_file()  # pip wrote the console script from entry_points.txt


def test_a_changed_installed_file_is_refused(installed_device, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(installed_device, site)
    bench = site / "edgeq_device" / "measure" / "bench.py"
    bench.write_bytes(bench.read_bytes() + b"\nimport os; os.system('true')\n")
    cache = tmp_path / "cache"
    with pytest.raises(DeployError) as exc:
        build_device_wheel(cache, distribution=_dist(site))
    assert str(bench) in str(exc.value) and "RECORD" in str(exc.value)
    assert not list(cache.rglob("*.whl"))  # nothing to deploy was written


def test_a_changed_wheel_entry_is_refused(installed_device, tmp_path):
    wheel = build_device_wheel(tmp_path, distribution=_dist(installed_device))
    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data + b"\n# changed\n" if item.filename == "edgeq_device/cli/commands.py" else data)
    with pytest.raises(DeployError, match="RECORD"):
        verify_wheel(bad)


def test_the_board_asks_the_index_only_for_the_wheels_requirements(installed_device, tmp_path):
    """The agent's requirement list: the extra's markers resolved, never edgeq-device itself."""
    from packaging.requirements import Requirement

    wheel = build_device_wheel(tmp_path, distribution=_dist(installed_device))
    for extra, wanted in (("litert", {"ai-edge-litert"}), ("tflite-runtime", {"tflite-runtime"})):
        reqs = [Requirement(r) for r in agent.wheel_requirements(str(wheel), extra)]
        active = {r.name for r in reqs if r.marker is None or r.marker.evaluate()}
        assert active == {"numpy", "pillow", "flatbuffers", "click"} | wanted
        assert "edgeq-device" not in {r.name for r in reqs}
    numpy_pins = [str(r.specifier) for r in (Requirement(x) for x in agent.wheel_requirements(
        str(wheel), "tflite-runtime")) if r.name == "numpy" and (r.marker is None or r.marker.evaluate())]
    assert sorted(numpy_pins) == ["<2", ">=1.23"]
