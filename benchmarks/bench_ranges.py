"""Activation-ranges methods on the bundled digits CNN: output SQNR and arg-max agreement vs float,
size, and calibration time as a ratio to minmax (all in one run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
METHODS = ("minmax", "percentile", "mse", "entropy", "auto")


def run() -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(HERE.parent / "tests"))
    from fixtures.models import MNIST, load_digits, train_digits_cnn

    import edgeq
    from edgeq.quantize.ranges import LiteRunner, output_sqnr

    x, y = load_digits(MNIST / "train")
    xt, _ = load_digits(MNIST / "test")
    model = train_digits_cnn(x[:2000], y[:2000], epochs=2)
    ref = LiteRunner(edgeq.convert(model, "float32").model_bytes, ["image"], preserve=False)
    items = [{"image": xt[i:i + 1]} for i in range(min(500, len(xt)))]
    reference = [[o.copy() for o in ref.run(it)] for it in items]
    rows: dict[str, Any] = {}
    for method in METHODS:
        start = time.perf_counter()
        res = edgeq.convert(model, "int8", calibration=x[2000:2200], samples=200, ranges=method)
        seconds = time.perf_counter() - start
        q = LiteRunner(res.model_bytes, ["image"], preserve=False)
        agree = float(np.mean([np.argmax(q.run(it)[0]) == np.argmax(r[0]) for it, r in zip(items, reference)]))
        rows[method] = {"output_sqnr_db": round(output_sqnr(reference, res.model_bytes, items, ["image"]), 2),
                        "argmax_agreement": round(agree, 4), "size_bytes": res.size_bytes,
                        "seconds": round(seconds, 2),
                        "chosen": res.ranges.chosen if res.ranges else "minmax"}
    for row in rows.values():
        row["time_vs_minmax"] = round(row["seconds"] / rows["minmax"]["seconds"], 2)
    return {"digits_cnn": rows}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
