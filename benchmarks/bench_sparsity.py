"""Trained modes against plain int8, in one compare run on the mnist5k digits.

The demo CNN (examples/demo.py, one epoch) through ``compare(train=...)`` in float32, int8,
qat, clustered (16) and pruned (0.5); per mode, as ratios to the int8 row of the same run:

- gzip ratio: the file compressed with gzip at level 9 (what a fleet update downloads);
- latency ratio: p50 of one ``invoke()`` on 1 thread.

The absolute figures (size, gzip size, top-1, agreement with the Keras model, p50) come along.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "datasets" / "mnist5k"
MODES = ("float32", "int8", "qat", "clustered", "pruned")


def trained_modes(epochs: int = 2, runs: int = 200) -> dict[str, Any]:
    """Every mode's figures and its gzip and latency ratios to int8."""
    os.environ.setdefault("EDGEQ_PROGRESS", "0")
    sys.path.insert(0, str(REPO / "examples"))
    from demo import train_cnn

    from edgeq.comparison.run import compare
    from edgeq.quantize.lowbit.weight_stats import gzip_size

    model = train_cnn(DATA / "train", epochs=1, verbose=0)
    comp = compare(model, calibration=DATA / "train", evaluation=DATA / "test", modes=list(MODES),
                   train=DATA / "train", clusters=16, sparsity=0.5, train_epochs=epochs, threads=[1], runs=runs,
                   min_secs=1.0, max_secs=10.0, progress=False)
    rows = {r.name: r for r in comp.rows}
    zipped = {name: gzip_size(res.model_bytes) for name, res in comp.results.items()}
    base_p50, base_gzip = rows["int8"].p50(1), zipped["int8"]
    out: dict[str, Any] = {}
    for name in MODES:
        r, p50 = rows[name], rows[name].p50(1)
        out[name] = {
            "size_bytes": r.size_bytes, "gzip_bytes": zipped[name], "top1": r.top1, "agreement": r.agreement,
            "p50_us": None if p50 is None else round(p50, 1),
            "gzip_ratio_vs_int8": round(zipped[name] / base_gzip, 3),
            "latency_ratio_vs_int8": None if p50 is None or base_p50 is None else round(p50 / base_p50, 3),
        }
    out["keras_top1"] = rows["keras"].top1
    return out


def run() -> dict[str, object]:
    return {"trained_modes": trained_modes()}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2, default=str))
