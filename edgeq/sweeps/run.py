"""``edgeq.sweep``: a grid of models × modes × options, one job per cell, and the Pareto front as the answer.

Each cell (:mod:`edgeq.sweeps.grid`) is one job (:mod:`edgeq.sweeps.job`): convert, measure on the
host where it runs, return. The driver (this module) writes each finished cell as it arrives (its
``.tflite`` and ``cell.json`` under ``OUTPUT/cells/``, a measurement in the results store), so a
sweep that stops keeps every cell it finished, and holds no model longer than it takes to write it.

Cells are idempotent: a cell whose key (model hash, data hash, settings) is already in the store
is not run again (``resume=True``, the default; ``force=True`` reruns it). A failed cell is
recorded with its error in ``cell.json`` and the report, and runs again on the next resume.
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq_device.results.fileio import atomic_write_bytes, atomic_write_text
from edgeq_device.results.report_json import dumps_json, loads_json

from edgeq.errors import InvalidArgumentError, OutputExistsError, SweepError
from edgeq.store.db import Measurement, ResultsStore
from edgeq.store.resolve import resolve_store
from edgeq.sweeps.grid import CONVERT_MODES, TRAIN_MODES, Cell, build_grid, data_hash, model_specs
from edgeq.sweeps.job import worker_versions
from edgeq.sweeps.report import SweepReport, build_report, write_sweep_report
from edgeq.sweeps.runners import parse_memory, run_local, run_ray

__all__ = ["DEFAULT_MODES", "SweepResult", "sweep"]

#: The modes swept when none are given.
DEFAULT_MODES = ("float32", "dynamic", "float16", "int8", "int16x8")


@dataclass(frozen=True)
class SweepResult:
    """What a sweep did: the report (cells, fronts, recommendation) and how many cells ran, were
    taken from the store, or failed; ``files`` are the report's files by name."""

    report: SweepReport
    ran: int
    reused: int
    failed: int
    seconds: float
    files: Mapping[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``results.json`` dict."""
        return self.report.to_dict()


def _check_modes(modes: Sequence[str] | str, train: Any) -> list[str]:
    given = [modes] if isinstance(modes, str) else list(modes)
    out = []
    for m in given:
        name = str(getattr(m, "value", m)).lower()
        if name not in CONVERT_MODES + TRAIN_MODES:
            raise InvalidArgumentError("unknown mode", argument="modes", received=m,
                                       fix=f"use {', '.join(CONVERT_MODES + TRAIN_MODES)}")
        if name in TRAIN_MODES and train is None:
            raise InvalidArgumentError(f"mode {name!r} fine-tunes the model and needs training data",
                                       argument="train", received=None, fix="give train= (--train FOLDER)")
        if name not in out:
            out.append(name)
    if not out:
        raise InvalidArgumentError("no modes to sweep", argument="modes", received=modes,
                                   fix="give e.g. ['float32', 'int8']")
    return out


def _positive(name: str, value: Any, allow_none: bool = False, integer: bool = True) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise InvalidArgumentError("must be a positive number", argument=name, received=value,
                                   fix="give e.g. 1" if integer else "give e.g. 0.5")


def _stored(st: ResultsStore, cells: Sequence[Cell]) -> dict[str, Measurement]:
    """The store's sweep measurements of these cells, by cell key (one query per model)."""
    keys = {c.key for c in cells}
    found: dict[str, Measurement] = {}
    for name in sorted({c.model.name for c in cells}):
        for m in st.runs(model=name):
            key = (m.payload.get("sweep") or {}).get("key") if m.source == "sweep" else None
            if key in keys and key not in found:
                found[key] = m
    return found


def _measurement(cell: Cell, res: Mapping[str, Any], sha: str, file: Path) -> Measurement:
    f = res["figures"]
    return Measurement(
        model_sha256=sha, model_name=cell.model.name, mode=cell.mode, device="host", runtime=f["runtime"],
        runtime_version=f["runtime_version"], threads=f["threads"], kind="compare", size_bytes=f["size_bytes"],
        compressed_size_bytes=f["compressed_size_bytes"], latency_p50_us=f["latency_p50_us"],
        latency_p90_us=f["latency_p90_us"], latency_mean_us=f["latency_mean_us"], accuracy_top1=f["top1"],
        accuracy_top5=f["top5"], agreement=f["agreement"], sqnr_db=f["sqnr_db"], source="sweep",
        payload={"sweep": {"key": cell.key, "cell": cell.name, "options": dict(cell.options), "figures": f,
                           "file": str(file), "node": res.get("node"), "seconds": res.get("seconds")}})


def _cell_entry(cell: Cell, status: str, *, figures: Any = None, error: str | None = None, file: str | None = None,
                node: Any = None, seconds: Any = None, sha: str | None = None, reused: bool = False) -> dict[str, Any]:
    return {"name": cell.name, "folder": cell.folder, "model": cell.model.name, "mode": cell.mode, "options": dict(cell.options),
            "key": cell.key, "status": status, "error": error, "figures": figures, "file": file, "node": node,
            "seconds": seconds, "model_sha256": sha, "reused": reused}


def _check_output(out: Path, force: bool) -> None:
    results = out / "results.json"
    if out.exists() and any(out.iterdir()) and not results.exists() and not (out / "cells").exists():
        raise OutputExistsError("the output folder holds other files", argument="output", received=str(out),
                                fix="give a new or empty folder (a sweep's own folder is reused on resume)")
    if results.exists():
        try:
            schema = loads_json(results.read_text()).get("schema", "")
        except (OSError, ValueError, AttributeError):
            schema = ""
        if not str(schema).startswith("edgeq/sweep/") and not force:
            raise OutputExistsError("results.json there was not written by a sweep", argument="output",
                                    received=str(results), fix="give another folder, or --force to replace it")


def sweep(
    models: Any,
    *,
    calibration: Any,
    evaluation: Any,
    modes: Sequence[str] | str = DEFAULT_MODES,
    options: Mapping[str, Any] | None = None,
    train: Any = None,
    output: str | os.PathLike[str] = "sweep",
    store: Any = None,
    resume: bool = True,
    force: bool = False,
    workers: int | None = None,
    ray: str | None = None,
    ray_cpus: float = 1,
    ray_memory: str | int | None = "2GB",
    ray_retries: int = 0,
    runtime_env: Mapping[str, Any] | None = None,
    samples: int = 200,
    eval_samples: int | None = None,
    seed: int = 0,
    threads: int = 1,
    runs: int = 50,
    min_secs: float = 0.3,
    max_secs: float = 10.0,
    train_epochs: int = 1,
    clusters: int = 16,
    sparsity: float = 0.5,
    max_drop: float | None = 1.0,
    max_latency: float | None = None,
    max_size: int | None = None,
    prefer: str = "latency",
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Convert and measure every model × mode × option, in parallel, and report the Pareto front.

    Args:
        models: model files, a ``models.toml`` naming builders (see :mod:`edgeq.sweeps.grid`), or
            :class:`~edgeq.sweeps.grid.ModelSpec` values.
        calibration, evaluation, train: data as paths (image folder, ``.npz``) or NumPy arrays
            (``(x, y)``); sent to the workers as they are.
        modes: modes to sweep (default float32, dynamic, float16, int8, int16x8; also int4, and
            qat / clustered / pruned with ``train``).
        options: values to sweep for the int8 options: ``{"ranges": [...], "a16": [0, 2],
            "io": ["float", "int8"]}``; modes an option does not apply to run once.
        output: the sweep's folder: ``cells/<cell>/model.tflite`` and ``cell.json``, ``results.json``,
            ``report.md``, ``report.html``. Reused on resume.
        store: the results store (a path or :class:`~edgeq.ResultsStore`); default ``OUTPUT/results.db``.
        resume: skip the cells whose key is in the store; ``force``: rerun every cell.
        workers: local worker processes (default: the CPU count; 0: one after another in this process).
        ray: a Ray address (``host:port``, ``auto`` or ``$RAY_ADDRESS``): run the cells as Ray tasks,
            each taking ``ray_cpus`` CPUs and ``ray_memory`` memory; ``ray_retries`` reruns a task whose
            node died (0: it is recorded failed for the next resume); ``runtime_env`` as Ray's.
        samples, eval_samples, seed: calibration samples, an evaluation subset, the seed.
        threads, runs, min_secs, max_secs: each cell's latency on its host (``edgeq_device.measure.bench``).
        train_epochs, clusters, sparsity: the training modes' settings.
        max_drop, max_latency, max_size: the recommendation's constraints: points of top-1 below the
            best Keras model of the sweep (of agreement without labels), p50 ms, bytes.
        prefer: among the cells within the constraints: ``"latency"``, ``"size"`` or ``"accuracy"``.
        progress, log: one line per finished cell (``log`` receives it; default stderr when progress).

    Raises:
        InvalidArgumentError, OutputExistsError, StoreError, SweepError (a worker's versions differ,
        the cluster cannot be reached).
    """
    started = time.perf_counter()
    specs = model_specs(models)
    mode_list = _check_modes(modes, train)
    for name, value in (("samples", samples), ("threads", threads), ("runs", runs)):
        _positive(name, value)
    _positive("eval_samples", eval_samples, allow_none=True)
    if prefer not in ("latency", "size", "accuracy"):
        raise InvalidArgumentError("unknown preference", argument="prefer", received=prefer,
                                   fix="use latency, size or accuracy")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise InvalidArgumentError("must be a count of processes, 0 or more", argument="workers", received=workers,
                                   fix="give e.g. 2 (0 runs the cells in this process)")
    memory = parse_memory(ray_memory)
    out = Path(output)
    _check_output(out, force)
    out.mkdir(parents=True, exist_ok=True)
    hashes = {"calibration": data_hash(calibration, "calibration"), "evaluation": data_hash(evaluation, "evaluation"),
              "train": data_hash(train, "train")}
    settings = {"samples": samples, "eval_samples": eval_samples, "seed": seed, "threads": threads, "runs": runs,
                "min_secs": min_secs, "max_secs": max_secs, "train_epochs": train_epochs, "clusters": clusters,
                "sparsity": sparsity}
    cells = build_grid(specs, mode_list, options, hashes, settings)
    versions = worker_versions()
    say = log or ((lambda line: print(line, file=sys.stderr, flush=True))
                  if (progress if progress is not None else os.environ.get("EDGEQ_PROGRESS", "1") != "0")
                  else (lambda line: None))
    st, opened = resolve_store(store if store is not None else out / "results.db")
    assert st is not None
    try:
        stored = {} if force or not resume else _stored(st, cells)
        entries: dict[str, dict[str, Any]] = {}
        for c in cells:
            if c.key in stored:
                sw = stored[c.key].payload["sweep"]
                entries[c.key] = _cell_entry(c, "ok", figures=sw["figures"], file=sw["file"], node=sw.get("node"),
                                             seconds=sw.get("seconds"), sha=stored[c.key].model_sha256, reused=True)
        todo = [c for c in cells if c.key not in entries]
        by_key = {c.key: c for c in todo}
        say(f"sweep: {len(cells)} cells, {len(entries)} already in the store, {len(todo)} to run "
            + (f"on Ray ({ray})" if ray else f"in {workers if workers is not None else os.cpu_count()} "
               "local worker(s)"))
        jobs = ({"key": c.key, "name": c.name, "model": c.model.to_dict(), "mode": c.mode,
                 "options": dict(c.options), "settings": settings, "versions": versions} for c in todo)
        data = (calibration, evaluation, train)
        results = (run_ray(jobs, data, ray, cpus=ray_cpus, memory=memory, retries=ray_retries,
                           runtime_env=runtime_env) if ray
                   else run_local(jobs, data, os.cpu_count() or 1 if workers is None else workers))
        ran = failed = 0
        for res in results:
            cell = by_key[res["key"]]
            if res["status"] == "version-mismatch":
                raise SweepError(res["error"], argument="ray" if ray else "workers", received=res.get("host"),
                                 fix="install the driver's edgeq, tensorflow and ai-edge-litert on every worker "
                                     "(see the README's Ray section)")
            entries[cell.key] = _write_cell(out, cell, res, st)
            ran += 1
            failed += res["status"] != "ok"
            f = res.get("figures") or {}
            say(f"[{len(entries)}/{len(cells)}] {cell.name}: " + (
                f"ok, {f['size_bytes']} B, " + (f"top-1 {_pct(f['top1'])}" if f.get("top1") is not None
                                                 else f"agreement {_pct(f.get('agreement'))}")
                + f", p50 {f['latency_p50_us'] / 1000:.3f} ms"
                if res["status"] == "ok" else f"FAILED: {res['error']}")
                + f" ({res.get('seconds') or 0:.1f} s on {res.get('node') or '?'})")
    finally:
        if opened:
            st.close()
    ordered = [entries[c.key] for c in cells if c.key in entries]
    report = build_report(ordered, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                          versions=versions, settings={**settings, "modes": mode_list, "options": dict(options or {}),
                                                       "data": hashes, "runner": f"ray {ray}" if ray else "local"},
                          max_drop=max_drop, max_latency=max_latency, max_size=max_size, prefer=prefer)
    files = write_sweep_report(report, out)
    return SweepResult(report=report, ran=ran, reused=len(cells) - len(todo), failed=failed,
                       seconds=time.perf_counter() - started, files=files)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _write_cell(out: Path, cell: Cell, res: Mapping[str, Any], st: ResultsStore) -> dict[str, Any]:
    """Write one finished cell (its .tflite, cell.json, a store row) and return its report entry."""
    folder = out / "cells" / cell.folder
    folder.mkdir(parents=True, exist_ok=True)
    if res["status"] != "ok":
        entry = _cell_entry(cell, "failed", error=res["error"], node=res.get("node"), seconds=res.get("seconds"))
        atomic_write_text(folder / "cell.json", dumps_json({**entry, "traceback": res.get("traceback")}, indent=2)
                          + "\n", overwrite=True)
        return entry
    from edgeq.store.records import file_sha256

    model_bytes = res["model_bytes"]
    sha = file_sha256(model_bytes)
    tflite = atomic_write_bytes(folder / "model.tflite", model_bytes, overwrite=True)
    entry = _cell_entry(cell, "ok", figures=res["figures"], file=str(tflite.resolve()), node=res.get("node"),
                        seconds=res.get("seconds"), sha=sha)
    atomic_write_text(folder / "cell.json", dumps_json(entry, indent=2) + "\n", overwrite=True)
    st.add_measurement(_measurement(cell, res, sha, tflite.resolve()))
    return entry
