"""`make bench`: every performance figure of edgeq, as ratios taken in one run.

Each ``bench_*.py`` module here has a ``run() -> dict``; this script runs them in
turn, prints their figures and writes them to ``out/bench/results.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ("bench_convert", "bench_device", "bench_profile", "bench_tasks", "bench_int4", "bench_mixed",
           "bench_sparsity", "bench_ranges", "bench_fleet", "bench_sweep")


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("EDGEQ_PROGRESS", "0")
    sys.path.insert(0, str(HERE))
    results = {}
    for name in MODULES:
        if not (HERE / f"{name}.py").exists():
            continue
        start = time.perf_counter()
        print(f"== {name}", flush=True)
        results[name] = importlib.import_module(name).run()
        print(json.dumps(results[name], indent=2, default=str), flush=True)
        print(f"({time.perf_counter() - start:.0f} s)", flush=True)
    out = HERE.parent / "out" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
