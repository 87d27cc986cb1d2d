"""The real ``edgetpu_compiler``: run it on a ``.tflite`` and parse what it says.

The prediction (:mod:`edgeq.targets.edgetpu.rules`) needs no compiler; where ``edgetpu_compiler``
is installed (x86-64 Linux), :func:`run_edgetpu_compiler` gives the compiler's own answer,
and :func:`parse_compiler_log` reads its console output or ``*_edgetpu.log`` file.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from edgeq_device.results.fileio import check_output_folder

from edgeq.errors import (
    CompilerNotFoundError,
    ConversionError,
    InvalidArgumentError,
    ModelFileError,
    OutputExistsError,
)

__all__ = ["CompilerNotFoundError", "CompilerReport", "OperatorStatus", "parse_compiler_log", "run_edgetpu_compiler"]


@dataclass(frozen=True)
class OperatorStatus:
    """One row of the compiler's operator table: op, count, status."""

    op: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        """True for ``Mapped to Edge TPU``."""
        return self.status.strip().lower() == "mapped to edge tpu"


@dataclass(frozen=True)
class CompilerReport:
    """What ``edgetpu_compiler`` said, parsed from its console output or ``*_edgetpu.log``.

    Sizes are bytes; fields the log does not contain are None.
    """

    compiler_version: str | None
    succeeded: bool
    input_model: str | None = None
    output_model: str | None = None
    operation_log: str | None = None
    input_size: int | None = None
    output_size: int | None = None
    on_chip_memory_used: int | None = None
    on_chip_memory_remaining: int | None = None
    off_chip_memory_used: int | None = None
    num_edgetpu_subgraphs: int | None = None
    total_ops: int | None = None
    ops_on_edgetpu: int | None = None
    ops_on_cpu: int | None = None
    operators: tuple[OperatorStatus, ...] = ()
    errors: tuple[str, ...] = ()
    log: str = field(default="", repr=False)

    @property
    def mapped(self) -> dict[str, int]:
        """Ops mapped to the Edge TPU: count by op."""
        out: dict[str, int] = {}
        for r in self.operators:
            if r.mapped:
                out[r.op] = out.get(r.op, 0) + r.count
        return out

    @property
    def not_mapped(self) -> dict[str, dict[str, int]]:
        """Ops left on the CPU: by op, count by reason."""
        out: dict[str, dict[str, int]] = {}
        for r in self.operators:
            if not r.mapped:
                d = out.setdefault(r.op, {})
                d[r.status] = d.get(r.status, 0) + r.count
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the raw log)."""
        return {
            "compiler_version": self.compiler_version, "succeeded": self.succeeded,
            "input_model": self.input_model, "output_model": self.output_model,
            "operation_log": self.operation_log, "input_size": self.input_size,
            "output_size": self.output_size, "on_chip_memory_used": self.on_chip_memory_used,
            "on_chip_memory_remaining": self.on_chip_memory_remaining,
            "off_chip_memory_used": self.off_chip_memory_used,
            "num_edgetpu_subgraphs": self.num_edgetpu_subgraphs, "total_ops": self.total_ops,
            "ops_on_edgetpu": self.ops_on_edgetpu, "ops_on_cpu": self.ops_on_cpu,
            "mapped": self.mapped, "not_mapped": self.not_mapped, "errors": list(self.errors),
        }


_UNITS = {"B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_RE = re.compile(r"([\d.]+)\s*([KMG]?i?B)\b", re.IGNORECASE)
_ROW_RE = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def _size(text: str) -> int | None:
    m = _SIZE_RE.search(text)
    if not m:
        return None
    unit = _UNITS.get(m.group(2).upper())
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    return round(value * unit) if unit is not None and math.isfinite(value) else None


def parse_compiler_log(text: str) -> CompilerReport:
    """Parse ``edgetpu_compiler`` output (console text, with or without ``-s``, or the ``.log`` file).

    Recognized lines: ``Edge TPU Compiler version``, ``Input model:``/``Input:``,
    ``Output model:``/``Output:``, ``Input size:``, ``Output size:``, ``On-chip
    memory used/remaining for caching model parameters:``, ``Off-chip memory used
    for streaming uncached model parameters:``, ``Number of Edge TPU subgraphs:``,
    ``Total number of operations:``, ``Operation log:``, ``Number of operations that
    will run on Edge TPU/CPU:``, the ``Operator  Count  Status`` table, and error
    lines (``Compilation failed``, ``Internal compiler error``, ``ERROR:``,
    ``Invalid model``).
    """
    if not isinstance(text, str):
        raise InvalidArgumentError("expected the compiler's output as text", argument="text",
                                   received=type(text).__name__, fix="pass the log file's contents as str")
    info: dict[str, Any] = {}
    rows: list[OperatorStatus] = []
    errors: list[str] = []
    in_table = False
    keys = {
        "input model": "input_model", "input": "input_model", "output model": "output_model",
        "output": "output_model", "operation log": "operation_log",
    }
    sizes = {
        "input size": "input_size", "output size": "output_size",
        "on-chip memory used for caching model parameters": "on_chip_memory_used",
        "on-chip memory remaining for caching model parameters": "on_chip_memory_remaining",
        "off-chip memory used for streaming uncached model parameters": "off_chip_memory_used",
    }
    counts = {
        "number of edge tpu subgraphs": "num_edgetpu_subgraphs", "total number of operations": "total_ops",
        "number of operations that will run on edge tpu": "ops_on_edgetpu",
        "number of operations that will run on cpu": "ops_on_cpu",
    }
    succeeded = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        low = line.lower()
        m = re.match(r"edge tpu compiler version\s+(\S+)", low)
        if m:
            info["compiler_version"] = line.split()[-1]
            continue
        if re.match(r"^operator\s+count\s+status$", low):
            in_table = True
            continue
        if in_table:
            r = _ROW_RE.match(line)
            if r:
                rows.append(OperatorStatus(r.group(1), int(r.group(2)), r.group(3)))
                continue
            in_table = False
        if "compiled successfully" in low or "compilation succeeded" in low:
            succeeded = True
        if (low.startswith(("error", "compilation failed", "internal compiler error", "invalid model"))
                or "model not quantized" in low):
            errors.append(line)
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            k = key.strip().lower()
            value = value.strip()
            if k in keys:
                info[keys[k]] = value
            elif k in sizes:
                info[sizes[k]] = _size(value)
            elif k in counts and value.isdigit():
                info[counts[k]] = int(value)
    if rows and "ops_on_edgetpu" not in info:
        info["ops_on_edgetpu"] = sum(r.count for r in rows if r.mapped)
        info["ops_on_cpu"] = sum(r.count for r in rows if not r.mapped)
    elif "ops_on_edgetpu" not in info and succeeded and info.get("total_ops") is not None \
            and "not all operations" not in text.lower():
        info["ops_on_edgetpu"], info["ops_on_cpu"] = info["total_ops"], 0
    if "total_ops" not in info and rows:
        info["total_ops"] = sum(r.count for r in rows)
    if not errors and not succeeded and rows:
        succeeded = True  # the .log file has no "compiled successfully" line
    if errors:
        succeeded = False
    return CompilerReport(compiler_version=info.pop("compiler_version", None), succeeded=succeeded,
                          operators=tuple(rows), errors=tuple(errors), log=text, **info)


_INSTALL_FIX = ("install the Edge TPU Compiler (Debian package 'edgetpu-compiler' from Coral's apt "
                "repository, x86-64 Linux only; see coral.ai/docs/edgetpu/compiler) and put "
                "edgetpu_compiler on PATH, or use Coral's compiler notebook")

PathLike = Union[str, "os.PathLike[str]"]


def run_edgetpu_compiler(tflite_path: PathLike, out_dir: PathLike, *, overwrite: bool = False,
                         timeout: float = 600.0, extra_args: tuple[str, ...] = ()) -> CompilerReport:
    """Compile a ``.tflite`` with ``edgetpu_compiler -s`` into ``out_dir`` and parse what it says.

    Writes ``<name>_edgetpu.tflite`` and ``<name>_edgetpu.log`` into ``out_dir``.

    Args:
        tflite_path: a full-int8 ``.tflite`` (see :func:`edgeq.targets.edgetpu.rules.check_edgetpu_ready`).
        out_dir: folder for the compiled model and its log (created if missing).
        overwrite: replace an existing ``<name>_edgetpu.tflite`` in ``out_dir``.
        timeout: seconds before the compiler is stopped.
        extra_args: more compiler flags, e.g. ``("--num_segments", "2")``.

    Raises:
        CompilerNotFoundError: ``edgetpu_compiler`` is not on PATH.
        ModelFileError: ``tflite_path`` does not exist.
        OutputExistsError: the compiled model exists and ``overwrite`` is False.
        OutputError: ``out_dir`` cannot be written.
        ConversionError: the compiler failed (its message is included; ``.report`` holds the parse).
    """
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        raise CompilerNotFoundError("edgetpu_compiler is not installed", argument="edgetpu_compiler",
                                    received=os.environ.get("PATH", ""), fix=_INSTALL_FIX)
    src = Path(os.fspath(tflite_path))
    if not src.is_file():
        raise ModelFileError("model file not found", argument="tflite_path", received=str(src),
                             fix="give the path of an existing .tflite file")
    out = Path(os.fspath(out_dir))
    target = out / f"{src.stem}_edgetpu.tflite"
    if target.exists() and not overwrite:
        raise OutputExistsError("compiled model exists", argument="out_dir", received=str(target),
                                fix="choose another out_dir or pass overwrite=True")
    check_output_folder(out, argument="out_dir")
    out.mkdir(parents=True, exist_ok=True)
    print(f"running edgetpu_compiler on {src.name} ...", file=sys.stderr)
    try:
        proc = subprocess.run([exe, "-s", "-o", str(out), *extra_args, str(src)], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"edgetpu_compiler did not finish within {timeout:g} s", argument="timeout",
                              received=timeout, fix="raise the timeout, or compile a smaller model") from exc
    text = (proc.stdout or "") + ("\n" + proc.stderr if proc.stderr else "")
    report = parse_compiler_log(text)
    if proc.returncode != 0 or not report.succeeded:
        first = report.errors[0] if report.errors else (text.strip().splitlines() or ["no output"])[-1]
        err = ConversionError(f"edgetpu_compiler failed (exit {proc.returncode}): {first}",
                              argument="tflite_path", received=str(src),
                              fix="run check_edgetpu_ready() on the model and fix what it lists")
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report
