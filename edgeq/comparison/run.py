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
  (:func:`edgeq_device.measure.profile.profile_model`), the modes side by side per operator
  (:class:`~edgeq.measure.profile.ProfileComparison`).

It then recommends the smallest (or fastest) mode within an accuracy budget and
says why in one sentence (:mod:`edgeq.comparison.recommend`). The keywords become one
validated :class:`~edgeq.comparison.options.CompareOptions`; the steps (prepare, convert,
measure, note, recommend) are :mod:`edgeq.comparison.steps`; storing is
:mod:`edgeq.comparison.store`. Every measurement can
go to the results store. The images are preprocessed once by ``edgeq_device`` and
run through its one evaluation loop; the Keras model sees the very same arrays
(:mod:`edgeq.measure.evaluation`, :mod:`edgeq.measure.fidelity`). The result is a
:class:`~edgeq.comparison.records.Comparison`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from edgeq_device.tasks.masks import IgnoreLike, LabelMapLike

from edgeq.comparison.options import CompareOptions
from edgeq.comparison.records import Comparison
from edgeq.comparison.steps import run_plan
from edgeq.comparison.store import record
from edgeq.deprecation import renamed_arguments
from edgeq.nativelog import quiet_native_logs
from edgeq.quantize.calibration import warnings_once
from edgeq.quantize.modes import IOType, Mode
from edgeq.store.resolve import StoreLike
from edgeq.targets.mcu.boards import Board

__all__ = ["compare", "record"]


@renamed_arguments(budget="max_drop", show_progress="progress")
@quiet_native_logs()
@warnings_once
def compare(
    model: Any, *, calibration: Any, evaluation: Any, modes: Sequence[str | Mode] | str = "all",
    threads: Sequence[int] | None = None, io: str | IOType = "float", samples: int = 200,
    eval_samples: int | None = None, seed: int = 0, max_drop: float = 1.0, prefer: str = "size",
    preprocess: Any = None, labels: Sequence[str] | str | os.PathLike[str] | None = None, runs: int = 50,
    min_secs: float = 0.5, max_secs: float = 20.0, store: StoreLike = None, progress: bool | None = None,
    profile: bool = False, task: str = "classification", annotations: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None, outputs: Mapping[str, str] | None = None, class_offset: int = 1,
    ignore_index: IgnoreLike = 255, label_map: LabelMapLike = None, train: Any = None, clusters: int = 16, sparsity: float = 0.5,
    train_epochs: int = 2, target: str | None = None, mcu_board: Board | None = None,
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
            are their output, other names sorted as Keras does; see :mod:`edgeq_device.run.images`).
        runs, min_secs, max_secs: latency loop per mode and thread count (see ``edgeq_device.measure.bench``),
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
            (see :mod:`edgeq_device.tasks.masks`).

        train: labeled training data: enables the modes that fine-tune the model, ``qat``,
            ``clustered`` (``clusters`` per kernel) and ``pruned`` (to ``sparsity``), each
            ``train_epochs`` of fine-tuning then int8 (see :mod:`edgeq.quantize.qat.sparsity`);
            ``modes="all"`` then takes them too.
        target: ``"mcu"`` adds each mode's microcontroller figures (TFLM support, arena, flash; a
            row's ``mcu``), with ``mcu_board`` whether it fits (:mod:`edgeq.targets.mcu`).
    The comparison also keeps the evaluation inputs and the Keras model's outputs on them
    (``Comparison.files``: ``inputs.npz``, ``reference.npz``, written by ``save``) for
    ``edgeq-device eval --inputs --reference`` on a board.

    Raises:
        InvalidArgumentError, DataError, CalibrationError, ConversionError and the errors of convert.
    """
    opts = CompareOptions(
        modes=modes, threads=threads, io=io, samples=samples, eval_samples=eval_samples, seed=seed,
        max_drop=max_drop, prefer=prefer, preprocess=preprocess, labels=labels, runs=runs, min_secs=min_secs,
        max_secs=max_secs, store=store, progress=progress, profile=profile, task=task, annotations=annotations,
        masks=masks, outputs=outputs, class_offset=class_offset, ignore_index=ignore_index, label_map=label_map, train=train,
        clusters=clusters, sparsity=sparsity, train_epochs=train_epochs, target=target, mcu_board=mcu_board)
    comp = run_plan(model, calibration, evaluation, opts)
    if store is not None and store is not False:
        record(comp, store)
    return comp
