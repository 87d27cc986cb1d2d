"""Compare every mode side by side: which ``.tflite`` should I ship?

:func:`compare` converts a Keras model in every mode, then for the Keras model and
each ``.tflite`` measures, on the same evaluation images:

- file size and its ratio to float32;
- top-1 / top-5 accuracy and the change from the Keras model in points;
- agreement with the Keras model's top-1;
- output fidelity against the Keras model: SQNR (dB), max abs error, cosine;
- host latency p50/p90 for each thread count, through ``edgeq_device``'s harness, the
  modes timed in interleaved rounds, with a 95% bootstrap interval of the p50;
- conversion time, multiply-accumulates and achieved MAC/s;
- with ``profile=True``, every operator of each mode timed alone at the first thread count
  (:func:`edgeq_device.profile.profile_model`), the modes side by side per operator
  (:class:`~edgeq.measure.profile.ProfileComparison`).

It then recommends the smallest (or fastest) mode within an accuracy budget and
says why in one sentence (:mod:`edgeq.comparison.recommend`). Every measurement can
go to the results store. The images are preprocessed once by ``edgeq_device`` and
run through its one evaluation loop; the Keras model sees the very same arrays
(:mod:`edgeq.measure.evaluation`, :mod:`edgeq.measure.fidelity`). The result is a
:class:`~edgeq.comparison.records.Comparison`.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from edgeq_device.analysis import analyze_flat_model
from edgeq_device.evaluation import predict_arrays, read_labels
from edgeq_device.int4 import INT4_NOTE, runs_int4
from edgeq_device.masks import IgnoreLike, LabelMapLike, parse_ignore
from edgeq_device.profile import ProfileParams, profile_model
from edgeq_device.runtime import resolve_runtime
from edgeq_device.sysinfo import board_info

from edgeq.comparison.recommend import LATENCY_ROUNDS, latency_summary, recommend, round_levels
from edgeq.comparison.records import KERAS, Comparison, ModeRow
from edgeq.comparison.task_rows import TaskRun, reference_files
from edgeq.deprecation import renamed_arguments
from edgeq.errors import InvalidArgumentError
from edgeq.inputs.data import as_source
from edgeq.inputs.models import load_model
from edgeq.measure.evaluation import keras_outputs, load_eval_arrays, match_labels, top_k_accuracy
from edgeq.measure.fidelity import argmax_agreement, fidelity
from edgeq.measure.latency import interleaved_rounds
from edgeq.measure.profile import compare_profiles
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import task_progress
from edgeq.quantize.calibration import default_preprocess, warnings_once
from edgeq.quantize.converter import convert
from edgeq.quantize.modes import MODES, IOType, Mode, enum_arg
from edgeq.quantize.qat.sparsity import TRAINED_MODES, check_clusters, check_sparsity, trained_results
from edgeq.quantize.result import ConversionResult
from edgeq.store.db import Measurement, ResultsStore, file_sha256
from edgeq.store.resolve import StoreLike, resolve_store

__all__ = ["compare", "record"]


_SLOW_WHY = {
    "dynamic": "dynamic-range models quantize activations on the fly at every inference, and XNNPACK "
               "runs float32 well.",
    "int16x8": "int16x8 kernels are the reference ones, without XNNPACK or SIMD-optimized paths.",
    "float16": "float16 weights are turned back to float32 at load time; speed should match float32.",
    "int4": "int4 weights are unpacked and activations quantized on the fly at every inference (no XNNPACK "
            "path for 4-bit filters), while XNNPACK runs float32 well.",
}


@renamed_arguments(budget="max_drop", show_progress="progress")
@quiet_native_logs()
@warnings_once
def compare(
    model: Any,
    *,
    calibration: Any,
    evaluation: Any,
    modes: Sequence[str | Mode] | str = "all",
    threads: Sequence[int] | None = None,
    io: str | IOType = "float",
    samples: int = 200,
    eval_samples: int | None = None,
    seed: int = 0,
    max_drop: float = 1.0,
    prefer: str = "size",
    preprocess: Any = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    runs: int = 50,
    min_secs: float = 0.5,
    max_secs: float = 20.0,
    store: StoreLike = None,
    progress: bool | None = None,
    profile: bool = False,
    task: str = "classification",
    annotations: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    outputs: Mapping[str, str] | None = None,
    class_offset: int = 1,
    ignore_index: IgnoreLike = 255,
    label_map: LabelMapLike = None,
    train: Any = None,
    clusters: int = 16,
    sparsity: float = 0.5,
    train_epochs: int = 2,
) -> Comparison:
    """Convert ``model`` in every mode and measure each against the Keras model.

    Args:
        model: a Keras 3 / tf_keras model, a ``.keras``/``.h5`` file or a SavedModel folder
            (single input).
        calibration: calibration data (as for :func:`edgeq.convert`).
        evaluation: evaluation data: a labeled image folder, ``(x, y)`` arrays, ``.npz``...; without
            labels, accuracy is left out and agreement with the Keras model decides.
        modes: ``"all"`` or a list of modes.
        threads: thread counts to time (default: 1 and all cores).
        io: I/O type of the int8 model (``float``, ``int8``, ``uint8``).
        samples: calibration samples.
        eval_samples: evaluate on a seeded subset of this many (default: all).
        max_drop: the accuracy budget: points of top-1 a recommended mode may lose (default 1)
            (``budget=`` is its old name, accepted for one release).
        prefer: ``"size"`` (smallest within budget) or ``"latency"`` (fastest).
        labels: class names in output order (or a text file, one per line), stored in the models'
            metadata; the evaluation folder's class folders are matched to them by name. Default:
            the calibration folder's classes, else the evaluation folder's (integer folder names
            are their output, other names sorted as Keras does; see :mod:`edgeq_device.images`).
        runs, min_secs, max_secs: latency loop per mode and thread count (see ``edgeq_device.bench``),
            in total over ``LATENCY_ROUNDS`` rounds that interleave the modes.
        store: where every measurement is recorded: a :class:`~edgeq.ResultsStore`, a database path,
            True for the default store (``$EDGEQ_DB`` or ``~/.edgeq/results.db``), None/False for none.
        progress: progress on stderr.
        profile: also time every operator of each mode alone on this host, at the first thread
            count (``Comparison.profile``; the report's "Per operator" section and plot).
        task: ``"classification"`` (top-1), ``"detection"`` (COCO mAP@[.5:.95] and mAP@.5; ``evaluation``
            a folder of images and ``annotations`` a COCO ``instances.json``) or ``"segmentation"``
            (mIoU and pixel accuracy; ``masks`` a folder of class-index PNG/BMP named like the images).
            The budget ``max_drop`` is then in points of mAP or mIoU. Every mode is scored by
            ``edgeq_device``'s one evaluation loop, the Keras model by the same metric functions.
        annotations, masks: the truth of detection and segmentation.
        outputs: a detector's outputs by role (``{"boxes": NAME, "classes": NAME, "scores": NAME,
            "count": NAME}``, a Keras output name or index); default: found by name.
        class_offset: detection: category id = model class + this.
        ignore_index: segmentation: the mask values that count nowhere: one, several or a range
            (``"250-255"``); None for none.
        label_map: segmentation: maps the masks' values to classes first: ``"cityscapes"`` (label
            IDs -> train IDs, their names the default class names), a JSON/CSV file or a dict
            (see :mod:`edgeq_device.masks`).

        train: labeled training data: enables the modes that fine-tune the model, ``qat``,
            ``clustered`` (``clusters`` per kernel) and ``pruned`` (to ``sparsity``), each
            ``train_epochs`` of fine-tuning then int8 (see :mod:`edgeq.quantize.qat.sparsity`);
            ``modes="all"`` then takes them too.
    The comparison also keeps the evaluation inputs and the Keras model's outputs on them
    (``Comparison.files``: ``inputs.npz``, ``reference.npz``, written by ``save``) for
    ``edgeq-device eval --inputs --reference`` on a board.

    Raises:
        InvalidArgumentError, DataError, CalibrationError, ConversionError and the errors of convert.
    """
    if prefer not in ("size", "latency"):
        raise InvalidArgumentError("unknown value", argument="prefer", received=prefer, fix="use 'size' or 'latency'")
    if not isinstance(max_drop, (int, float)) or max_drop < 0:
        raise InvalidArgumentError("must be a number of points >= 0", argument="max_drop", received=max_drop,
                                   fix="give e.g. 1.0 (one point of top-1 accuracy)")
    if task not in ("classification", "detection", "segmentation"):
        raise InvalidArgumentError("unknown task", argument="task", received=task,
                                   fix="give classification, detection or segmentation")
    if task == "classification" and (annotations is not None or masks is not None):
        raise InvalidArgumentError("annotations and masks are the truth of detection and segmentation",
                                   argument="annotations" if annotations is not None else "masks",
                                   received=str(annotations if annotations is not None else masks),
                                   fix="give --task detection (annotations) or --task segmentation (masks)")
    if isinstance(modes, str) and modes.lower() != "all":
        modes = [modes]
    trained = ([m for m in TRAINED_MODES if train is not None] if isinstance(modes, str)
               else [str(m).lower() for m in modes if str(m).lower() in TRAINED_MODES])
    if trained and train is None:
        raise InvalidArgumentError(f"mode {trained[0]!r} fine-tunes the model and needs training data",
                                   argument="train", received=None, fix="give train= (labeled data), or leave the "
                                   "mode out")
    if train is not None:
        check_clusters(clusters)
        check_sparsity(sparsity)
    mode_list = list(MODES) if isinstance(modes, str) else [
        enum_arg(Mode, m, "modes", [v.value for v in Mode] + list(TRAINED_MODES)) for m in modes
        if str(m).lower() not in TRAINED_MODES]
    if not mode_list and not trained:
        raise InvalidArgumentError("no modes to compare", argument="modes", received=modes,
                                   fix="give 'all' or modes such as ['int8', 'float16']")
    if Mode.INT4 in mode_list and not runs_int4(host_runtime := resolve_runtime()):
        raise InvalidArgumentError(
            f"mode 'int4' needs a runtime with int4 kernels; this host measures with {host_runtime.name} "
            f"{host_runtime.version}", argument="modes", received="int4",
            fix="install LiteRT (pip install ai-edge-litert) or leave int4 out of --modes")
    cores = os.cpu_count() or 1
    thread_list = tuple(sorted(set(threads))) if threads else tuple(sorted({1, cores}))
    if any((not isinstance(t, int)) or t < 1 for t in thread_list):
        raise InvalidArgumentError("thread counts must be positive integers", argument="threads",
                                   received=threads, fix="give e.g. (1, 4)")
    loaded = load_model(model)
    if len(loaded.inputs) != 1:
        raise InvalidArgumentError("compare takes single-input models", argument="model",
                                   received=[s.name for s in loaded.inputs], fix="use convert() and evaluate() per input")
    pre = preprocess or default_preprocess(loaded.inputs[0])
    run: TaskRun | None = None
    if task != "classification":
        given_names = None if labels is None else _label_names(labels)
        run = TaskRun.start(task, loaded, evaluation, pre, annotations=annotations, masks=masks, outputs=outputs,
                            class_offset=class_offset, ignore_index=ignore_index, label_map=label_map,
                            class_names=given_names,
                            limit=eval_samples, seed=seed, progress=progress)
        x, y, keras_out = run.data.x, None, run.keras_outputs[0].reshape(len(run.data.x), -1)
        calib = as_source(calibration, pre)
        names, label_note, eval_desc = given_names, "", f"{run.data.data} ({task})"
    else:
        eval_src = as_source(evaluation, pre, argument="evaluation")
        x, y = load_eval_arrays(eval_src, eval_samples, seed)
        keras_out = keras_outputs(loaded, x)
        calib = as_source(calibration, pre)
        names, y, label_note = match_labels(labels, calib, eval_src, y, keras_out.shape[1])
        eval_desc = eval_src.description
    labeled = y is not None or run is not None
    keras_top1 = top_k_accuracy(keras_out, y, 1) if y is not None else None
    rows = [ModeRow(
        name=KERAS, mode=KERAS, io="float", size_bytes=None, size_ratio=None, top1=keras_top1,
        top5=top_k_accuracy(keras_out, y, 5) if y is not None else None,
        top1_change_points=0.0 if y is not None else None,
        agreement=1.0, sqnr_db=None, max_abs_error=0.0, cosine=1.0, latency_us={},
        **(run.keras_fields() if run is not None else {}))]
    results: dict[str, ConversionResult] = {}
    # A detector's or segmenter's models carry their task, so a board evaluates them without flags.
    task_kw: dict[str, Any] = {} if run is None else {
        "task": task, "task_settings": ({"class_offset": class_offset} if task == "detection" else
                                        {"ignore_index": _ignore_setting(ignore_index)}
                                        if task == "segmentation" else {})}
    for mode in mode_list:
        calibrated = mode.needs_calibration or mode is Mode.INT4
        res = convert(loaded, mode, calibration=calib if calibrated else None, samples=samples,
                      seed=seed, io=io if mode is Mode.INT8 else "float", preprocess=pre,
                      labels=names if names and run is None else (), progress=progress, **task_kw)
        results[mode.value] = res
    results.update(trained_results(loaded, trained, train,
                                   clusters=clusters, sparsity=sparsity, epochs=train_epochs, calibration=calib,
                                   samples=samples, seed=seed, io=io, preprocess=pre, labels=names,
                                   progress=progress))
    f32_size = results["float32"].size_bytes if "float32" in results else None
    round_runs = max(1, -(-runs // LATENCY_ROUNDS))
    measured: dict[str, dict[str, Any]] = {}
    with task_progress("measuring modes", len(results) + LATENCY_ROUNDS * len(thread_list),
                       progress) as tick:
        for name, res in results.items():
            out = predict_arrays(res.model_bytes, x, workers=None) if run is None else None
            tick()
            measured[name] = {"out": out, "rounds": {t: [] for t in thread_list}}
        # Latency in rounds, the modes interleaved: see LATENCY_ROUNDS.
        rounds = interleaved_rounds({name: res.model_bytes for name, res in results.items()}, thread_list,
                                    LATENCY_ROUNDS, round_runs, min_secs / LATENCY_ROUNDS,
                                    max_secs / LATENCY_ROUNDS, seed=seed, tick=tick)
        for name in results:
            measured[name]["rounds"] = rounds[name]
        levels = {t: round_levels([measured[name]["rounds"][t] for name in results]) for t in thread_list}
    task_fields = {name: run.measure(name, res.model_bytes) for name, res in results.items()} if run else {}
    for i, (name, res) in enumerate(results.items()):
        out = measured[name]["out"]
        if run is None:
            fid = fidelity(keras_out, out)
            fields: dict[str, Any] = {"agreement": argmax_agreement(keras_out, out), **fid}
        else:
            fields = task_fields[name]
        top1 = top_k_accuracy(out, y, 1) if y is not None else None
        lat = {t: latency_summary(measured[name]["rounds"][t], None if (lv := levels[t]) is None else lv[i])
               for t in thread_list}
        samples_us = {t: [v for r in measured[name]["rounds"][t] for v in r] for t in thread_list}
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
            compressed_size_bytes=res.compressed_size))
    notes = [f"int4: {INT4_NOTE}"] if Mode.INT4 in mode_list else []
    notes += [label_note] if label_note else []
    f32 = next((r for r in rows if r.name == "float32"), None)
    for r in rows[1:]:
        if f32 is None or r is f32:
            continue
        for t in thread_list:
            a, b = r.p50(t), f32.p50(t)
            if a and b and a > b * 1.05:
                notes.append(f"{r.name} is slower than float32 on this CPU at {t} thread{'s' if t > 1 else ''} "
                             f"({a / 1000:.3f} ms vs {b / 1000:.3f} ms p50): quantized is not always faster; "
                             + _SLOW_WHY.get(r.name, "XNNPACK runs float32 well on this CPU."))
    rec = recommend(rows, float(max_drop), prefer, thread_list[0], labeled, task)
    prof_doc = _profile_modes(results, thread_list[0], seed, progress) if profile else None
    board = board_info()
    comp = Comparison(
        model_name=results[next(iter(results))].source_name if results else loaded.name,
        rows=tuple(rows), recommendation=rec, threads=thread_list, evaluation=eval_desc,
        eval_images=len(x), labeled=labeled, notes=tuple(notes), board=board.to_dict(),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), results=results,
        profile=prof_doc, task=task, task_details=run.details(KERAS) if run is not None else None,
        files=_reference_files(run, results, loaded, x, keras_out))
    if store is not None and store is not False:
        record(comp, store)
    return comp


def _ignore_setting(ignore_index: IgnoreLike) -> int | list[int] | None:
    """The ``ignore_index`` a segmenter's metadata records: one value, a list, or None for none."""
    values = parse_ignore(ignore_index)
    return None if not values else values[0] if len(values) == 1 else list(values)


def _label_names(labels: Sequence[str] | str | os.PathLike[str]) -> tuple[str, ...]:
    return read_labels(labels) if isinstance(labels, (str, os.PathLike)) else tuple(str(n) for n in labels)


def _reference_files(run: TaskRun | None, results: dict[str, ConversionResult], loaded: Any, x: np.ndarray,
                     keras_out: np.ndarray) -> dict[str, bytes]:
    """``inputs.npz`` and ``reference.npz`` keyed as the converted models (none for a multi-output classifier,
    whose other outputs compare does not run)."""
    if not results:
        return {}
    model_bytes = next(iter(results.values())).model_bytes
    if run is not None:
        return run.files(model_bytes)
    return reference_files(model_bytes, x, [keras_out]) if loaded.num_outputs == 1 else {}


def _profile_modes(results: dict[str, ConversionResult], threads: int, seed: int,
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
