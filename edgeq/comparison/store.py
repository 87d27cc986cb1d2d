"""A comparison into the results store: one :class:`~edgeq.store.db.Measurement` per mode and thread count."""

from __future__ import annotations

import numpy as np
from edgeq_device.run.runtime import resolve_runtime

from edgeq.comparison.records import Comparison
from edgeq.store.db import Measurement, ResultsStore
from edgeq.store.resolve import StoreLike, resolve_store

__all__ = ["record"]


def record(comp: Comparison, store: StoreLike) -> int:
    """Write every measurement of ``comp`` to the results store (see ``compare``'s ``store``); returns the count."""
    st, opened = resolve_store(store)
    if st is None:
        return 0
    try:
        return _record_rows(comp, st)
    finally:
        if opened:
            st.close()


def _record_rows(comp: Comparison, st: ResultsStore) -> int:
    board = comp.board
    device = "host"
    rt = resolve_runtime()
    n = 0
    for r in comp.rows[1:]:
        for t, lat in r.latency_us.items():
            st.add_measurement(Measurement(
                model_sha256=r.model_sha256 or "", model_name=comp.model_name, mode=r.mode, device=device,
                runtime=rt.name, runtime_version=rt.version, threads=t, kind="compare",
                size_bytes=r.size_bytes, compressed_size_bytes=r.compressed_size_bytes, latency_p50_us=lat["p50_us"], latency_p90_us=lat["p90_us"],
                latency_mean_us=lat["mean_us"], accuracy_top1=r.top1, accuracy_top5=r.top5,
                agreement=r.agreement, sqnr_db=r.sqnr_db if r.sqnr_db is not None and np.isfinite(r.sqnr_db) else None,
                task=comp.task if comp.task != "classification" else None,
                task_metric=next(iter(r.task_metrics.values()), None),
                task_metric2=list(r.task_metrics.values())[1] if len(r.task_metrics) > 1 else None,
                source="compare", payload={"row": r.to_dict(), "board": board, "evaluation": comp.evaluation}))
            n += 1
    return n
