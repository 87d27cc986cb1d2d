"""Every output of every sample: the pooled loop the task evaluations (fidelity, detection, segmentation) run.

:func:`~edgeq_device.inference_pool.predict` keeps the first output's raw vector
of each sample; a detector answers with four outputs and a segmenter's score
map is ``H·W·C`` floats per image, which held for a whole data set would not
fit a board's memory. :func:`run_samples` spreads the samples over a pool of
interpreters (one per thread, as the image pool does with arrays and
delegates: ``invoke`` releases the GIL), hands every sample's outputs (all of
them, dequantized, in the model's order) to ``reduce`` in the worker that ran
it, so each task keeps only what it scores (a class map, a few boxes).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from .flatbuffer import FlatModel
from .inference_pool import ProgressCallback, resolve_workers
from .runtime import ModelRunner, Runtime, resolve_runtime

__all__ = ["input_keys", "output_keys", "progress_callback", "run_samples"]

Loader = Callable[[int], Sequence[np.ndarray]]
Reducer = Callable[[int, list[np.ndarray]], None]


def output_keys(flat: FlatModel) -> list[str]:
    """The outputs' names in the order :class:`ModelRunner` gives them: signature names, else tensor names."""
    names = flat.signature_names("outputs")
    return [names.get(i, flat.main.tensors[i].name) for i in flat.io_order("outputs")]


def input_keys(flat: FlatModel) -> list[str]:
    """The inputs' names in the model's order: signature names, else tensor names."""
    names = flat.signature_names("inputs")
    return [names.get(i, flat.main.tensors[i].name) for i in flat.main.inputs]


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


def run_samples(
    model_bytes: bytes,
    n: int,
    load: Loader,
    reduce: Reducer,
    *,
    workers: int | None = None,
    runtime: Runtime | str | None = None,
    threads: int | None = None,
    xnnpack: bool = True,
    delegate: str | None = None,
    delegate_options: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> int:
    """Run samples ``load(0..n-1)`` (one array per model input, batch 1 included) and ``reduce`` their outputs.

    ``reduce(i, outputs)`` runs in the worker thread that ran sample ``i``: it must only
    write to slot ``i`` of what it fills. An exception in ``load``, the model or
    ``reduce`` stops every worker and is raised here. Returns the number of workers used.
    """
    rt = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
    n_workers = resolve_workers(workers, n, delegate)
    per_threads = threads if threads is not None else (1 if n_workers > 1 else None)
    runners = [ModelRunner(model_bytes, runtime=rt, threads=per_threads, xnnpack=xnnpack, delegate=delegate,
                           delegate_options=delegate_options, probe=w == 0) for w in range(n_workers)]
    done = [0] * n_workers
    errors: list[BaseException] = []
    stop = threading.Event()
    lock = threading.Lock()
    order = iter(range(n))

    def work(w: int) -> None:
        runner = runners[w]
        try:
            while not stop.is_set():
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                runner.set_inputs(list(load(i)))
                runner.invoke()
                reduce(i, runner.get_outputs())
                done[w] += 1
        except BaseException as exc:  # handed to the calling thread
            errors.append(exc)
            stop.set()

    pool = [threading.Thread(target=work, args=(w,), name=f"edgeq-task-{w}", daemon=True)
            for w in range(n_workers)]
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
    return n_workers
