"""Atomic file writes that never overwrite a user's file unless asked."""

from __future__ import annotations

import os
import secrets
import stat
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
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    The file gets the permissions a plain ``open(path, "wb")`` would give it: a new file
    ``0o666`` less the process umask (and the folder's default ACL), an overwritten file
    keeps its mode.
    """
    p = check_writable(path, overwrite, argument)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(p)
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


def _create_beside(p: Path) -> tuple[int, str]:
    """Create a new, empty temporary file next to ``p``; return its descriptor and path.

    Unlike ``tempfile.mkstemp`` (always 0600) the file is created with mode 0o666, so the
    kernel applies the umask exactly as for a plain ``open()``: no umask is read or changed
    (``os.umask`` would change it for every thread for a moment). If ``p`` exists, its mode
    is copied, so overwriting (``--force``) keeps the permissions its owner chose.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = str(p.parent / f".{p.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 random names taken
        raise FileExistsError(f"no free temporary name beside {p}")
    try:
        mode = stat.S_IMODE(os.stat(p).st_mode)
    except OSError:  # no file to overwrite (or not ours to read): keep what open() gave
        return fd, tmp
    try:
        os.chmod(tmp, mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def atomic_write_text(path: str | os.PathLike[str], text: str, overwrite: bool = False,
                      argument: str = "path") -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite, argument)
