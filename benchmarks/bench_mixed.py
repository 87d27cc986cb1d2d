"""Mixed precision figures: 16-bit activations on the worst layers, against int8, in one run.

For the demo's digits CNN and a small ResNet-8-style CNN (both trained for a few seconds
on datasets/mnist5k, seeded), every candidate of the accuracy budget's ladder is built
directly and measured on the 1,000 held-out test digits against the float32 model:
int8, int8 with the worst k layers at 16-bit activations (k = 1, 2, 4), int8 with the
worst k layers in float, int16x8. Per candidate: size and latency as ratios to int8
(latencies interleaved in one process, 16-bit kernels being reference ones), arg-max
agreement and output SQNR against float32, top-1 accuracy. Then ``budget_search`` with
``max_drop=0.5`` and whether its choice meets the goal: >= 98% agreement at <= 1.15x
the int8 size.

``python benchmarks/bench_mixed.py elsewhere``: on fer's emotion model (a residual CNN
trained elsewhere, ``tests/fixtures/public_models``) and real-photo crops, 16-bit layers chosen
by the debugger's worst isolated error against those chosen by their effect on the output
(:func:`by_effect`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "datasets" / "mnist5k"
sys.path.insert(0, str(REPO / "examples"))


def resnet8(x: np.ndarray, y: np.ndarray, epochs: int = 3, seed: int = 0) -> Any:
    """A ResNet-8-style CNN (three residual stages, 16/32/64 filters, batch norm) trained on ``x, y``."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers  # noqa: N806

    def block(h: Any, filters: int, stride: int) -> Any:
        r = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(h)
        r = L.ReLU()(L.BatchNormalization(momentum=0.9)(r))
        r = L.BatchNormalization(momentum=0.9)(L.Conv2D(filters, 3, padding="same", use_bias=False)(r))
        if stride != 1 or h.shape[-1] != filters:
            h = L.Conv2D(filters, 1, strides=stride)(h)
        return L.ReLU()(L.Add()([h, r]))

    inp = keras.Input((28, 28, 1), name="image")
    h = L.ReLU()(L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        h = block(h, filters, stride)
    out = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out, name="resnet8")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    return model


def _outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from edgeq_device.run.runtime import ModelRunner

    r = ModelRunner(model_bytes)
    return np.concatenate([np.asarray(r.run([x[i:i + 1]])[0]).reshape(1, -1) for i in range(len(x))])


def _latencies(models: dict[str, bytes], rounds: int = 5) -> dict[str, float]:
    """Median latency (ms) per model, rounds interleaved so the machine's load falls on all alike."""
    from edgeq.quantize.precision.accuracy import latency_ms

    seen: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, data in models.items():
            seen[name].append(latency_ms(data))
    return {k: float(np.median(v)) for k, v in seen.items()}


def ladder(model: Any, x: np.ndarray, xt: np.ndarray, yt: np.ndarray, samples: int = 200) -> dict[str, Any]:
    """Every candidate of the budget's ladder for ``model``, measured against float32 and int8."""
    import edgeq
    from edgeq.quantize.layer_error import QuantDebugSession
    from edgeq.quantize.modes import IOType
    from edgeq.quantize.precision.budget_steps import fidelity
    from edgeq.quantize.precision.mixed import converter_ranges, mixed_result, plan_a16, quantize_mixed

    calib = x[:samples]
    f32 = edgeq.convert(model, "float32")
    built: dict[str, bytes] = {"int8": edgeq.convert(model, "int8", calibration=calib).model_bytes}
    session = QuantDebugSession(model, calib, samples=samples)
    ranked = [r for r in session.report().layers if r.sqnr_db < 120.0]
    for k in (1, 2, 4):
        plan = plan_a16(f32.model_bytes, [r.name for r in ranked[:k]])
        raw, _ = quantize_mixed(f32.model_bytes, session.items, plan, ranges=converter_ranges(session.calibrated_model))
        built[f"int8+a16({k})"] = mixed_result(f32, raw, plan, IOType.FLOAT, 0.0, samples).model_bytes
    for k in (1, 2, 4):
        names = [r.name for r in ranked[:k]]
        nodes = tuple(dict.fromkeys([*names, *session.consumers(names)]))
        built[f"int8+float({k})"] = session.quantized_model(nodes)
    built["int16x8"] = edgeq.convert(model, "int16x8", calibration=calib).model_bytes
    ref = _outputs(f32.model_bytes, xt)
    lat = _latencies(built)
    rows = {}
    for name, data in built.items():
        out = _outputs(data, xt)
        agree, sqnr = fidelity(ref, out)
        rows[name] = {"size_bytes": len(data), "size_vs_int8": len(data) / len(built["int8"]),
                      "latency_vs_int8": lat[name] / lat["int8"], "agreement": agree, "sqnr_db": sqnr,
                      "top1": float((out.argmax(1) == yt).mean())}
    return {"float32_top1": float((ref.argmax(1) == yt).mean()), "worst_layers": [r.layer for r in ranked[:4]],
            "candidates": rows}


def budget(model: Any, x: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    """What ``budget_search(max_drop=0.5)`` chooses, and whether it meets the goal."""
    from edgeq.quantize.precision.budget import budget_search

    result = budget_search(model, max_drop=0.5, calibration=x[:200], evaluation=(xt, yt), samples=200,
                           progress=False)
    report = result.budget
    int8 = report.candidates[0]
    c = report.choice
    ratio = (c.size_bytes or 0) / (int8.size_bytes or 1)
    return {"tried": [t.name for t in report.candidates], "chosen": c.name, "agreement": c.agreement,
            "sqnr_db": c.sqnr_db, "size_vs_int8": ratio, "drop_points": c.drop,
            "goal_met": bool((c.agreement or 0) >= 0.98 and ratio <= 1.15)}


def by_effect(model: Any, calib: np.ndarray, held: np.ndarray, ks: tuple[int, ...] = (1, 2, 4, 8)) -> dict[str, Any]:
    """16-bit layers picked by the debugger's worst isolated error (before) and by measured effect (after).

    Output SQNR and agreement against float32 on ``held`` (never calibrated on) for int8, the
    ``k`` worst layers of ``edgeq debug`` at 16 bits, the best ``k`` groups of ``search_a16``,
    and int16x8; the search's path (calibration samples) and its verdict.
    """
    import time

    import edgeq
    from edgeq.quantize.layer_error import QuantDebugSession
    from edgeq.quantize.precision.budget_steps import fidelity
    from edgeq.quantize.precision.mixed import converter_ranges, plan_a16, quantize_runnable
    from edgeq.quantize.precision.sensitivity import search_a16

    f32 = edgeq.convert(model, "float32").model_bytes
    ref = _outputs(f32, held)
    session = QuantDebugSession(model, calib, samples=len(calib), progress=False)
    ranges = converter_ranges(session.calibrated_model)
    rows: dict[str, Any] = {}

    def row(name: str, data: bytes) -> None:
        agree, sqnr = fidelity(ref, _outputs(data, held))
        rows[name] = {"agreement": agree, "sqnr_db": sqnr}

    row("int8", edgeq.convert(model, "int8", calibration=calib).model_bytes)
    ranked = [r for r in session.report().layers if r.sqnr_db < 120.0]
    for k in ks:
        raw, _ = quantize_runnable(f32, session.items, plan_a16(f32, [r.name for r in ranked[:k]]), ranges=ranges)
        row(f"worst({k})", raw)
    t0 = time.perf_counter()
    search = search_a16(f32, session.items, ranges=ranges)
    seconds = time.perf_counter() - t0
    by_first = {g[0]: g for g, _ in search.single}
    for k in (*ks, search.groups):
        step = search.best_within(k)
        if step is not None:
            plan = plan_a16(f32, [n for f in step.groups for n in by_first[f]])
            raw, _ = quantize_runnable(f32, session.items, plan, ranges=ranges)
            row(f"effect({k}: {len(step.groups)} groups)", raw)
    row("int16x8", edgeq.convert(model, "int16x8", calibration=calib).model_bytes)
    return {"held_out": rows, "search_seconds": seconds, "groups": search.groups, "verdict": search.verdict(),
            "path_calibration_db": [(len(s.groups), round(s.sqnr_db, 2)) for s in search.steps]}


def elsewhere() -> dict[str, Any]:
    """:func:`by_effect` on fer's emotion model (a residual CNN trained elsewhere), real-photo crops."""
    sys.path.insert(0, str(REPO))
    from tests.fixtures.elsewhere import emotion_model, photo_crops

    return by_effect(emotion_model(), photo_crops(200, seed=0), photo_crops(300, seed=1))


def run() -> dict[str, object]:
    """The ladder and the budget's choice for each model."""
    from demo import load_folder, train_cnn

    x, y = load_folder(DATA / "train")
    xt, yt = load_folder(DATA / "test")
    models = {"digits_cnn": train_cnn(epochs=2, verbose=0), "resnet8": resnet8(x, y)}
    return {name: {"ladder": ladder(m, x, xt, yt), "budget": budget(m, x, xt, yt)} for name, m in models.items()}


if __name__ == "__main__":
    print(json.dumps(elsewhere() if sys.argv[1:] == ["elsewhere"] else run(), indent=2))
