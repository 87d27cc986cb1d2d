"""One cell of a sweep, run where a worker is: build or load the model, convert it in one mode, measure
the ``.tflite`` on this host, return the figures and the file's bytes.

:func:`run_cell` takes and returns plain data (it crosses process and machine boundaries): the
driver writes files and the results store, never the worker. It is built from the public steps:
:func:`edgeq.convert` (and :func:`edgeq.qat` / :func:`edgeq.cluster` / :func:`edgeq.prune` for the
modes that train), ``edgeq_device``'s evaluation loop (:func:`edgeq_device.tasks.evaluation.predict_arrays`)
and its benchmark (:func:`edgeq_device.measure.bench.benchmark`).

A worker first checks that its edgeq, TensorFlow and LiteRT are the driver's
(:func:`worker_versions`); a mismatch comes back as ``status: "version-mismatch"`` and the driver
stops the sweep with one :class:`~edgeq.errors.SweepError`.
"""

from __future__ import annotations

import importlib
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from importlib import metadata
from typing import Any

__all__ = ["run_cell", "worker_versions"]


def worker_versions() -> dict[str, str]:
    """The versions a cell's figures depend on: edgeq, TensorFlow, LiteRT (and Python, not compared)."""
    from edgeq._version import __version__

    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "missing"

    return {"edgeq": __version__, "tensorflow": dist("tensorflow"), "ai-edge-litert": dist("ai-edge-litert")}


def _build(spec: Mapping[str, Any]) -> Any:
    """The Keras model of a spec: its file, or its builder called with its args."""
    if spec.get("file"):
        return spec["file"]
    for folder in reversed(spec.get("pythonpath") or []):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module, func = str(spec["builder"]).split(":")
    return getattr(importlib.import_module(module), func)(**dict(spec.get("args") or {}))


def _convert(model: Any, mode: str, options: Mapping[str, Any], calibration: Any, train: Any,
             s: Mapping[str, Any]) -> Any:
    from edgeq.quantize.converter import convert
    from edgeq.quantize.qat.sparsity import cluster, prune
    from edgeq.quantize.qat.train import qat

    if mode in ("qat", "clustered", "pruned"):
        common: dict[str, Any] = {"epochs": s["train_epochs"], "seed": s["seed"], "progress": False}
        if mode == "qat":
            trained: Any = qat(model, train, **common)
        elif mode == "clustered":
            trained = cluster(model, train, clusters=s["clusters"], **common)
        else:
            trained = prune(model, train, sparsity=s["sparsity"], **common)
        return trained.convert(io=options.get("io", "float"), calibration=calibration, samples=s["samples"],
                               seed=s["seed"], progress=False)
    kwargs: dict[str, Any] = {}
    if mode in ("int8", "int16x8", "int4"):
        kwargs.update(calibration=calibration, samples=s["samples"])
    if mode == "int8":
        kwargs.update(io=options.get("io", "float"), ranges=options.get("ranges", "minmax"))
        if options.get("a16"):
            kwargs["a16_layers"] = int(options["a16"])
    return convert(model, mode, seed=s["seed"], progress=False, **kwargs)


def _measure(loaded: Any, result: Any, calibration: Any, evaluation: Any, s: Mapping[str, Any]) -> dict[str, Any]:
    import numpy as np
    from edgeq_device.measure.bench import benchmark, median_interval
    from edgeq_device.model.analysis import analyze_flat_model
    from edgeq_device.tasks.evaluation import model_preprocess, predict_arrays

    from edgeq.inputs.data import as_source
    from edgeq.measure.evaluation import keras_outputs, load_eval_arrays, match_labels, top_k_accuracy
    from edgeq.measure.fidelity import argmax_agreement, fidelity

    model_bytes = result.model_bytes
    pre = model_preprocess(model_bytes)  # what the .tflite carries: what a board would feed it
    eval_src = as_source(evaluation, pre, argument="evaluation")
    x, y = load_eval_arrays(eval_src, s["eval_samples"], s["seed"])
    keras_out = keras_outputs(loaded, x)
    calib_src = as_source(calibration, pre) if calibration is not None else eval_src
    _, y, _ = match_labels(None, calib_src, eval_src, y, keras_out.shape[1])
    out = predict_arrays(model_bytes, x, workers=1)
    bench = benchmark(model_bytes, runs=s["runs"], min_secs=s["min_secs"], max_secs=s["max_secs"],
                      threads=s["threads"], warmup=3, keep_samples=True, seed=s["seed"])
    lo, hi = median_interval(bench.samples_us or [bench.latency.p50_us], seed=s["seed"])
    ana = analyze_flat_model(model_bytes)
    fid = fidelity(keras_out, out)
    keras_top1 = top_k_accuracy(keras_out, y, 1)
    top1 = top_k_accuracy(out, y, 1)
    sqnr = fid.get("sqnr_db")
    return {
        "size_bytes": result.size_bytes, "compressed_size_bytes": result.compressed_size,
        "conversion_seconds": result.conversion_seconds, "io": result.io.value,
        "eval_images": len(x), "labeled": y is not None,
        "top1": top1, "top5": top_k_accuracy(out, y, 5), "keras_top1": keras_top1,
        "top1_drop_points": None if top1 is None or keras_top1 is None else (keras_top1 - top1) * 100,
        "agreement": argmax_agreement(keras_out, out),
        "sqnr_db": float(sqnr) if sqnr is not None and np.isfinite(sqnr) else None,
        "max_abs_error": fid.get("max_abs_error"), "cosine": fid.get("cosine"),
        "latency_p50_us": bench.latency.p50_us, "latency_p90_us": bench.latency.p90_us,
        "latency_mean_us": bench.latency.mean_us, "latency_p50_lo_us": lo, "latency_p50_hi_us": hi,
        "latency_runs": bench.latency.count, "threads": s["threads"], "runtime": bench.runtime,
        "runtime_version": bench.runtime_version,
        "macs": ana.total_macs, "params": ana.total_params, "float_ops": list(result.float_ops),
    }


def run_cell(job: Mapping[str, Any], calibration: Any = None, evaluation: Any = None,
             train: Any = None) -> dict[str, Any]:
    """Run one cell; never raises for the cell's own failure.

    Args:
        job: ``key``, ``name``, ``model`` (a :class:`~edgeq.sweeps.grid.ModelSpec` dict), ``mode``,
            ``options``, ``settings`` and ``versions`` (the driver's :func:`worker_versions`).
        calibration, evaluation, train: the data (paths or arrays), as the driver was given them.

    Returns:
        ``{"key", "name", "status": "ok" | "failed" | "version-mismatch", "error", "figures",
        "model_bytes", "host", "seconds"}``.
    """
    started = time.perf_counter()
    base: dict[str, Any] = {"key": job["key"], "name": job["name"], "host": socket.gethostname(),
                            "pid": os.getpid(), "node": platform.node(), "figures": None, "model_bytes": None,
                            "error": None}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("EDGEQ_PROGRESS", "0")
    try:
        mine = worker_versions()
    except Exception as exc:  # an uninstalled or broken edgeq is this worker's failure to report
        return {**base, "status": "version-mismatch", "error": f"edgeq cannot be imported here: {exc}"}
    want = dict(job.get("versions") or {})
    diff = {k: (want[k], mine.get(k)) for k in want if mine.get(k) != want[k]}
    if diff:
        said = ", ".join(f"{k} {h} here, {d} on the driver" for k, (d, h) in diff.items())
        return {**base, "status": "version-mismatch", "versions": mine,
                "error": f"worker {base['host']} differs from the driver: {said}"}
    try:
        from edgeq.inputs.models import load_model
        from edgeq.nativelog import quiet_native_logs

        with quiet_native_logs():
            loaded = load_model(_build(job["model"]))
            result = _convert(loaded, job["mode"], job["options"], calibration, train, job["settings"])
            figures = _measure(loaded, result, calibration, evaluation, job["settings"])
    except Exception as exc:  # one failed cell is recorded, the others go on
        tail = traceback.format_exc(limit=-3)
        return {**base, "status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": tail,
                "seconds": time.perf_counter() - started}
    return {**base, "status": "ok", "figures": figures, "model_bytes": result.model_bytes,
            "seconds": time.perf_counter() - started}
