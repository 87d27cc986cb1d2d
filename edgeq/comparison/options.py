"""What a comparison was asked to do: :class:`CompareOptions`, every setting of :func:`edgeq.compare` but the data.

Built once from ``compare``'s keywords and validated there (``__post_init__``), in the order
the errors were always raised; the steps (:mod:`edgeq.comparison.steps`) then read it and
never check an argument again. ``mode_list``, ``trained`` and ``thread_list`` are what the
keywords ``modes`` and ``threads`` resolve to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeq_device.model.int4 import runs_int4
from edgeq_device.run.runtime import resolve_runtime
from edgeq_device.tasks.masks import IgnoreLike, LabelMapLike

from edgeq.errors import InvalidArgumentError
from edgeq.quantize.modes import MODES, IOType, Mode, enum_arg
from edgeq.quantize.qat.sparsity import TRAINED_MODES, check_clusters, check_sparsity
from edgeq.store.resolve import StoreLike
from edgeq.targets.mcu.boards import Board

__all__ = ["TASKS", "CompareOptions"]

TASKS = ("classification", "detection", "segmentation")


@dataclass(frozen=True)
class CompareOptions:
    """The settings of one comparison (see :func:`edgeq.compare` for each), checked when built.

    Raises:
        InvalidArgumentError: naming the first setting that is wrong, what it got and the fix.
    """

    modes: Sequence[str | Mode] | str = "all"
    threads: Sequence[int] | None = None
    io: str | IOType = "float"
    samples: int = 200
    eval_samples: int | None = None
    seed: int = 0
    max_drop: float = 1.0
    prefer: str = "size"
    preprocess: Any = None
    labels: Sequence[str] | str | os.PathLike[str] | None = None
    runs: int = 50
    min_secs: float = 0.5
    max_secs: float = 20.0
    store: StoreLike = None
    progress: bool | None = None
    profile: bool = False
    task: str = "classification"
    annotations: str | os.PathLike[str] | None = None
    masks: str | os.PathLike[str] | None = None
    outputs: Mapping[str, str] | None = None
    class_offset: int = 1
    ignore_index: IgnoreLike = 255
    label_map: LabelMapLike = None
    train: Any = None
    clusters: int = 16
    sparsity: float = 0.5
    train_epochs: int = 2
    target: str | None = None
    mcu_board: Board | None = None
    mode_list: tuple[Mode, ...] = field(init=False)
    """The converter's modes to compare, in order."""
    trained: tuple[str, ...] = field(init=False)
    """The modes that fine-tune the model first (``qat``, ``clustered``, ``pruned``)."""
    thread_list: tuple[int, ...] = field(init=False)
    """Thread counts to time, sorted (default: 1 and all cores)."""

    def __post_init__(self) -> None:
        self._check_choices()
        trained, mode_list = self._resolve_modes()
        object.__setattr__(self, "trained", tuple(trained))
        object.__setattr__(self, "mode_list", tuple(mode_list))
        object.__setattr__(self, "thread_list", self._resolve_threads())

    def _check_choices(self) -> None:
        if self.target not in (None, "mcu"):
            raise InvalidArgumentError("unknown target", argument="target", received=self.target,
                                       fix="use 'mcu' or None")
        if self.prefer not in ("size", "latency"):
            raise InvalidArgumentError("unknown value", argument="prefer", received=self.prefer,
                                       fix="use 'size' or 'latency'")
        if not isinstance(self.max_drop, (int, float)) or self.max_drop < 0:
            raise InvalidArgumentError("must be a number of points >= 0", argument="max_drop",
                                       received=self.max_drop, fix="give e.g. 1.0 (one point of top-1 accuracy)")
        if self.task not in TASKS:
            raise InvalidArgumentError("unknown task", argument="task", received=self.task,
                                       fix="give classification, detection or segmentation")
        if self.task == "classification" and (self.annotations is not None or self.masks is not None):
            given = self.annotations if self.annotations is not None else self.masks
            raise InvalidArgumentError("annotations and masks are the truth of detection and segmentation",
                                       argument="annotations" if self.annotations is not None else "masks",
                                       received=str(given),
                                       fix="give --task detection (annotations) or --task segmentation (masks)")

    def _resolve_modes(self) -> tuple[list[str], list[Mode]]:
        modes = self.modes
        if isinstance(modes, str) and modes.lower() != "all":
            modes = [modes]
        trained = ([m for m in TRAINED_MODES if self.train is not None] if isinstance(modes, str)
                   else [str(m).lower() for m in modes if str(m).lower() in TRAINED_MODES])
        if trained and self.train is None:
            raise InvalidArgumentError(f"mode {trained[0]!r} fine-tunes the model and needs training data",
                                       argument="train", received=None,
                                       fix="give train= (labeled data), or leave the mode out")
        if self.train is not None:
            check_clusters(self.clusters)
            check_sparsity(self.sparsity)
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
        return trained, mode_list

    def _resolve_threads(self) -> tuple[int, ...]:
        cores = os.cpu_count() or 1
        thread_list = tuple(sorted(set(self.threads))) if self.threads else tuple(sorted({1, cores}))
        if any((not isinstance(t, int)) or t < 1 for t in thread_list):
            raise InvalidArgumentError("thread counts must be positive integers", argument="threads",
                                       received=self.threads, fix="give e.g. (1, 4)")
        return thread_list
