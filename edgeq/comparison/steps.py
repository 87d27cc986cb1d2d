"""The steps of a comparison, in order: prepare the data, convert every mode, measure, note, recommend, assemble.

:func:`edgeq.comparison.run.compare` builds a :class:`~edgeq.comparison.options.CompareOptions`
and runs :func:`run_plan`; each step takes what the one before it produced. Storing the
result is :func:`edgeq.comparison.store.record`.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from edgeq_device.measure.profile import ProfileParams, profile_model
from edgeq_device.measure.sysinfo import board_info
from edgeq_device.model.analysis import analyze_flat_model
from edgeq_device.model.int4 import INT4_NOTE
from edgeq_device.tasks.evaluation import predict_arrays, read_labels
from edgeq_device.tasks.masks import IgnoreLike, parse_ignore

from edgeq.comparison.options import CompareOptions
from edgeq.comparison.recommend import LATENCY_ROUNDS, latency_summary, recommend, round_levels
from edgeq.comparison.records import KERAS, Comparison, ModeRow
from edgeq.comparison.task_rows import TaskRun, reference_files
from edgeq.errors import InvalidArgumentError
from edgeq.inputs.data import DataSource, as_source
from edgeq.inputs.models import LoadedModel, load_model
from edgeq.measure.evaluation import keras_outputs, load_eval_arrays, match_labels, top_k_accuracy
from edgeq.measure.fidelity import argmax_agreement, fidelity
from edgeq.measure.latency import interleaved_rounds
from edgeq.measure.profile import compare_profiles
from edgeq.progress import task_progress
from edgeq.quantize.calibration import default_preprocess
from edgeq.quantize.converter import convert
from edgeq.quantize.modes import Mode
from edgeq.quantize.qat.sparsity import trained_results
from edgeq.quantize.result import ConversionResult
from edgeq.store.db import file_sha256
from edgeq.targets.mcu.check import mcu_cell

__all__ = ["Prepared", "convert_modes", "measure_modes", "prepare", "run_plan", "speed_notes"]

_SLOW_WHY = {
    "dynamic": "dynamic-range models quantize activations on the fly at every inference, and XNNPACK "
               "runs float32 well.",
    "int16x8": "int16x8 kernels are the reference ones, without XNNPACK or SIMD-optimized paths.",
    "float16": "float16 weights are turned back to float32 at load time; speed should match float32.",
    "int4": "int4 weights are unpacked and activations quantized on the fly at every inference (no XNNPACK "
            "path for 4-bit filters), while XNNPACK runs float32 well.",
}


@dataclass(frozen=True)
class Prepared:
    """The model and the data every mode is measured on: the Keras model's outputs on the same arrays."""

    loaded: LoadedModel
    preprocess: Any
    x: np.ndarray
    y: np.ndarray | None
    keras_out: np.ndarray
    calibration: DataSource
    names: tuple[str, ...] | None
    label_note: str
    eval_desc: str
    run: TaskRun | None

    @property
    def labeled(self) -> bool:
        return self.y is not None or self.run is not None


def run_plan(model: Any, calibration: Any, evaluation: Any, opts: CompareOptions) -> Comparison:
    """Prepare, convert, measure, note and recommend: the :class:`Comparison` (not yet stored)."""
    data = prepare(model, calibration, evaluation, opts)
    results = convert_modes(data, opts)
    rows = measure_modes(data, results, opts)
    notes = [f"int4: {INT4_NOTE}"] if Mode.INT4 in opts.mode_list else []
    notes += [data.label_note] if data.label_note else []
    notes += speed_notes(rows, opts.thread_list)
    rec = recommend(rows, float(opts.max_drop), opts.prefer, opts.thread_list[0], data.labeled, opts.task)
    prof_doc = profile_modes(results, opts.thread_list[0], opts.seed, opts.progress) if opts.profile else None
    run = data.run
    return Comparison(
        model_name=results[next(iter(results))].source_name if results else data.loaded.name,
        rows=tuple(rows), recommendation=rec, threads=opts.thread_list, evaluation=data.eval_desc,
        eval_images=len(data.x), labeled=data.labeled, notes=tuple(notes), board=board_info().to_dict(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), results=results,
        profile=prof_doc, task=opts.task, task_details=run.details(KERAS) if run is not None else None,
        files=_reference_files(data, results))


def prepare(model: Any, calibration: Any, evaluation: Any, opts: CompareOptions) -> Prepared:
    """Load the model and the evaluation data, and run the Keras model on it."""
    loaded = load_model(model)
    if len(loaded.inputs) != 1:
        raise InvalidArgumentError("compare takes single-input models", argument="model",
                                   received=[s.name for s in loaded.inputs], fix="use convert() and evaluate() per input")
    pre = opts.preprocess or default_preprocess(loaded.inputs[0])
    if opts.task != "classification":
        given_names = None if opts.labels is None else _label_names(opts.labels)
        run = TaskRun.start(opts.task, loaded, evaluation, pre, annotations=opts.annotations, masks=opts.masks,
                            outputs=opts.outputs, class_offset=opts.class_offset, ignore_index=opts.ignore_index,
                            label_map=opts.label_map,
                            class_names=given_names, limit=opts.eval_samples, seed=opts.seed,
                            progress=opts.progress)
        x = run.data.x
        return Prepared(loaded, pre, x, None, run.keras_outputs[0].reshape(len(x), -1),
                        as_source(calibration, pre), given_names, "", f"{run.data.data} ({opts.task})", run)
    eval_src = as_source(evaluation, pre, argument="evaluation")
    x, y = load_eval_arrays(eval_src, opts.eval_samples, opts.seed)
    keras_out = keras_outputs(loaded, x)
    calib = as_source(calibration, pre)
    names, y, label_note = match_labels(opts.labels, calib, eval_src, y, keras_out.shape[1])
    return Prepared(loaded, pre, x, y, keras_out, calib, names, label_note, eval_src.description, None)


def convert_modes(data: Prepared, opts: CompareOptions) -> dict[str, ConversionResult]:
    """Every mode's conversion, then the fine-tuned modes', by name in the order compared."""
    results: dict[str, ConversionResult] = {}
    # A detector's or segmenter's models carry their task, so a board evaluates them without flags.
    task_kw: dict[str, Any] = {} if data.run is None else {
        "task": opts.task, "task_settings": ({"class_offset": opts.class_offset} if opts.task == "detection" else
                                             {"ignore_index": _ignore_setting(opts.ignore_index)})}
    for mode in opts.mode_list:
        calibrated = mode.needs_calibration or mode is Mode.INT4
        results[mode.value] = convert(
            data.loaded, mode, calibration=data.calibration if calibrated else None, samples=opts.samples,
            seed=opts.seed, io=opts.io if mode is Mode.INT8 else "float", preprocess=data.preprocess,
            labels=data.names if data.names and data.run is None else (), progress=opts.progress, **task_kw)
    results.update(trained_results(data.loaded, list(opts.trained), opts.train, clusters=opts.clusters,
                                   sparsity=opts.sparsity, epochs=opts.train_epochs, calibration=data.calibration,
                                   samples=opts.samples, seed=opts.seed, io=opts.io, preprocess=data.preprocess,
                                   labels=data.names, progress=opts.progress))
    return results


def _time_modes(data: Prepared, results: dict[str, ConversionResult],
                opts: CompareOptions) -> tuple[dict[str, Any], dict[str, Any], dict[int, Any]]:
    """Each mode's outputs on the evaluation arrays, and its latency in rounds that interleave the modes."""
    threads = opts.thread_list
    round_runs = max(1, -(-opts.runs // LATENCY_ROUNDS))
    outs: dict[str, Any] = {}
    with task_progress("measuring modes", len(results) + LATENCY_ROUNDS * len(threads), opts.progress) as tick:
        for name, res in results.items():
            outs[name] = predict_arrays(res.model_bytes, data.x, workers=None) if data.run is None else None
            tick()
        # Latency in rounds, the modes interleaved: see LATENCY_ROUNDS.
        rounds = interleaved_rounds({name: res.model_bytes for name, res in results.items()}, threads,
                                    LATENCY_ROUNDS, round_runs, opts.min_secs / LATENCY_ROUNDS,
                                    opts.max_secs / LATENCY_ROUNDS, seed=opts.seed, tick=tick)
        levels = {t: round_levels([rounds[name][t] for name in results]) for t in threads}
    return outs, rounds, levels


def measure_modes(data: Prepared, results: dict[str, ConversionResult], opts: CompareOptions) -> list[ModeRow]:
    """The Keras model's row, then one row per mode: size, accuracy, fidelity, latency, MACs."""
    y, keras_out, run = data.y, data.keras_out, data.run
    keras_top1 = top_k_accuracy(keras_out, y, 1) if y is not None else None
    rows = [ModeRow(
        name=KERAS, mode=KERAS, io="float", size_bytes=None, size_ratio=None, top1=keras_top1,
        top5=top_k_accuracy(keras_out, y, 5) if y is not None else None,
        top1_change_points=0.0 if y is not None else None,
        agreement=1.0, sqnr_db=None, max_abs_error=0.0, cosine=1.0, latency_us={},
        **(run.keras_fields() if run is not None else {}))]
    outs, rounds, levels = _time_modes(data, results, opts)
    task_fields = {name: run.measure(name, res.model_bytes) for name, res in results.items()} if run else {}
    f32_size = results["float32"].size_bytes if "float32" in results else None
    for i, (name, res) in enumerate(results.items()):
        out = outs[name]
        fields: dict[str, Any] = ({"agreement": argmax_agreement(keras_out, out), **fidelity(keras_out, out)}
                                  if run is None else task_fields[name])
        top1 = top_k_accuracy(out, y, 1) if y is not None else None
        lat = {t: latency_summary(rounds[name][t], None if (lv := levels[t]) is None else lv[i])
               for t in opts.thread_list}
        samples_us = {t: [v for r in rounds[name][t] for v in r] for t in opts.thread_list}
        ana = analyze_flat_model(res.model_bytes)
        rows.append(ModeRow(
            name=name, mode=res.mode.value, io=res.io.value, size_bytes=res.size_bytes,
            size_ratio=None if not f32_size else f32_size / res.size_bytes,
            top1=top1, top5=top_k_accuracy(out, y, 5) if y is not None else None,
            top1_change_points=None if top1 is None or keras_top1 is None else (top1 - keras_top1) * 100,
            **fields, latency_us=lat,
            latency_samples_us=samples_us, conversion_seconds=res.conversion_seconds,
            macs=ana.total_macs, params=ana.total_params, peak_activation_bytes=ana.peak_activation_bytes,
            model_sha256=file_sha256(res.model_bytes), float_ops=res.float_ops,
            compressed_size_bytes=res.compressed_size,
            mcu=mcu_cell(res.model_bytes, opts.mcu_board) if opts.target == "mcu" else None))  # the MCU column
    return rows


def speed_notes(rows: Sequence[ModeRow], thread_list: Sequence[int]) -> list[str]:
    """One note per mode and thread count where a quantized mode ran more than 5% slower than float32."""
    notes: list[str] = []
    f32 = next((r for r in rows if r.name == "float32"), None)
    if f32 is None:
        return notes
    for r in rows[1:]:
        if r is f32:
            continue
        for t in thread_list:
            a, b = r.p50(t), f32.p50(t)
            if a and b and a > b * 1.05:
                notes.append(f"{r.name} is slower than float32 on this CPU at {t} thread{'s' if t > 1 else ''} "
                             f"({a / 1000:.3f} ms vs {b / 1000:.3f} ms p50): quantized is not always faster; "
                             + _SLOW_WHY.get(r.name, "XNNPACK runs float32 well on this CPU."))
    return notes


def profile_modes(results: dict[str, ConversionResult], threads: int, seed: int,
                  progress: bool | None) -> dict[str, Any] | None:
    """Every mode's per-operator profile on this host, side by side: the ``edgeq/profile-comparison`` dict."""
    if not results:
        return None
    params = ProfileParams(threads=threads, seed=seed)
    profiles = []
    with task_progress("profiling modes", len(results), progress) as tick:
        for res in results.values():
            profiles.append(profile_model(res.model_bytes, params))
            tick()
    return compare_profiles(profiles, list(results)).to_dict()


def _ignore_setting(ignore_index: IgnoreLike) -> int | list[int] | None:
    """The ``ignore_index`` a segmenter's metadata records: one value, a list, or None for none."""
    values = parse_ignore(ignore_index)
    return None if not values else values[0] if len(values) == 1 else list(values)


def _label_names(labels: Sequence[str] | str | os.PathLike[str]) -> tuple[str, ...]:
    return read_labels(labels) if isinstance(labels, (str, os.PathLike)) else tuple(str(n) for n in labels)


def _reference_files(data: Prepared, results: dict[str, ConversionResult]) -> dict[str, bytes]:
    """``inputs.npz`` and ``reference.npz`` keyed as the converted models (none for a multi-output classifier,
    whose other outputs compare does not run)."""
    if not results:
        return {}
    model_bytes = next(iter(results.values())).model_bytes
    if data.run is not None:
        return data.run.files(model_bytes)
    return reference_files(model_bytes, data.x, [data.keras_out]) if data.loaded.num_outputs == 1 else {}
