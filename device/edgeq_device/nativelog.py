"""Keep TensorFlow's native (C++) log lines off the user's terminal.

TensorFlow, XLA, absl and the TFLite converter log from C++ straight to file
descriptor 2: ``WARNING: All log messages before absl::InitializeLog() ...``,
``I0000 ... cpu_feature_guard.cc ...``, ``failed call to cuInit`` on machines
without a GPU, the converter's ``fully_quantize: 0, inference_type: 6, ...``.
Python cannot filter them, and ``TF_CPP_MIN_LOG_LEVEL`` does not reach them all
(lines written before absl initializes its logging ignore it).

So the edgeq calls that import or run TensorFlow (``convert``, ``compare``,
``debug``, ``qat``, ``load_model``, the accuracy budget search) run inside
:func:`quiet_native_logs`: for its duration file descriptor 2 points at a log
file, while Python's ``sys.stderr`` (progress bars, warnings, error messages)
keeps writing to the original standard error through a duplicate of it.

Where the native lines go:

- ``quiet_native_logs(path)``: appended to ``path``.
- ``quiet_native_logs()`` (what edgeq's own calls use): a temporary file, deleted
  when the block ends normally or with an :class:`~edgeq.errors.EdgeqError`
  (whose message says what went wrong). When any other exception ends it, the
  file is kept and its path is added to the exception as a note, shown with the
  traceback.
- Nowhere else: inside :func:`show_native_logs`, or with the environment variable
  ``EDGEQ_VERBOSE=1``, or at the CLI with ``--verbose``, nothing is redirected and
  the lines reach the terminal as TensorFlow writes them.

Before TensorFlow is first imported, ``TF_CPP_MIN_LOG_LEVEL`` is set to 2
(errors only) unless it is set already, so that lines logged outside these
blocks are few.

Nested and concurrent blocks share one redirection: the first to enter starts
it, the last to leave ends it.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["native_logs_shown", "quiet_native_logs", "show_native_logs"]

_LOCK = threading.RLock()


@dataclass
class _Redirect:
    path: Path
    temporary: bool
    saved_fd: int  # the original fd 2
    old_stderr: Any  # sys.stderr before, when it was replaced
    terminal: IO[str] | None  # what sys.stderr writes to meanwhile
    depth: int = 1


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


def _start(log_path: str | os.PathLike[str] | None) -> _Redirect:
    global _terminal
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    if not state.temporary:
        return
    from edgeq.errors import EdgeqError

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
    global _active
    with _LOCK:
        if native_logs_shown() and _active is None:
            state = None
        elif _active is not None:
            _active.depth += 1
            state = _active
        else:
            try:
                state = _active = _start(log_path)
            except OSError:  # no file descriptor 2 to redirect (closed), or the log cannot be made
                if log_path is not None:
                    raise
                state = None
    if state is None:
        yield None
        return
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
