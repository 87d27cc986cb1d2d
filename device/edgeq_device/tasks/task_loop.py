"""Every output of every sample: the pooled loop the task evaluations (fidelity, detection, segmentation) run.

:func:`~edgeq_device.run.inference_pool.predict` keeps the first output's raw vector
of each sample; a detector answers with four outputs and a segmenter's score
map is ``H·W·C`` floats per image, which held for a whole data set would not
fit a board's memory. :func:`run_samples` spreads the samples over a pool of
interpreters (one per thread, as the image pool does with arrays and
delegates: ``invoke`` releases the GIL), hands every sample's outputs (all of
them, dequantized, in the model's order) to ``reduce`` in the worker that ran
it, so each task keeps only what it scores (a class map, a few boxes).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..model.flatbuffer import FlatModel
from ..run.inference_pool import (
    ProgressCallback,
    interpreter_threads,
    make_runners,
    progress_callback,
    resolve_workers,
    run_in_threads,
)
from ..run.runtime import ModelRunner
from .eval_options import EvalOptions

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


def run_samples(
    model_bytes: bytes,
    n: int,
    load: Loader,
    reduce: Reducer,
    options: EvalOptions,
    *,
    progress: ProgressCallback | None = None,
) -> int:
    """Run samples ``load(0..n-1)`` (one array per model input, batch 1 included) and ``reduce`` their outputs.

    ``reduce(i, outputs)`` runs in the worker thread that ran sample ``i``: it must only
    write to slot ``i`` of what it fills. An exception in ``load``, the model or
    ``reduce`` stops every worker and is raised here. ``options`` says how the interpreters run
    (``workers``, ``runtime``, ``threads``, ``xnnpack``, ``delegate``, ``delegate_options``; its
    ``limit``, ``seed`` and ``progress`` are the caller's). Returns the number of workers used.
    """
    o = options
    n_workers = resolve_workers(o.workers, n, o.delegate)
    runners = make_runners(model_bytes, n, n_workers, o.runtime, interpreter_threads(o.threads, n_workers), o.xnnpack,
                           o.delegate, o.delegate_options)

    def step(runner: ModelRunner, i: int) -> None:
        runner.set_inputs(list(load(i)))
        runner.invoke()
        reduce(i, runner.get_outputs())

    run_in_threads(runners, n, step, progress, name="edgeq-task")
    return n_workers
