"""Latency of several models timed in interleaved rounds, on this machine.

A change in the machine's load or clock during a comparison then reaches every model alike
(and shows in the spread of the rounds) instead of deciding a ranking. Each (model, thread
count) gets one interpreter, created and run once before the first round; every round runs
each of them for a few warm-up calls and then its timed calls, through the same timing loop
as ``edgeq-device bench`` (:func:`edgeq_device.measure.bench.time_invocations`).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from edgeq_device.errors import InferenceError
from edgeq_device.measure.bench import random_inputs, time_invocations
from edgeq_device.model.metadata import read_metadata
from edgeq_device.run.runtime import ModelRunner

__all__ = ["WARMUP_PER_ROUND", "interleaved_rounds"]

#: Untimed calls before each round's timed ones: the other models ran in between.
WARMUP_PER_ROUND = 3


def interleaved_rounds(models: Mapping[str, bytes], threads: Sequence[int], rounds: int, runs: int,
                       min_secs: float, max_secs: float, *, seed: int = 0,
                       tick: Callable[[], None] | None = None) -> dict[str, dict[int, list[list[float]]]]:
    """Time every model at every thread count in ``rounds`` interleaved rounds.

    Args:
        models: name → ``.tflite`` bytes.
        threads: the thread counts to time each model with.
        rounds: how many rounds; each times every (model, threads) once.
        runs, min_secs, max_secs: one round's timed calls: at least ``runs`` calls and
            ``min_secs`` seconds, at most ``max_secs`` seconds (per model and thread count).
        seed: the random inputs' seed (inputs follow each model's metadata, as bench's do).
        tick: called after each round of one thread count (progress).

    Returns:
        ``{name: {threads: [round's call durations in µs, ...]}}``.

    Raises:
        InferenceError: a model failed running.
    """
    runners: dict[tuple[str, int], ModelRunner] = {}
    for t in threads:
        for name, data in models.items():
            runner = ModelRunner(data, threads=t)
            meta = read_metadata(data)
            runner.set_inputs(random_inputs(runner.input_details, meta.preprocess if meta else None, seed))
            runner.invoke()
            runners[(name, t)] = runner
    out: dict[str, dict[int, list[list[float]]]] = {name: {t: [] for t in threads} for name in models}
    try:
        for _ in range(rounds):
            for t in threads:
                for name in models:
                    invoke = runners[(name, t)].interpreter.invoke
                    time_invocations(invoke, WARMUP_PER_ROUND, 0.0, max_secs)
                    samples, _ = time_invocations(invoke, runs, min_secs, max_secs)
                    out[name][t].append([v / 1e3 for v in samples])
                if tick is not None:
                    tick()
    except (ValueError, RuntimeError) as exc:
        raise InferenceError(f"the model failed running: {str(exc).splitlines()[0] if str(exc) else exc}",
                             argument="model",
                             fix="check the model with edgeq-device info, or convert it again") from exc
    return out
