"""The one evaluation loop of edgeq: samples through a pool of interpreters, outputs back in order.

:func:`predict` streams a folder's images through the model's own
preprocessing and returns the raw output vectors (dequantized) with the
labels; :func:`predict_arrays` does the same for preprocessed arrays. The host
reuses them for agreement and SQNR, and :func:`edgeq_device.tasks.evaluation.evaluate`
for accuracy.

Images are spread over interpreters in worker processes (see
:mod:`edgeq_device.run.pool_worker`): decoding and preprocessing hold the GIL, so
threads would serialize on them for a small model. Arrays, and any run with a
delegate (which holds its device), go to a pool of interpreters in threads of
this process (``invoke`` releases the GIL). One worker is a plain loop on one
interpreter. Each image is read when a worker takes it, so memory stays flat.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from ..errors import DataError, InvalidArgumentError
from ..model.flatbuffer import FlatModel, ModelSource, load_model_bytes
from ..model.preprocess import Preprocess
from .images import FolderListing, list_image_folder
from .pool_worker import ImageJob, read_image, run_image_processes
from .runtime import ModelRunner, Runtime, resolve_runtime

__all__ = ["ProgressCallback", "interpreter_threads", "make_runners", "output_size", "predict", "predict_arrays",
           "progress_callback", "resolve_workers", "run_in_threads"]

ProgressCallback = Callable[[int, int], None]


@contextlib.contextmanager
def progress_callback(progress: bool | ProgressCallback, total: int, label: str) -> Iterator[ProgressCallback | None]:
    """The ``progress(done, total)`` to hand the loop: the caller's, a bar on stderr for True, else None.

    ``EDGEQ_PROGRESS=0`` silences the bar.
    """
    if callable(progress):
        yield progress
        return
    if progress is not True or os.environ.get("EDGEQ_PROGRESS", "1").lower() in ("0", "false", "no"):
        yield None
        return
    import click

    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True, show_eta=True) as bar:
        last = [0]

        def update(done: int, _total: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        yield update


def output_size(flat: FlatModel) -> int:
    """How many values the first output gives per sample (its dimensions after the batch, multiplied)."""
    t = flat.main.tensors[flat.main.outputs[0]]
    dims = [d for d in (t.shape[1:] if len(t.shape) > 1 else t.shape)]
    n = 1
    for d in dims:
        n *= max(int(d), 1)
    return n


def _check_input(runner: ModelRunner, preprocess: Preprocess) -> None:
    if len(runner.input_details) != 1:
        raise DataError(f"image evaluation needs a model with one input; this one has "
                        f"{len(runner.input_details)}", argument="model",
                        fix="evaluate multi-input models with your own loop over ModelRunner")
    want = preprocess.sample_shape()
    d = runner.input_details[0]
    shape = tuple(int(x) for x in d["shape"])
    sig = tuple(int(x) for x in d.get("shape_signature", d["shape"]))
    if want is None:
        return
    model_sample = sig[1:]
    ok = len(model_sample) == len(want) and all(m < 0 or m == w for m, w in zip(model_sample, want))
    if not ok and len(model_sample) == 2 and want[-1] == 1:  # [1, H, W] grayscale models
        ok = all(m < 0 or m == w for m, w in zip(model_sample, want[:2]))
    if not ok:
        raise DataError(f"preprocessing gives samples of shape {want}, the model takes {shape}",
                        argument="size", received=preprocess.size,
                        fix="give --size WxH and --color rgb|l that match the model's input")


def resolve_workers(workers: int | None, n: int, delegate: str | None) -> int:
    if workers is None:
        workers = 1 if delegate else (os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError("must be a positive integer", argument="workers", received=workers,
                                   fix="give e.g. 1, or leave it out to use every core")
    return max(1, min(workers, n))


def predict(
    model: ModelSource,
    listing: FolderListing | str | os.PathLike[str],
    preprocess: Preprocess,
    *,
    workers: int | None = None,
    runtime: Runtime | str | None = None,
    threads: int | None = None,
    xnnpack: bool = True,
    delegate: str | None = None,
    delegate_options: Mapping[str, str] | None = None,
    skip_unreadable: bool = False,
    skipped: list[Path] | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run every image of ``listing`` through the model; the one evaluation loop of edgeq.

    Args:
        model: path or bytes of the ``.tflite``.
        listing: a :class:`FolderListing` (e.g. ``list_image_folder(...).sample(n)``) or a folder.
        preprocess: how each image becomes input (see :func:`model_preprocess`).
        workers: interpreters run in parallel: this process and ``workers - 1`` worker
            processes (default: ``os.cpu_count()``; 1 with a delegate, which usually owns
            one device; with a delegate and more workers, threads of this process).
        runtime, xnnpack, delegate, delegate_options: as for :class:`ModelRunner`.
        threads: threads of each interpreter (default: 1 when ``workers > 1``, else the
            runtime's default).
        skip_unreadable: skip files Pillow cannot read (listed in ``skipped``) instead of failing.
        skipped: a list that receives the paths skipped.
        progress: called as ``progress(done, total)`` from the calling thread.

    Returns:
        ``(outputs, labels)``: float32 ``[N, classes]`` dequantized output vectors of the
        first output, in listing order (skipped files left out), and int ``[N]`` labels
        (None for an unlabeled folder).

    Raises:
        DataError: an image cannot be read (unless ``skip_unreadable``), or none could.
    """
    if not isinstance(listing, FolderListing):
        listing = list_image_folder(Path(os.fspath(listing)))
    paths = listing.paths

    n_workers = resolve_workers(workers, len(paths), delegate)
    in_processes = n_workers > 1 and not delegate
    runners = make_runners(model, len(paths), 1 if in_processes else n_workers, runtime,
                            interpreter_threads(threads, n_workers), xnnpack, delegate, delegate_options)
    _check_input(runners[0], preprocess)
    if in_processes:
        r = runners[0]
        job = ImageJob(r.model_bytes, r.flat, r.runtime.name, r.threads, xnnpack, tuple(str(p) for p in paths),
                       preprocess, skip_unreadable, output_size(r.flat), _chunk(len(paths), n_workers),
                       n_workers)
        outputs, ok = run_image_processes(r, job, n_workers, progress)
    else:
        outputs, ok = _run_pool(runners, len(paths),
                                lambda i: read_image(paths[i], preprocess, skip_unreadable), progress)
    bad = [paths[i] for i in np.flatnonzero(~ok)]
    if skipped is not None:
        skipped.extend(bad)
    if bad and len(bad) == len(paths):
        raise DataError(f"none of the {len(paths)} image files could be read", argument="data",
                        received=str(listing.root), fix="check that the files are images Pillow can open")
    labels = None if listing.labels is None else np.asarray(listing.labels, np.int64)[ok]
    return outputs[ok], labels


def predict_arrays(
    model: ModelSource,
    x: np.ndarray,
    *,
    workers: int | None = None,
    runtime: Runtime | str | None = None,
    threads: int | None = None,
    xnnpack: bool = True,
    delegate: str | None = None,
    delegate_options: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Run already-preprocessed float samples ``x`` (``[N, ...]``, no batch per sample) through the model.

    Interpreters in threads of this process (no decoding here: ``invoke`` releases the GIL
    for most of each sample); returns float32 ``[N, outputs]`` dequantized vectors of the
    first output, in order.
    """
    x = np.asarray(x, np.float32)
    if x.ndim < 1 or len(x) == 0:
        raise DataError("no samples", argument="x", received=getattr(x, "shape", None),
                        fix="give an array shaped [N, ...] with N >= 1")
    n_workers = resolve_workers(workers, len(x), delegate)
    runners = make_runners(model, len(x), n_workers, runtime, interpreter_threads(threads, n_workers), xnnpack, delegate,
                            delegate_options)
    outputs, _ = _run_pool(runners, len(x), lambda i: x[i], progress)
    return outputs


def make_runners(model: ModelSource, n: int, workers: int | None, runtime: Runtime | str | None,
                 threads: int | None, xnnpack: bool, delegate: str | None,
                 delegate_options: Mapping[str, str] | None) -> list[ModelRunner]:
    """One interpreter per worker (see :func:`resolve_workers`), each with ``threads`` threads."""
    model_bytes = load_model_bytes(model)
    rt = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
    workers = resolve_workers(workers, n, delegate)
    return [ModelRunner(model_bytes, runtime=rt, threads=threads, xnnpack=xnnpack,
                        delegate=delegate, delegate_options=delegate_options)
            for _ in range(workers)]


def interpreter_threads(threads: int | None, workers: int) -> int | None:
    """Threads of each interpreter: as asked, else 1 when several interpreters share the cores."""
    return threads if threads is not None else (1 if workers > 1 else None)


def _chunk(n: int, workers: int) -> int:
    """Images a worker takes at a time: few enough that the last ones spread evenly."""
    return max(1, min(32, n // (workers * 8)))


def run_in_threads(runners: list[ModelRunner], n: int, step: Callable[[ModelRunner, int], None],
                   progress: ProgressCallback | None, name: str = "edgeq-eval") -> None:
    """Run samples ``0..n-1`` over the runners, one thread each: ``step(runner, i)`` runs sample ``i``.

    Each thread takes the next sample when it comes free (``invoke`` releases the GIL). An
    exception in any step stops every thread and is raised here; ``progress(done, n)`` is
    called from this thread.
    """
    workers = len(runners)
    done = [0] * workers
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()
    order: Iterator[int] = iter(range(n))

    def work(w: int) -> None:
        runner = runners[w]
        try:
            while not stop.is_set():
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                step(runner, i)
                done[w] += 1
        except BaseException as exc:  # handed to the calling thread
            errors.append(exc)
            stop.set()

    pool = [threading.Thread(target=work, args=(w,), name=f"{name}-{w}", daemon=True) for w in range(workers)]
    for t in pool:
        t.start()
    try:
        while True:
            alive = [t for t in pool if t.is_alive()]
            if not alive:
                break
            alive[0].join(timeout=0.05)
            if progress is not None:
                progress(sum(done), n)
    except BaseException:
        stop.set()
        for t in pool:
            t.join()
        raise
    if progress is not None:
        progress(sum(done), n)
    if errors:
        raise errors[0]


def _run_pool(runners: list[ModelRunner], n: int, load: Callable[[int], np.ndarray | None],
              progress: ProgressCallback | None) -> tuple[np.ndarray, np.ndarray]:
    """Spread samples ``load(0..n-1)`` over the runners, one thread each; ``None`` marks a skip.

    Returns the first output's vectors ``[n, width]`` and a mask of the samples that ran.
    """
    width = output_size(runners[0].flat)
    outputs = np.zeros((n, width), np.float32)
    ok = np.ones(n, bool)

    def step(runner: ModelRunner, i: int) -> None:
        x = load(i)
        if x is None:
            ok[i] = False
            return
        runner.set_inputs(x[None])
        runner.invoke()
        outputs[i] = runner.get_outputs()[0].reshape(-1)[:width]

    run_in_threads(runners, n, step, progress)
    return outputs, ok
