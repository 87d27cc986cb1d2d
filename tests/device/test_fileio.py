"""Atomic writes give files the permissions a plain open() would."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from edgeq_device.errors import OutputExistsError
from edgeq_device.results.fileio import atomic_write_bytes, atomic_write_text

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block with the process umask set to ``mask``."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_file_mode_follows_umask(tmp_path: Path, mask: int, expected: int) -> None:
    with umask(mask):
        written = atomic_write_bytes(tmp_path / "sub" / "m.tflite", b"TFL3")
        text = atomic_write_text(tmp_path / "report.md", "# hi\n")
        with open(tmp_path / "plain.txt", "w") as fh:  # what a plain open() gives, for comparison
            fh.write("x")
    assert mode_of(written) == mode_of(text) == mode_of(tmp_path / "plain.txt") == expected
    assert written.read_bytes() == b"TFL3"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["m.tflite"]  # no temporary left behind


def test_overwrite_keeps_the_existing_mode(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("{}")
    target.chmod(0o640)
    with umask(0o077):
        atomic_write_text(target, '{"a": 1}\n', overwrite=True)
    assert mode_of(target) == 0o640
    assert target.read_text() == '{"a": 1}\n'


def test_refusal_leaves_file_and_folder_as_they_were(tmp_path: Path) -> None:
    target = tmp_path / "keep.bin"
    target.write_bytes(b"mine")
    with pytest.raises(OutputExistsError):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]
