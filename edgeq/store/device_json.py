"""Device results into the store: ``edgeq-device bench/eval/profile --json`` as :class:`Measurement` rows.

A device result is read only through ``edgeq_device``'s own schema: its
``"schema"`` key names the kind and version, and the kind's class
(:class:`~edgeq_device.measure.bench.BenchResult`,
:class:`~edgeq_device.tasks.eval_result.EvalResult`,
:class:`~edgeq_device.measure.profile.ProfileResult`) rebuilds it with ``from_dict``,
which also reads the previous versions of its JSON. The measurement's figures
are then that object's fields; nothing is guessed from other key names. The
model file, when it is on this machine and has the result's hash, adds what
a result may lack (the mode of a model without edgeq metadata, an eval's size).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from edgeq_device.errors import DataError, InvalidArgumentError, ModelFileError
from edgeq_device.measure.bench import BenchResult
from edgeq_device.measure.profile import ProfileResult
from edgeq_device.model.metadata import read_metadata
from edgeq_device.results.report_json import JsonResult, parse_schema
from edgeq_device.tasks.detection_eval import DetectionResult
from edgeq_device.tasks.eval_result import EvalResult
from edgeq_device.tasks.fidelity import FidelityResult
from edgeq_device.tasks.segmentation import SegmentationResult

from edgeq.store.records import Measurement, file_sha256

__all__ = ["DEVICE_RESULTS", "DeviceResult", "measurement_from_device", "parse_device_result", "read_device_json"]

#: The device results the store records, by the kind in their schema.
DeviceResult = Union[BenchResult, EvalResult, ProfileResult, FidelityResult, DetectionResult, SegmentationResult]
DEVICE_RESULTS: dict[str, type[DeviceResult]] = {
    "bench": BenchResult, "eval": EvalResult, "profile": ProfileResult, "fidelity": FidelityResult,
    "detection": DetectionResult, "segmentation": SegmentationResult}
_FIX = "give a file written by edgeq-device bench --json, eval --json or profile --json"
#: The device results of a task: stored as runs of kind ``eval`` with their task and figures.
_TASK_RESULTS = (FidelityResult, DetectionResult, SegmentationResult)


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = sorted(str(k) for k in obj)
        shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
        return f"a JSON object with keys [{shown}] and schema {obj.get('schema')!r}"
    return f"a JSON {type(obj).__name__}"


def parse_device_result(payload: Any, origin: str = "payload") -> DeviceResult:
    """Rebuild an ``edgeq-device`` bench, eval or profile result from its JSON dict.

    Raises:
        DataError: not edgeq-device bench/eval/profile JSON, a version newer than this edgeq reads,
            or a document that does not fit its schema (the message names ``origin``).
    """
    parsed = parse_schema(payload.get("schema")) if isinstance(payload, Mapping) else None
    if parsed is None or parsed[0] != "edgeq-device" or parsed[1] not in DEVICE_RESULTS:
        raise DataError("not edgeq-device JSON (no 'schema': 'edgeq-device/bench/N', '.../eval/N', "
                        "'.../profile/N', '.../fidelity/N', '.../detection/N' or '.../segmentation/N')",
                        argument=origin, received=_describe(payload), fix=_FIX)
    cls = DEVICE_RESULTS[parsed[1]]
    if parsed[2] > cls.VERSION:
        raise DataError(f"edgeq-device JSON of an unknown version {payload['schema']!r} (this edgeq reads "
                        f"up to {cls.schema()!r})", argument=origin, received=payload["schema"],
                        fix="upgrade edgeq to read it")
    try:
        return cls.from_dict(payload)
    except InvalidArgumentError as exc:
        raise DataError(f"{payload['schema']} JSON that does not fit its schema: {exc.message}",
                        argument=origin, received=_describe(payload), fix=_FIX) from exc


def _mode_from_model(path: Path) -> str | None:
    """The quantization mode in a ``.tflite``'s edgeq metadata, or None."""
    try:
        meta = read_metadata(path)
    except ModelFileError:  # a model we cannot read just has no known mode
        return None
    return None if meta is None else meta.mode


def _runtime_label(result: JsonResult) -> str:
    """The runtime's name, with the delegate when one ran (``litert+edgetpu``)."""
    rt = str(getattr(result, "runtime", None) or "unknown")
    delegate = getattr(result, "delegate", None)
    if delegate and str(delegate).lower() not in ("none", "cpu", "false"):
        rt = f"{rt}+{Path(str(delegate)).name if '/' in str(delegate) else delegate}"
    return rt


def measurement_from_device(payload: Mapping[str, Any], *, device: str | None = None, source: str = "device",
                            model_name: str | None = None, origin: str = "payload") -> Measurement:
    """Turn an ``edgeq-device`` bench/eval/profile result (its JSON dict) into a :class:`Measurement` (not stored).

    A profile's latency is the whole model's p50 measured in the same run; its operators stay
    in the payload (read them back with :func:`parse_device_result`).

    Args:
        payload: the parsed JSON.
        device: the board's label; None takes the name of the board the result describes.
        source: where it came from (``"device"``, ``"deploy"``, ...).
        model_name: a name for the model; None takes the model path's stem.
        origin: where the payload came from, for error messages (e.g. a file path).

    Raises:
        DataError: the payload is not edgeq-device bench/eval/profile JSON (see :func:`parse_device_result`).
    """
    result = parse_device_result(payload, origin)
    sha = result.model_sha256.lower()
    local = Path(result.model) if result.model and Path(result.model).is_file() else None
    same_file = local is not None and file_sha256(local) == sha
    mode = result.mode
    if mode is None and same_file:
        mode = _mode_from_model(local)  # type: ignore[arg-type]
    p50: float | None
    p90: float | None
    mean: float | None
    top1: float | None
    top5: float | None
    task, metric, metric2, sqnr, agree = _task_figures(result)
    if isinstance(result, BenchResult):
        size: int | None = result.model_size_bytes
        lat = result.latency
        p50, p90, mean = lat.p50_us, lat.p90_us, lat.mean_us
        top1 = top5 = None
    elif isinstance(result, ProfileResult):  # the whole model's p50, timed in the same run
        size = local.stat().st_size if same_file else None  # type: ignore[union-attr]
        p50, p90, mean = result.whole_p50_us, None, None
        top1 = top5 = None
    elif isinstance(result, _TASK_RESULTS):
        size = local.stat().st_size if same_file else None  # type: ignore[union-attr]
        p50 = p90 = mean = top1 = top5 = None
    else:
        size = local.stat().st_size if same_file else None  # type: ignore[union-attr]
        p50 = p90 = mean = None
        top1, top5 = result.top1, result.top5
    if model_name is None and result.model:
        model_name = Path(result.model).stem
    return Measurement(
        model_sha256=sha,
        model_name=model_name,
        mode=str(mode or "unknown"),
        device=device or result.board.name,
        runtime=_runtime_label(result),
        runtime_version=result.runtime_version,
        threads=threads if isinstance(threads := getattr(result, "threads", None), int) and threads > 0 else None,
        kind="eval" if isinstance(result, _TASK_RESULTS) else result.KIND,
        created=result.started,
        size_bytes=size,
        latency_p50_us=p50,
        latency_p90_us=p90,
        latency_mean_us=mean,
        accuracy_top1=top1,
        accuracy_top5=top5,
        agreement=agree,
        sqnr_db=sqnr,
        task=task,
        task_metric=metric,
        task_metric2=metric2,
        source=source,
        payload=dict(payload),
    )


def _task_figures(result: DeviceResult) -> tuple[str | None, float | None, float | None, float | None,
                                                 float | None]:
    """``(task, task_metric, task_metric2, sqnr_db, agreement)`` of a task's result (Nones for the others).

    Fidelity: the lowest finite output SQNR and the first vector output's arg-max agreement.
    """
    if isinstance(result, DetectionResult):
        return "detection", result.map, result.map50, None, None
    if isinstance(result, SegmentationResult):
        return "segmentation", result.miou, result.pixel_accuracy, None, None
    if isinstance(result, FidelityResult):
        finite = [o.sqnr_db for o in result.outputs if math.isfinite(o.sqnr_db)]
        agree = next((o.argmax_agreement for o in result.outputs if o.argmax_agreement is not None), None)
        return "fidelity", None, None, min(finite) if finite else None, agree
    return None, None, None, None, None


def read_device_json(path: str | os.PathLike[str], *, device: str | None = None,
                     model_name: str | None = None) -> Measurement:
    """Read one ``edgeq-device bench/eval --json`` file into a :class:`Measurement` (not stored).

    Raises:
        DataError: the file is missing, not JSON, or not edgeq-device JSON (the message names
            the file and what was found instead).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("no such file", argument=str(p), fix=_FIX) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the file: {exc}", argument=str(p), fix=_FIX) from exc
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not JSON ({exc.msg} at line {exc.lineno})", argument=str(p),
                        received=text[:40], fix=_FIX) from exc
    return measurement_from_device(payload, device=device, source="device", model_name=model_name,
                                   origin=str(p))
