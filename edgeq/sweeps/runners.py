"""Where a sweep's cells run: local worker processes (the default, nothing to start) or Ray tasks on a cluster.

Both take the jobs as an iterator and yield each cell's result as it finishes, with a bounded
number of jobs in flight, so the driver holds neither every job nor every model at once. Only the
driver writes files and the results store; workers return plain data (:func:`edgeq.sweeps.job.run_cell`).

Ray: each cell is a Ray task declaring its resources (``num_cpus``, ``memory`` for TensorFlow);
``retries`` is Ray's ``max_retries`` for a task whose worker or node died (0: such a cell is
recorded failed and the next ``--resume`` runs it again). Ray Tune was weighed and not used: its
trials are keyed by an experiment folder, not by the content hash of model, data and settings that
makes a cell idempotent across sweeps and stores; its results go to its own storage rather than
streaming back to the driver's store; and it pulls pandas and pyarrow into ``edgeq[ray]``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from edgeq.errors import InvalidArgumentError, SweepError
from edgeq.sweeps.job import run_cell

__all__ = ["parse_memory", "ray_cell", "run_local", "run_ray"]

Data = tuple[Any, Any, Any]


def _failed(job: Mapping[str, Any], error: str) -> dict[str, Any]:
    return {"key": job["key"], "name": job["name"], "status": "failed", "error": error, "figures": None,
            "model_bytes": None, "host": None, "node": None, "seconds": None}


def _share_cores(threads: int) -> None:
    """A local worker's initializer: TensorFlow's and OpenMP's thread pools sized to its share of the cores,
    so that N workers do not each start a pool as wide as the machine (set before TensorFlow is imported)."""
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))


def run_local(jobs: Iterable[Mapping[str, Any]], data: Data, workers: int) -> Iterator[dict[str, Any]]:
    """Run ``jobs`` in ``workers`` spawned processes (0: one after another in this process), each worker's
    thread pools sized to its share of the cores."""
    if workers == 0:
        for job in jobs:
            yield run_cell(job, *data)
        return
    ctx = multiprocessing.get_context("spawn")  # no forked TensorFlow state
    it = iter(jobs)
    share = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_share_cores,
                             initargs=(share,)) as pool:
        pending: dict[Future[dict[str, Any]], Mapping[str, Any]] = {}
        while True:
            while len(pending) < 2 * workers:
                try:
                    job = next(it)
                except StopIteration:
                    break
                pending[pool.submit(run_cell, job, *data)] = job
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                job = pending.pop(fut)
                try:
                        yield fut.result()
                except Exception as exc:  # a worker process that died takes only its cell
                    yield _failed(job, f"the worker process died: {type(exc).__name__}: {exc}")


def parse_memory(value: str | int | None) -> int | None:
    """Bytes from ``2GB``, ``1500MB``, ``512MiB`` or a number of bytes (None stays None).

    Raises:
        InvalidArgumentError: anything else.
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    text = str(value).strip().upper().replace(" ", "")
    units = {"GIB": 1 << 30, "MIB": 1 << 20, "KIB": 1 << 10, "GB": 10**9, "MB": 10**6, "KB": 10**3, "B": 1}
    for unit, mult in units.items():
        if text.endswith(unit):
            try:
                n = float(text[: -len(unit)])
            except ValueError:
                break
            if n > 0:
                return int(n * mult)
    raise InvalidArgumentError("not an amount of memory", argument="memory", received=value,
                               fix="give e.g. 2GB or 1500MB")


def ray_cell(job: Mapping[str, Any], calibration: Any = None, evaluation: Any = None,
             train: Any = None) -> dict[str, Any]:
    """:func:`~edgeq.sweeps.job.run_cell` as a Ray task: the result names the Ray node that ran it."""
    import ray

    res = run_cell(job, calibration, evaluation, train)
    ctx = ray.get_runtime_context()
    res["node"] = f"{res.get('host')}:{ctx.get_node_id()[:8]}"
    return res


def _ray_address(address: str) -> str:
    return os.environ.get("RAY_ADDRESS", "auto") if address == "auto" else address


def run_ray(jobs: Iterable[Mapping[str, Any]], data: Data, address: str, *, cpus: float = 1,
            memory: int | None = None, retries: int = 0, in_flight: int | None = None,
            runtime_env: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Run ``jobs`` as Ray tasks on the cluster at ``address`` (``auto``: ``$RAY_ADDRESS`` or the local one).

    Raises:
        InvalidArgumentError: Ray is not installed (``pip install 'edgeq[ray]'``).
        SweepError: the cluster cannot be reached.
    """
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError as exc:
        raise InvalidArgumentError("running a sweep on Ray needs the ray package", argument="ray",
                                   received=address, fix="pip install 'edgeq[ray]'") from exc
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=_ray_address(address), log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env=dict(runtime_env) if runtime_env else None)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SweepError(f"cannot connect to the Ray cluster ({exc})", argument="ray", received=address,
                             fix="start it (ray start --head) or give its address (host:6379, RAY_ADDRESS)") from exc
    try:
        total_cpus = int(ray.cluster_resources().get("CPU", 1))
        limit = in_flight or max(2, 2 * total_cpus)
        task = ray.remote(ray_cell).options(num_cpus=cpus, memory=memory, max_retries=retries)
        # Arrays go to the object store once, not once per task; paths travel as they are.
        refs = tuple(ray.put(d) if d is not None and not isinstance(d, (str, os.PathLike)) else d for d in data)
        it = iter(jobs)
        pending: dict[Any, Mapping[str, Any]] = {}
        while True:
            while len(pending) < limit:
                try:
                    job = next(it)
                except StopIteration:
                    break
                pending[task.remote(job, *refs)] = job
            if not pending:
                return
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except RayError as exc:  # the worker or its node died: this cell only
                    text = str(exc).strip()
                    first = text.splitlines()[0].split(". ")[0] if text else "no message"
                    yield _failed(job, f"{type(exc).__name__}: {first}")
    finally:
        if started_here:
            ray.shutdown()
