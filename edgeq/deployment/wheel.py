"""The edgeq-device wheel for boards, packed from the distribution installed on this host.

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
import zipfile
from importlib.metadata import Distribution
from pathlib import Path
from typing import Mapping

from edgeq_device.fileio import atomic_write_bytes

from edgeq.errors import DeployError

__all__ = ["record_hash", "verify_wheel", "wheel_from_distribution"]

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
                          argument=_ARG, received=dirs, fix="reinstall edgeq-device with pip")
    return dirs[0]


def _installed_files(dist: Distribution) -> dict[str, tuple[bytes, str | None]]:
    """Path in the wheel -> (bytes as read now, the installed RECORD's hash or None); checked."""
    if dist.files is None:
        raise DeployError("the installed edgeq-device has no RECORD: its files cannot be checked",
                          argument=_ARG, received=str(dist.locate_file("")),
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
                              argument=_ARG, received=rel, fix="reinstall edgeq-device from its source")
        path = Path(str(dist.locate_file(f)))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DeployError(f"a file of the installed edgeq-device cannot be read: {exc.strerror}",
                              argument=_ARG, received=str(path),
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
                                  argument=_ARG, received=str(path),
                                  fix="reinstall edgeq-device (pip install --force-reinstall ...), or deploy "
                                      "from an editable source install")
            recorded = f"{mode}={value}"
        out[rel] = (data, recorded)
    if not any(h for rel, (_, h) in out.items() if not rel.startswith(info_dir + "/")):
        raise DeployError("the installed edgeq-device RECORD has no hashes for its files: nothing to check them by",
                          argument=_ARG, received=str(dist.locate_file(info_dir)),
                          fix="reinstall edgeq-device with pip")
    if f"{info_dir}/METADATA" not in out:
        raise DeployError("the installed edgeq-device has no METADATA", argument=_ARG,
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
            raise DeployError("the wheel has no single *.dist-info/RECORD", argument=_ARG, received=str(wheel),
                              fix="build the wheel again")
        rows = {r[0]: r for r in csv.reader(io.StringIO(zf.read(record_names[0]).decode("utf-8"))) if r}
        for name in names:
            if name == record_names[0]:
                continue
            row = rows.get(name)
            data = zf.read(name)
            if row is None or row[1] != record_hash(data) or row[2] != str(len(data)):
                raise DeployError("a wheel entry does not match the wheel's RECORD", argument=_ARG,
                                  received=f"{wheel}: {name}", fix="build the wheel again")
            want = None if name.endswith(".dist-info/WHEEL") else (installed or {}).get(name)  # WHEEL is new
            if want is not None and want != row[1]:
                raise DeployError("a wheel entry does not match the installed distribution's RECORD",
                                  argument=_ARG, received=f"{wheel}: {name}", fix="build the wheel again")
        missing = sorted(set(rows) - set(names))
        if missing:
            raise DeployError("the wheel's RECORD lists entries the wheel lacks", argument=_ARG,
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
