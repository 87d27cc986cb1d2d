"""File descriptor 2, swapped in one place: native log lines kept off the user's terminal.

TensorFlow, XLA, absl, the TFLite converter and the TFLite runtimes log from C++ straight
to file descriptor 2: ``WARNING: All log messages before absl::InitializeLog() ...``,
``I0000 ... cpu_feature_guard.cc ...``, the converter's ``fully_quantize: 0, ...``, the
runtime's one-time ``INFO: Created TensorFlow Lite XNNPACK delegate``. Python cannot filter
them, and ``TF_CPP_MIN_LOG_LEVEL`` does not reach them all.

Swapping fd 2 changes it for the whole process, every thread. So this module is the only
code that does it, under one lock and a depth count: the first block to enter points fd 2
at a log file, nested and concurrent blocks (other threads, a runner built inside a
conversion) join that same redirection, and the last to leave puts the original fd 2 back.
No block ever restores a descriptor another block saved, so however threads interleave,
fd 2 is the original again once every block has ended.

Two kinds of block:

- :func:`quiet_native_logs` (edgeq's calls that import or run TensorFlow: ``convert``,
  ``compare``, ``debug``, ``qat``, ``load_model``, the budget search). Python's
  ``sys.stderr`` (progress bars, warnings, errors) keeps writing to the original standard
  error through a duplicate of it. The native lines go to ``log_path`` (appended), or to a
  temporary file deleted when the block ends normally or with an
  :class:`~edgeq_device.errors.EdgeqError`; when any other exception ends it, the file is
  kept and its path added to the exception as a note. With :func:`show_native_logs` (the
  CLI's ``--verbose``) or ``EDGEQ_VERBOSE=1`` nothing is redirected. Before TensorFlow is
  first imported, ``TF_CPP_MIN_LOG_LEVEL`` is set to 2 unless it is set already.
- :func:`filter_native_lines` (the runtime, around building an interpreter): when no
  redirection is active it starts one whose lines are written back to standard error when
  it ends, but for the ones a filter drops (the XNNPACK banner, which would break the CLI's
  one-line errors). Inside a :func:`quiet_native_logs` block it joins that block's log.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import EdgeqError

__all__ = ["filter_native_lines", "native_logs_shown", "quiet_native_logs", "redirect_depth", "show_native_logs"]

_LOCK = threading.RLock()


@dataclass
class _Redirect:
    path: Path
    temporary: bool
    saved_fd: int  # the original fd 2
    old_stderr: Any  # sys.stderr before, when it was replaced
    terminal: IO[str] | None  # what sys.stderr writes to meanwhile
    depth: int = 1
    echo: Callable[[str], bool] | None = None  # write kept lines back to stderr at the end (filter_native_lines)


_active: _Redirect | None = None
_shown = 0
_terminal: tuple[tuple[int, int], IO[str]] | None = None  # (device, inode) of the original fd 2, its stream


def native_logs_shown() -> bool:
    """True when native log lines go to the terminal (``show_native_logs``, ``EDGEQ_VERBOSE=1``)."""
    return _shown > 0 or os.environ.get("EDGEQ_VERBOSE", "").strip().lower() in ("1", "true", "yes")


@contextmanager
def show_native_logs() -> Iterator[None]:
    """A block in which :func:`quiet_native_logs` redirects nothing (the CLI's ``--verbose``)."""
    global _shown
    with _LOCK:
        _shown += 1
    try:
        yield
    finally:
        with _LOCK:
            _shown -= 1


def _fd2_stream(stream: Any) -> bool:
    """Whether ``stream`` writes to file descriptor 2 (the real terminal stderr, not a capture)."""
    try:
        return bool(stream.fileno() == 2)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def redirect_depth() -> int:
    """How many blocks share the redirection of fd 2 now (0: fd 2 is the process's own)."""
    with _LOCK:
        return 0 if _active is None else _active.depth


def _start(log_path: str | os.PathLike[str] | None) -> _Redirect:
    global _terminal
    saved = os.dup(2)  # OSError when there is no fd 2: nothing to redirect
    try:
        if log_path is None:
            log_fd, name = tempfile.mkstemp(prefix="edgeq-tf-", suffix=".log")
            path, temporary = Path(name), True
        else:
            path, temporary = Path(os.fspath(log_path)), False
            path.parent.mkdir(parents=True, exist_ok=True)
            log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except BaseException:
        os.close(saved)
        raise
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    old_stderr, terminal = None, None
    if _fd2_stream(sys.stderr):
        # Python's writes (progress bars, warnings) keep going to the terminal, through a duplicate
        # of the original fd 2. It is never closed (a logging handler made meanwhile may hold it),
        # and reused by later blocks while fd 2 is the same file.
        st = os.fstat(saved)
        key = (st.st_dev, st.st_ino)
        if _terminal is None or _terminal[0] != key or _terminal[1].closed:
            _terminal = key, io.TextIOWrapper(io.FileIO(os.dup(saved), "w"), encoding=sys.stderr.encoding or "utf-8",
                                              errors=sys.stderr.errors or "backslashreplace", line_buffering=True,
                                              write_through=True)
        terminal = _terminal[1]
        old_stderr, sys.stderr = sys.stderr, terminal
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return _Redirect(path, temporary, saved, old_stderr, terminal)


def _stop(state: _Redirect, failure: BaseException | None) -> None:
    if state.terminal is not None:
        state.terminal.flush()
        if sys.stderr is state.terminal:
            sys.stderr = state.old_stderr
    os.dup2(state.saved_fd, 2)
    os.close(state.saved_fd)
    if state.echo is not None:  # only filter_native_lines blocks shared it: their lines go back to stderr
        _echo(state.path, state.echo)
        state.path.unlink(missing_ok=True)
        return
    if not state.temporary:
        return
    try:
        empty = state.path.stat().st_size == 0
    except OSError:
        return
    keep = failure is not None and not isinstance(failure, (EdgeqError, KeyboardInterrupt)) and not empty
    add_note = getattr(failure, "add_note", None)  # Python >= 3.11
    if keep and add_note is not None:
        add_note(f"TensorFlow's native log: {state.path}")
    elif not keep:
        state.path.unlink(missing_ok=True)


@contextmanager
def quiet_native_logs(log_path: str | os.PathLike[str] | None = None) -> Iterator[Path | None]:
    """Send what TensorFlow's C++ code writes to file descriptor 2 to a log file for this block.

    Python's ``sys.stderr`` keeps writing to the original standard error. Usable as a
    decorator too. See the module documentation for where the lines go.

    Args:
        log_path: append the native log lines to this file; default: a temporary file, kept
            (and named in a note on the exception) only when an unexpected exception ends the block.

    Yields:
        The log file's path, or None when nothing is redirected (``native_logs_shown()``).
    """
    with _LOCK:
        if native_logs_shown() and _active is None:
            state = None
        else:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            state = _enter(log_path, echo=None)
    if state is None:
        yield None
        return
    yield from _hold(state)


@contextmanager
def filter_native_lines(drop: Callable[[str], bool]) -> Iterator[None]:
    """Hold native output of this block back and write it to standard error at the end, less the lines ``drop``s.

    Inside a :func:`quiet_native_logs` block (of any thread) the lines go to that block's log
    instead. Nothing is redirected when there is no fd 2.
    """
    with _LOCK:
        state = _enter(None, echo=drop)
    if state is None:
        yield
        return
    yield from _hold(state)


def _enter(log_path: str | os.PathLike[str] | None, echo: Callable[[str], bool] | None) -> _Redirect | None:
    """Join the active redirection, or start one (under ``_LOCK``); None when fd 2 cannot be redirected."""
    global _active
    if _active is not None:
        _active.depth += 1
        if echo is None:
            _active.echo = None  # a quiet block joined: its lines belong in the log, not on the terminal
        return _active
    try:
        _active = _start(log_path)
    except OSError:  # no file descriptor 2 to redirect (closed), or the log cannot be made
        if log_path is not None:
            raise
        return None
    _active.echo = echo
    return _active


def _hold(state: _Redirect) -> Iterator[Any]:
    """Yield the log's path inside the redirection; the last block to leave ends it."""
    global _active
    failure: BaseException | None = None
    try:
        yield state.path
    except BaseException as exc:
        failure = exc
        raise
    finally:
        with _LOCK:
            state.depth -= 1
            if state.depth == 0:
                _active = None
                _stop(state, failure)


def _echo(path: Path, drop: Callable[[str], bool]) -> None:
    """Write the lines logged at ``path`` back to standard error, less those ``drop`` takes."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return
    kept = [line for line in text.splitlines() if line.strip() and not drop(line)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
        sys.stderr.flush()
