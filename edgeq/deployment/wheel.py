"""The edgeq-device wheel for boards: the very ``edgeq_device`` code this host runs.

:func:`build_device_wheel` picks the way: ``pip wheel`` of the source tree when
``edgeq_device`` is imported from one (an editable install or a checkout), else the
installed distribution packed as below.

A board must run exactly the ``edgeq_device`` code the host runs, and never a
package fetched from an index by its name. When ``edgeq_device`` is imported from
an installed (non-editable) distribution, :func:`wheel_from_distribution` packs
that distribution's files into a wheel with the standard library alone:

- every file the installed ``RECORD`` lists inside the distribution (the package
  and its ``*.dist-info``), without compiled ``__pycache__`` files, the installer's
  own records (``INSTALLER``, ``REQUESTED``, ``direct_url.json``, ``RECORD``) and
  files outside the install folder (console scripts: pip writes them anew from
  ``entry_points.txt`` on the board);
- each file's bytes are hashed as they are read and checked against the sha256
  the installed ``RECORD`` holds for it: a file changed since installation stops
  the build with a :class:`~edgeq.errors.DeployError` instead of reaching a board;
- a new ``WHEEL`` and ``RECORD`` (urlsafe base64 sha256, no padding, and size of
  each entry); entries in sorted order with a fixed date, so the same installed
  files give the same wheel bytes and a board's venv is reused.

:func:`verify_wheel` then reads the written wheel back and checks every entry
against the wheel's ``RECORD`` and against the installed ``RECORD``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Mapping

import edgeq_device
from edgeq_device.results.fileio import atomic_write_bytes

from edgeq.errors import DeployError

__all__ = ["build_device_wheel", "record_hash", "verify_wheel", "wheel_from_distribution"]

# Written by the installer, not part of what was built: left out of the wheel.
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD", "RECORD.jws", "RECORD.p7s", "WHEEL"}
_FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_ARG = "device wheel"


def record_hash(data: bytes) -> str:
    """``sha256=<urlsafe base64, no padding>`` of ``data``, as a RECORD line holds it."""
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")


def _dist_info_dir(dist: Distribution) -> str:
    files = dist.files or []
    dirs = sorted({f.parts[0] for f in files if f.parts and f.parts[0].endswith(".dist-info")})
    if len(dirs) != 1:
        raise DeployError("the installed edgeq-device has no single *.dist-info folder in its RECORD",
                          kind="wheel", argument=_ARG, received=dirs, fix="reinstall edgeq-device with pip")
    return dirs[0]


def _installed_files(dist: Distribution) -> dict[str, tuple[bytes, str | None]]:
    """Path in the wheel -> (bytes as read now, the installed RECORD's hash or None); checked."""
    if dist.files is None:
        raise DeployError("the installed edgeq-device has no RECORD: its files cannot be checked",
                          kind="wheel", argument=_ARG, received=str(dist.locate_file("")),
                          fix="reinstall edgeq-device with pip (pip install --force-reinstall ...)")
    info_dir = _dist_info_dir(dist)
    out: dict[str, tuple[bytes, str | None]] = {}
    for f in dist.files:
        rel = f.as_posix()
        parts = f.parts
        if not parts or rel.startswith("/") or ".." in parts:
            continue  # console scripts and data outside the install folder
        if "__pycache__" in parts or rel.endswith((".pyc", ".pyo")):
            continue
        if parts[0] == info_dir and len(parts) == 2 and parts[1] in _INSTALLER_FILES:
            continue
        if rel.endswith((".so", ".pyd", ".dylib")):
            raise DeployError("the installed edgeq-device holds a compiled extension; it must be pure Python",
                              kind="wheel", argument=_ARG, received=rel, fix="reinstall edgeq-device from its source")
        path = Path(str(dist.locate_file(f)))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DeployError(f"a file of the installed edgeq-device cannot be read: {exc.strerror}",
                              kind="wheel", argument=_ARG, received=str(path),
                              fix="reinstall edgeq-device (pip install --force-reinstall ...)") from exc
        recorded = None
        if f.hash is not None:
            mode, value = f.hash.mode, f.hash.value
            if mode != "sha256":
                digest = base64.urlsafe_b64encode(hashlib.new(mode, data).digest()).rstrip(b"=").decode()
                ok = digest == value
            else:
                ok = record_hash(data) == f"sha256={value}"
            if not ok or (f.size is not None and f.size != len(data)):
                raise DeployError("a file of the installed edgeq-device differs from what was installed "
                                  "(its hash does not match the RECORD); refusing to ship it to a board",
                                  kind="wheel", argument=_ARG, received=str(path),
                                  fix="reinstall edgeq-device (pip install --force-reinstall ...), or deploy "
                                      "from an editable source install")
            recorded = f"{mode}={value}"
        out[rel] = (data, recorded)
    if not any(h for rel, (_, h) in out.items() if not rel.startswith(info_dir + "/")):
        raise DeployError("the installed edgeq-device RECORD has no hashes for its files: nothing to check them by",
                          kind="wheel", argument=_ARG, received=str(dist.locate_file(info_dir)),
                          fix="reinstall edgeq-device with pip")
    if f"{info_dir}/METADATA" not in out:
        raise DeployError("the installed edgeq-device has no METADATA", kind="wheel", argument=_ARG,
                          received=str(dist.locate_file(info_dir)), fix="reinstall edgeq-device with pip")
    return out


def _zip_entry(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _wheel_bytes(files: Mapping[str, bytes], info_dir: str) -> bytes:
    entries = dict(files)
    entries[f"{info_dir}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: edgeq (from the installed distribution)\n"
                                    b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    # The package first, then its dist-info, RECORD last (as wheel builders order them).
    names = sorted(entries, key=lambda n: (n.startswith(info_dir + "/"), n))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for name in names:
        writer.writerow([name, record_hash(entries[name]), len(entries[name])])
    writer.writerow([f"{info_dir}/RECORD", "", ""])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            _zip_entry(zf, name, entries[name])
        _zip_entry(zf, f"{info_dir}/RECORD", record.getvalue().encode("utf-8"))
    return buf.getvalue()


def verify_wheel(wheel: str | os.PathLike[str], installed: Mapping[str, str | None] | None = None) -> int:
    """Check a wheel against its own RECORD and, where given, against an installed RECORD.

    Args:
        wheel: the ``.whl`` file.
        installed: path -> ``sha256=...`` hash (or None) from the installed distribution's RECORD
            (its ``WHEEL`` is not compared: the wheel has its own).

    Returns:
        How many entries were checked.

    Raises:
        DeployError: an entry is missing from RECORD, or its bytes or hash differ.
    """
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        record_names = [n for n in names if n.endswith(".dist-info/RECORD")]
        if len(record_names) != 1:
            raise DeployError("the wheel has no single *.dist-info/RECORD", kind="wheel", argument=_ARG, received=str(wheel),
                              fix="build the wheel again")
        rows = {r[0]: r for r in csv.reader(io.StringIO(zf.read(record_names[0]).decode("utf-8"))) if r}
        for name in names:
            if name == record_names[0]:
                continue
            row = rows.get(name)
            data = zf.read(name)
            if row is None or row[1] != record_hash(data) or row[2] != str(len(data)):
                raise DeployError("a wheel entry does not match the wheel's RECORD", kind="wheel", argument=_ARG,
                                  received=f"{wheel}: {name}", fix="build the wheel again")
            want = None if name.endswith(".dist-info/WHEEL") else (installed or {}).get(name)  # WHEEL is new
            if want is not None and want != row[1]:
                raise DeployError("a wheel entry does not match the installed distribution's RECORD",
                                  kind="wheel", argument=_ARG, received=f"{wheel}: {name}", fix="build the wheel again")
        missing = sorted(set(rows) - set(names))
        if missing:
            raise DeployError("the wheel's RECORD lists entries the wheel lacks", kind="wheel", argument=_ARG,
                              received=missing[:3], fix="build the wheel again")
    return len(names)


def wheel_from_distribution(dist: Distribution, out_dir: str | os.PathLike[str]) -> Path:
    """Pack an installed, non-editable edgeq-device distribution into a checked wheel in ``out_dir``.

    The wheel is ``<name>-<version>-py3-none-any.whl`` under
    ``out_dir/<version>-installed-<hash of its RECORD>/``; the same installed files give
    the same bytes, and a wheel already there with those bytes is reused.

    Raises:
        DeployError: the distribution has no RECORD, a file differs from its recorded
            hash, or the written wheel does not check out.
    """
    info_dir = _dist_info_dir(dist)
    files = _installed_files(dist)
    payload = _wheel_bytes({name: data for name, (data, _) in files.items()}, info_dir)
    stem = info_dir[: -len(".dist-info")]  # <name>-<version> as installed
    folder = Path(out_dir) / f"{dist.version}-installed-{hashlib.sha256(payload).hexdigest()[:16]}"
    path = folder / f"{stem}-py3-none-any.whl"
    if not (path.is_file() and path.read_bytes() == payload):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, payload, overwrite=True, argument=_ARG)
    verify_wheel(path, {name: h for name, (_, h) in files.items()})
    return path


_WHEEL_LOCK = threading.Lock()
_WHEELS: dict[str, Path] = {}


def _device_source() -> Path | None:
    """The source tree the imported ``edgeq_device`` comes from (an editable install or a checkout)."""
    root = Path(edgeq_device.__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    if project.is_file() and (root / "edgeq_device").is_dir():
        try:
            if re.search(r'^name\s*=\s*"edgeq-device"', project.read_text("utf-8"), re.M):
                return root
        except (OSError, UnicodeDecodeError):
            return None
    return None


def _installed_device_distribution() -> Distribution:
    """The installed edgeq-device distribution that holds the imported ``edgeq_device``."""
    here = Path(edgeq_device.__file__).resolve()
    for dist in distributions(name="edgeq-device"):
        for f in dist.files or []:
            if f.name == "__init__.py" and f.parts[:1] == ("edgeq_device",) \
                    and Path(str(dist.locate_file(f))).resolve() == here:
                return dist
    raise DeployError("the imported edgeq_device is neither in a source tree nor in an installed edgeq-device "
                      "distribution, so there is no checked copy of it to send to boards",
                      kind="wheel", argument="device wheel", received=str(here.parent),
                      fix="install edgeq-device with pip (pip install ./device) or run from the source tree")


def _source_key(src: Path) -> str:
    h = hashlib.sha256()
    for f in sorted([src / "pyproject.toml", *(src / "edgeq_device").rglob("*")]):
        if f.is_file() and "__pycache__" not in f.parts:
            h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def build_device_wheel(cache_dir: str | os.PathLike[str] | None = None, *, quiet: bool = True,
                       distribution: Distribution | None = None) -> Path:
    """The edgeq-device wheel to install on boards: the very ``edgeq_device`` code this host runs.

    - ``edgeq_device`` imported from a source tree (an editable install or a checkout):
      ``pip wheel --no-deps`` of that tree (in a copy, so the tree stays clean), built at
      most once per host run and cached under ``~/.cache/edgeq/wheels/<version>-<source hash>/``.
    - ``edgeq_device`` imported from an installed distribution: that distribution's
      files are packed into a wheel, each checked against the sha256 its installed
      ``RECORD`` holds (see :func:`wheel_from_distribution`).

    edgeq-device is never fetched from a package index by its name.

    Args:
        cache_dir: where wheels are kept (default ``$EDGEQ_CACHE`` or ``~/.cache/edgeq``).
        quiet: unused; kept for callers that pass it.
        distribution: pack this installed distribution instead of finding the one
            ``edgeq_device`` is imported from.

    Raises:
        DeployError: pip could not build the wheel from the source tree, or an installed
            file differs from its recorded hash, or there is no checked copy to send.
    """
    cache = Path(cache_dir or os.environ.get("EDGEQ_CACHE", "~/.cache/edgeq")).expanduser() / "wheels"
    src = None if distribution is not None else _device_source()
    if src is None:
        return wheel_from_distribution(distribution or _installed_device_distribution(), cache)
    key = f"{edgeq_device.__version__}-{_source_key(src)}"
    with _WHEEL_LOCK:
        if key in _WHEELS and _WHEELS[key].is_file():
            return _WHEELS[key]
        out = cache / key
        found = sorted(out.glob("edgeq_device-*.whl")) if out.is_dir() else []
        if not found:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=out.parent))
            try:
                copy = tmp / "src"
                shutil.copytree(src, copy, ignore=shutil.ignore_patterns(
                    "build", "dist", "*.egg-info", "__pycache__", "*.pyc"))
                cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                       "-w", str(tmp / "whl"), str(copy)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:  # no setuptools here: let pip isolate the build
                    cmd.remove("--no-build-isolation")
                    res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
                    raise DeployError(f"cannot build the edgeq-device wheel: {tail[0]}", kind="wheel", argument="device wheel",
                                      received=" ".join(cmd[3:5]), fix="check that pip works on this machine")
                whl = sorted((tmp / "whl").glob("edgeq_device-*.whl"))
                if not whl:
                    raise DeployError("pip made no edgeq-device wheel", kind="wheel", argument="device wheel",
                                      received=str(tmp), fix="check the device/ source tree")
                try:
                    os.replace(tmp / "whl", out)
                except OSError:  # another process made it meanwhile
                    pass
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            found = sorted(out.glob("edgeq_device-*.whl"))
        _WHEELS[key] = found[-1]
        return found[-1]
