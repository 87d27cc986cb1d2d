"""Atomic file writes that never overwrite a user's file unless asked.

A path that cannot be written (a folder on the way is a file, permission is
denied, the file system is read-only or full) raises :class:`OutputError`
naming the path and the fix, never a bare :class:`OSError`.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from ..errors import OutputError, OutputExistsError

__all__ = ["atomic_write_bytes", "atomic_write_text", "check_output_folder", "check_writable"]


_F = TypeVar("_F", bound=Callable[..., Any])


def _why_unwritable(path: Path) -> tuple[str, str] | None:
    """Why ``path`` cannot be created as a file, with the fix; None when nothing stands in the way."""
    if path.is_dir():
        return "it is a folder", "give a file name (inside it, or elsewhere)"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():
            return f"{folder} is a link to {os.readlink(folder)}, which does not exist", \
                "create what it points to, or choose another path"
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder", "choose another path, or move that file away"
    if not os.access(folder, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        if read_only:
            return f"{folder} is on a read-only file system", "choose a path on a writable disk"
        return f"no permission to write in {folder}", "choose a folder you can write to, or change its permissions"
    return None


def _output_error(exc: OSError, path: Path, argument: str) -> OutputError:
    """The :class:`OutputError` for an OSError met while writing ``path``."""
    try:
        known = _why_unwritable(path)
    except OSError:  # the path itself is unusable (e.g. a name too long): say what the write said
        known = None
    if known is not None:
        reason, fix = known
    elif exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        reason, fix = "the disk is full", "free some space or choose a path on another disk"
    elif exc.errno == errno.ENAMETOOLONG:
        reason, fix = "the name is too long", "choose a shorter name"
    else:
        reason, fix = exc.strerror or str(exc), "choose another path"
    return OutputError(f"cannot write the file: {reason}", argument=argument, received=str(path), fix=fix)


def _os_errors_as_output_errors(fn: _F) -> _F:
    """Turn an OSError raised while writing the path in ``fn``'s first argument into an OutputError."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OutputError:
            raise
        except OSError as exc:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            where = next(iter(bound.arguments.values()))  # the path (or folder) written
            raise _output_error(exc, Path(where), str(bound.arguments["argument"])) from exc

    return cast(_F, wrapper)


@_os_errors_as_output_errors
def check_writable(path: str | os.PathLike[str], overwrite: bool, argument: str = "path") -> Path:
    """Check, before any work, that ``path`` can be written.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: a folder on the way is a file, or the folder is not writable
            (permission, read-only file system).
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError("output file exists", argument=argument, received=str(p),
                                fix="choose another path or pass overwrite=True (--force)")
    problem = _why_unwritable(p)
    if problem is not None:
        raise OutputError(f"cannot write the file: {problem[0]}", argument=argument, received=str(p), fix=problem[1])
    return p


@_os_errors_as_output_errors
def check_output_folder(folder: str | os.PathLike[str], argument: str = "path") -> Path:
    """Check, before any work, that files can be written in ``folder`` (created if missing).

    Raises:
        OutputError: ``folder`` or a folder on its way is a file, or it is not writable.
    """
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise OutputError("cannot write in it: it is a file, not a folder", argument=argument, received=str(p),
                          fix="give a folder, or a new path")
    problem = _why_unwritable(p / ".edgeq-probe")
    if problem is not None:
        raise OutputError(f"cannot write in it: {problem[0]}", argument=argument, received=str(p), fix=problem[1])
    return p


@_os_errors_as_output_errors
def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, overwrite: bool = False,
                       argument: str = "path") -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    The file gets the permissions a plain ``open(path, "wb")`` would give it: a new file
    ``0o666`` less the process umask (and the folder's default ACL), an overwritten file
    keeps its mode.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: ``path`` cannot be written (see :func:`check_writable`; also a full disk).
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
