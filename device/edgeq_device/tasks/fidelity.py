"""Fidelity of a ``.tflite`` to reference outputs (the float model's): SQNR, cosine, max error, arg-max agreement.

:func:`output_fidelity` scores one output from raw arrays, so the host reuses it on
its own outputs; :func:`evaluate_fidelity` runs the model on inputs
(``.npy``/``.npz``/image folder) through the pooled task loop and scores every
output against a reference ``.npz``. Quantized outputs are dequantized first.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..measure.sysinfo import BoardInfo, board_info
from ..model.flatbuffer import ModelSource, load_model_bytes, read_flat_model
from ..model.metadata import read_metadata
from ..model.preprocess import Preprocess
from ..model.preprocess_choice import PreprocessChoice, as_choice
from ..results.report_json import JsonResult
from ..run.runtime import Runtime, resolve_runtime
from .eval_options import EvalKeywords, EvalOptions
from .task_inputs import Samples, load_reference, load_samples, sample_indices
from .task_loop import output_keys, progress_callback, run_samples

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["FidelityResult", "OutputFidelity", "evaluate_fidelity", "format_fidelity", "output_fidelity"]


@dataclass(frozen=True)
class OutputFidelity:
    """How close one output came to its reference, over every element of every sample.

    ``sqnr_db`` is ``10·log10(Σ ref² / Σ (ref − out)²)``: ``inf`` where they are identical.
    ``cosine`` is one cosine similarity over all values (the two arrays flattened), not a
    mean of per-sample cosines: 1 where both are all zeros, 0 where only one is. The host's
    tables (``edgeq.measure.fidelity``) take their figures from here. ``argmax_agreement``
    is the share of positions whose arg-max over the last axis agree, for outputs whose
    last axis holds more than one value (None otherwise).
    """

    name: str
    shape: tuple[int, ...]
    sqnr_db: float
    cosine: float
    max_abs_error: float
    argmax_agreement: float | None


def output_fidelity(name: str, reference: np.ndarray, output: np.ndarray) -> OutputFidelity:
    """Score ``output`` against ``reference`` (both ``[samples, ...]``, same shape)."""
    ref = np.asarray(reference, np.float64)
    out = np.asarray(output, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"output {name!r}: reference shape {ref.shape} != output shape {out.shape}")
    signal = float(np.sum(ref * ref))
    noise = float(np.sum((ref - out) ** 2))
    if noise == 0.0:
        sqnr = math.inf
    elif signal == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(signal / noise)
    nr, no = float(np.linalg.norm(ref)), float(np.linalg.norm(out))
    if nr == 0.0 or no == 0.0:
        cosine = 1.0 if nr == no else 0.0
    else:
        cosine = float(np.dot(ref.ravel(), out.ravel()) / (nr * no))
    max_err = float(np.max(np.abs(ref - out))) if ref.size else 0.0
    agree = None
    if ref.ndim >= 2 and ref.shape[-1] > 1:
        agree = float(np.mean(ref.argmax(axis=-1) == out.argmax(axis=-1)))
    return OutputFidelity(name, tuple(int(d) for d in ref.shape[1:]), sqnr, cosine, max_err, agree)


@dataclass(frozen=True)
class FidelityResult(JsonResult):
    """What ``edgeq-device eval --inputs X --reference Y`` measured, one :class:`OutputFidelity` per output."""

    KIND = "fidelity"

    model: str | None
    model_sha256: str
    mode: str | None
    inputs: str
    reference: str
    samples: int
    outputs: tuple[OutputFidelity, ...]
    seconds: float
    workers: int
    runtime: str
    runtime_version: str
    delegate: str | None
    board: BoardInfo
    started: str
    edgeq_device_version: str
    limit: int | None = None
    seed: int = 0
    #: one line: the preprocessing used and where each part came from (see :mod:`edgeq_device.model.preprocess_choice`)
    preprocessing: str = ""
    #: where each part came from: ``size``, ``color``, ``normalization`` -> flag, edgeq metadata, TFLite metadata, input, ...
    preprocess_sources: dict[str, str] | None = None

    def __str__(self) -> str:
        """The text ``edgeq-device eval`` prints (:func:`format_fidelity`)."""
        return format_fidelity(self)


def format_fidelity(r: FidelityResult) -> str:
    """One line per output: SQNR, cosine, max abs error, arg-max agreement."""
    lines = [f"model      {r.model or '<bytes>'}" + (f" ({r.mode})" if r.mode else ""),
             f"inputs     {r.inputs}: {r.samples} samples" + (f" (sample of {r.limit}, seed {r.seed})"
                                                              if r.limit else ""),
             f"reference  {r.reference}",
             f"runtime    {r.runtime} {r.runtime_version}" + (f", {r.delegate}" if r.delegate else "")
             + f", {r.workers} workers"]
    if r.preprocessing:
        lines.append(f"preprocessing  {r.preprocessing}")
    width = max([6] + [len(o.name) for o in r.outputs])
    lines.append(f"  {'output':<{width}}  {'SQNR dB':>8}  {'cosine':>8}  {'max err':>10}  {'arg-max':>7}")
    for o in r.outputs:
        agree = "-" if o.argmax_agreement is None else f"{o.argmax_agreement:.4f}"
        lines.append(f"  {o.name:<{width}}  {o.sqnr_db:>8.2f}  {o.cosine:>8.5f}  {o.max_abs_error:>10.4g}  "
                     f"{agree:>7}")
    return "\n".join(lines)


def evaluate_fidelity(
    model: ModelSource,
    inputs: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    *,
    preprocess: Preprocess | PreprocessChoice | None = None,
    options: EvalOptions | None = None,
    **keywords: Unpack[EvalKeywords],
) -> FidelityResult:
    """Run ``inputs`` through the model and score every output against ``reference``.

    Args:
        inputs: a ``.npy`` (one-input model), an ``.npz`` keyed by input name or index, or an
            image folder (preprocessed as ``preprocess`` says; default: the model's own).
        reference: an ``.npz`` of expected outputs ``[samples, ...]`` keyed by output name
            (signature names where the model has a signature, else tensor names) or index.
        options, keywords: the evaluation keywords (``limit``, ``seed``, ``workers``, ``runtime``,
            ``threads``, ``xnnpack``, ``delegate``, ``delegate_options``, ``progress``), as keywords or one
            :class:`~edgeq_device.tasks.eval_options.EvalOptions` (see :mod:`edgeq_device.tasks.eval_options`).

    Raises:
        DataError: unreadable files, keys that match no input/output, shapes or sample counts
            that differ.
    """
    opts = EvalOptions.of(options, **keywords)
    limit, seed = opts.limit, opts.seed
    progress, runtime, delegate = opts.progress, opts.runtime, opts.delegate
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_bytes = load_model_bytes(model)
    flat = read_flat_model(model_bytes)
    meta = read_metadata(model_bytes)
    choice = as_choice(flat, preprocess, warn=False)
    samples: Samples = load_samples(inputs, flat, choice.preprocess)
    images = samples.files is not None
    refs = load_reference(reference, flat, samples.n)
    idx = sample_indices(samples.n, limit, seed)
    names = output_keys(flat)
    got = [np.zeros(r[idx].shape, np.float64) for r in refs]

    def reduce(j: int, outs: list[np.ndarray]) -> None:
        for k, o in enumerate(outs):
            got[k][j] = o.reshape(got[k].shape[1:])

    rt = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
    t0 = time.perf_counter()
    with progress_callback(progress, len(idx), "fidelity") as callback:
        n_workers = run_samples(model_bytes, len(idx), lambda j: samples.load(int(idx[j])), reduce,
                                replace(opts, runtime=rt), progress=callback)
    seconds = time.perf_counter() - t0
    scores = tuple(output_fidelity(n, r[idx], g) for n, r, g in zip(names, refs, got))
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    return FidelityResult(
        model=path, model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        mode=meta.mode if meta is not None else None, inputs=samples.source, reference=str(reference),
        samples=len(idx), outputs=scores, seconds=seconds, workers=n_workers, runtime=rt.name,
        runtime_version=rt.version, delegate=delegate, board=board_info(), started=started,
        edgeq_device_version=__version__, limit=limit, seed=seed,
        preprocessing=choice.summary if images else "none (arrays fed as they are)",
        preprocess_sources=dict(choice.sources) if images else None)
