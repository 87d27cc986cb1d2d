"""The keywords every evaluation takes, as one type: :class:`EvalOptions`.

:func:`~edgeq_device.evaluate`, :func:`~edgeq_device.tasks.registry.evaluate_arrays`,
:func:`~edgeq_device.tasks.fidelity.evaluate_fidelity`, :func:`~edgeq_device.tasks.detection_eval.evaluate_detection`,
:func:`~edgeq_device.tasks.segmentation.evaluate_segmentation` and :func:`~edgeq_device.tasks.registry.evaluate_task`
take them either as keywords (``evaluate(model, data, limit=500, threads=2)``) or as one
``options=EvalOptions(...)`` (what ``edgeq-device eval`` builds from its flags); keywords given
beside ``options`` replace its fields. They are documented here once:

- ``limit``: evaluate a seeded random sample of this many samples (default: all).
- ``seed``: the seed of that sample.
- ``workers``: interpreters run in parallel (default: one per core; 1 with a delegate).
- ``runtime``: the TFLite runtime, a name of :data:`~edgeq_device.run.runtime.RUNTIME_NAMES` or a
  :class:`~edgeq_device.run.runtime.Runtime` (default: the first found).
- ``threads``: threads per interpreter (default: the runtime's, 1 with several workers).
- ``xnnpack``: use the runtime's default CPU delegate (XNNPACK).
- ``delegate``: ``"edgetpu"`` or the path of an external delegate library.
- ``delegate_options``: options passed to the delegate, e.g. ``{"device": "usb:0"}``.
- ``progress``: True shows a progress bar on stderr (``EDGEQ_PROGRESS=0`` silences it), or a
  ``progress(done, total)`` callback.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Mapping, TypedDict, Union

from ..errors import InvalidArgumentError
from ..run.inference_pool import ProgressCallback
from ..run.runtime import Runtime

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["EvalKeywords", "EvalOptions", "ProgressCallback"]


class EvalKeywords(TypedDict, total=False):
    """The evaluation keywords, for ``**keywords: Unpack[EvalKeywords]`` (see the module documentation)."""

    limit: int | None
    seed: int
    workers: int | None
    runtime: Union[Runtime, str, None]
    threads: int | None
    xnnpack: bool
    delegate: str | None
    delegate_options: Mapping[str, str] | None
    progress: Union[bool, ProgressCallback]


@dataclass(frozen=True)
class EvalOptions:
    """How an evaluation runs: which samples, on which runtime and delegate, how many in parallel.

    Checked when built. Each field is documented in :mod:`edgeq_device.tasks.eval_options`.

    Raises:
        InvalidArgumentError: ``limit`` that is not a positive integer.
    """

    limit: int | None = None
    seed: int = 0
    workers: int | None = None
    runtime: Runtime | str | None = None
    threads: int | None = None
    xnnpack: bool = True
    delegate: str | None = None
    delegate_options: Mapping[str, str] | None = None
    progress: bool | ProgressCallback = False

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool) or not isinstance(self.limit, int)
                                       or self.limit < 1):
            raise InvalidArgumentError("must be a positive integer", argument="limit", received=self.limit,
                                       fix="give e.g. 500, or leave it out to use every sample")
        object.__setattr__(self, "delegate_options", dict(self.delegate_options or {}))

    @classmethod
    def of(cls, options: EvalOptions | None = None, **keywords: Unpack[EvalKeywords]) -> EvalOptions:
        """``options`` (default: every default) with the ``keywords`` given replacing its fields."""
        base = options if options is not None else cls()
        if not isinstance(base, EvalOptions):
            raise InvalidArgumentError("must be an EvalOptions", argument="options", received=type(base).__name__,
                                       fix="give EvalOptions(limit=..., ...), or the keywords themselves")
        unknown = sorted(set(keywords) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r} (the evaluation keywords are "
                            f"{', '.join(f.name for f in fields(cls))})")
        return replace(base, **keywords) if keywords else base

    def runner_keywords(self) -> dict[str, Any]:
        """What the inference loop takes: ``workers``, ``runtime``, ``threads``, ``xnnpack``, ``delegate``,
        ``delegate_options``."""
        return {"workers": self.workers, "runtime": self.runtime, "threads": self.threads, "xnnpack": self.xnnpack,
                "delegate": self.delegate, "delegate_options": self.delegate_options}
