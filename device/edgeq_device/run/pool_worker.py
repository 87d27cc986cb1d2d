"""Image evaluation on every core: the calling process and worker processes share the work.

Decoding and preprocessing an image in Python holds the GIL, so on a model of
about a millisecond, threads serialize on it. Here each worker is a process
with its own interpreter that opens, preprocesses and runs the images it takes;
the calling process is one of the workers, so it starts at once and carries on
alone if no process can start.

- Work is handed out in chunks of consecutive indices through a shared
  counter, so a busy core takes fewer.
- Each worker writes output vectors and a status byte per image into shared
  ``multiprocessing`` arrays (anonymous shared memory: nothing named is left
  behind, whatever way the run ends); results are in listing order by
  construction.
- A worker that hits an unreadable image (without ``skip_unreadable``) or an
  error sends it over its pipe; the caller stops the others and raises it. A
  worker process that dies (e.g. the runtime crashes) becomes an
  :class:`~edgeq_device.errors.InferenceError`. Workers ignore SIGINT: Ctrl-C
  reaches the calling process, which stops them.
- Start method: ``fork`` where the calling process has one Python thread, has
  not loaded TensorFlow and runs one-thread interpreters (the board, the
  ``edgeq-device`` CLI): workers start in milliseconds. Otherwise ``forkserver`` (``spawn`` where it is missing), since
  forking a multi-threaded process can deadlock the child; their workers
  import the main module as ``multiprocessing`` does, so a script calling
  :func:`~edgeq_device.tasks.evaluation.evaluate` needs the usual
  ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataError, InferenceError, InvalidArgumentError
from ..model.flatbuffer import FlatModel
from ..model.preprocess import Preprocess, load_image
from .runtime import ModelRunner

__all__ = ["ImageJob", "read_image", "run_image_processes", "start_method"]

PENDING, DONE, SKIPPED = 0, 1, 2
_FORK_UNSAFE = ("tensorflow", "keras", "torch", "jax")  # their runtimes keep threads and locks
_POLL_S = 0.05


@dataclass(frozen=True)
class ImageJob:
    """What every worker needs: the model, how to run it, and the files."""

    model_bytes: bytes
    flat: FlatModel
    runtime: str
    threads: int | None
    xnnpack: bool
    paths: tuple[str, ...]
    preprocess: Preprocess
    skip_unreadable: bool
    width: int
    chunk: int
    workers: int


def read_image(path: str | Path, preprocess: Preprocess, skip_unreadable: bool) -> np.ndarray | None:
    """One image as model input; None for an unreadable file when skipping them."""
    try:
        return load_image(path, preprocess)
    except DataError as exc:
        if not skip_unreadable:
            raise DataError("cannot read image", argument="data", received=str(path),
                            fix="remove or replace the file (or skip such files with "
                                "--skip-unreadable)") from exc
        return None


def start_method(threads: int | None = 1) -> str:
    """``fork`` for a caller with one Python thread and no TensorFlow, else ``forkserver`` or ``spawn``.

    ``EDGEQ_POOL_START`` (``fork``, ``forkserver``, ``spawn``) chooses it instead. An idle
    native thread pool does not count: NumPy's BLAS starts one at import and guards fork
    itself; the caller's interpreter has none with one thread (``threads`` of each
    interpreter), so more threads than one also rule fork out.
    """
    methods = mp.get_all_start_methods()
    chosen = os.environ.get("EDGEQ_POOL_START", "").strip().lower()
    if chosen:
        if chosen not in methods:
            raise InvalidArgumentError("unknown start method", argument="EDGEQ_POOL_START", received=chosen,
                                       fix=f"use one of: {', '.join(methods)}, or unset it")
        return chosen
    if ("fork" in methods and sys.platform != "darwin" and threading.active_count() == 1
            and threads in (None, 1) and not any(name in sys.modules for name in _FORK_UNSAFE)):
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


class _Shared:
    """The arrays and counter the workers share (created by the caller)."""

    def __init__(self, ctx: Any, n: int, width: int) -> None:
        self.n, self.width = n, width
        self.outputs_raw = ctx.RawArray("f", max(n * width, 1))
        self.status_raw = ctx.RawArray("b", n)
        self.next_raw = ctx.RawValue("q", 0)
        self.lock = ctx.Lock()

    def views(self) -> tuple[np.ndarray, np.ndarray]:
        out = np.frombuffer(self.outputs_raw, np.float32)[: self.n * self.width].reshape(self.n, self.width)
        return out, np.frombuffer(self.status_raw, np.int8)

    def claim(self, chunk: int, workers: int) -> range:
        """The next images to run: ``chunk`` of them, fewer near the end so the workers end together."""
        with self.lock:
            start = int(self.next_raw.value)
            stop = min(start + max(1, min(chunk, (self.n - start) // (2 * workers))), self.n)
            self.next_raw.value = max(stop, start)
        return range(start, stop)

    def close(self) -> None:
        """No further chunks are handed out."""
        with self.lock:
            self.next_raw.value = self.n


def _run_chunk(runner: ModelRunner, job: ImageJob, todo: range, out: np.ndarray, status: np.ndarray) -> None:
    width = job.width
    for i in todo:
        x = read_image(job.paths[i], job.preprocess, job.skip_unreadable)
        if x is None:
            status[i] = SKIPPED
            continue
        runner.set_inputs(x[None])
        runner.invoke()
        out[i] = runner.get_outputs()[0].reshape(-1)[:width]
        status[i] = DONE


def _worker(job: ImageJob, shared: _Shared, conn: Connection) -> None:
    """A worker process: build an interpreter, say ready, run chunks until none are left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        runner = ModelRunner(job.model_bytes, runtime=job.runtime, threads=job.threads, xnnpack=job.xnnpack,
                             probe=False, flat=job.flat)
        conn.send(("ready",))
        out, status = shared.views()
        while True:
            todo = shared.claim(job.chunk, job.workers)
            if not todo:
                break
            _run_chunk(runner, job, todo, out, status)
        conn.send(("finished",))
    except BaseException as exc:  # sent to the caller, which raises it
        shared.close()
        try:
            conn.send(("error", exc))
        except Exception:  # an exception that does not pickle: its text
            conn.send(("error", InferenceError(f"an evaluation worker failed: {type(exc).__name__}: {exc}")))
    finally:
        conn.close()


def run_image_processes(runner: ModelRunner, job: ImageJob, workers: int,
                        progress: Callable[[int, int], None] | None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``job`` on ``workers`` interpreters: ``runner`` here and ``workers - 1`` processes.

    Returns the output vectors ``[n, width]`` and the mask of images that ran.
    """
    method = start_method(job.threads)
    ctx: Any = mp.get_context(method)
    if method == "forkserver":  # the server imports these once; each worker forks from it
        runtime_module = runner.runtime.import_path[0]
        ctx.set_forkserver_preload([__name__] + ([runtime_module] if runtime_module != "tensorflow" else []))
    n = len(job.paths)
    shared = _Shared(ctx, n, job.width)
    out, status = shared.views()
    procs: list[tuple[Any, Connection]] = []
    try:
        for w in range(1, workers):
            reader, writer = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker, args=(job, shared, writer), name=f"edgeq-eval-{w}", daemon=True)
            try:
                p.start()
            except OSError:  # processes cannot start here: the calling process works alone
                reader.close()
                writer.close()
                break
            writer.close()
            procs.append((p, reader))
        _supervise(runner, job, shared, procs, out, status, progress)
    except BaseException:
        shared.close()
        raise
    finally:
        _stop(procs)
    return out.copy(), status == DONE


def _supervise(runner: ModelRunner, job: ImageJob, shared: _Shared, procs: Sequence[tuple[Any, Connection]],
               out: np.ndarray, status: np.ndarray, progress: Callable[[int, int], None] | None) -> None:
    """Work here between checks on the workers; then wait for them to finish."""
    state = {p.pid: "starting" for p, _ in procs}
    n = shared.n

    def check(timeout: float) -> None:
        live = [(p, r) for p, r in procs if state[p.pid] != "finished"]
        readers = [r for p, r in live if not r.closed]
        ready = wait(readers + [p.sentinel for p, _ in live], timeout=timeout) if live else []
        for p, r in live:
            if r in ready:
                try:
                    msg = r.recv()
                except EOFError:
                    r.close()
                    continue
                if msg[0] == "error":
                    raise msg[1]
                state[p.pid] = msg[0]
            elif p.sentinel in ready and (r.closed or not r.poll()):
                p.join()
                raise InferenceError(f"an evaluation worker process stopped unexpectedly "
                                     f"(exit code {p.exitcode}; a negative code is the signal that ended it)",
                                     argument="workers", received=len(procs) + 1,
                                     fix="run with workers=1 (--workers 1) to see the failure in this process")
        if progress is not None:
            progress(int(np.count_nonzero(status)), n)

    while True:
        todo = shared.claim(job.chunk, job.workers)
        if not todo:
            break
        _run_chunk(runner, job, todo, out, status)
        check(0)
    while any(state[p.pid] != "finished" for p, _ in procs):
        check(_POLL_S)
    if progress is not None:
        progress(n, n)


def _stop(procs: Sequence[tuple[Any, Connection]]) -> None:
    for p, _r in procs:
        if p.is_alive():
            p.terminate()
    for p, r in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join()
        r.close()
