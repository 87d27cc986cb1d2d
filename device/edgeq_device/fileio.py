"""Atomic file writes that never overwrite a user's file unless asked."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputExistsError

__all__ = ["atomic_write_bytes", "atomic_write_text", "check_writable"]


def check_writable(path: str | os.PathLike[str], overwrite: bool, argument: str = "path") -> Path:
    """Raise OutputExistsError if ``path`` exists and ``overwrite`` is False."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError("output file exists", argument=argument, received=str(p),
                                fix="choose another path or pass overwrite=True (--force)")
    return p


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, overwrite: bool = False,
                       argument: str = "path") -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    p = check_writable(path, overwrite, argument)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if not overwrite:
            # link() fails if the target appeared meanwhile: never clobber a file we were not told to.
            try:
                os.link(tmp, p)
            except FileExistsError:
                raise OutputExistsError("output file exists", argument=argument, received=str(p),
                                        fix="choose another path or pass overwrite=True (--force)") from None
            except OSError:
                os.replace(tmp, p)
            else:
                os.unlink(tmp)
        else:
            os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str, overwrite: bool = False,
                      argument: str = "path") -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite, argument)
