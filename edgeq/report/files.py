"""The report folder: results.json, report.md, report.html, plots/ and models/, written all or nothing."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgeq_device.results.fileio import atomic_write_bytes, atomic_write_text, check_output_folder
from edgeq_device.results.report_json import dumps_json

from edgeq.errors import OutputExistsError
from edgeq.report.html import html_page
from edgeq.report.markdown import markdown
from edgeq.report.plots import plot_pngs
from edgeq.report.tables import Results, results_dict

__all__ = ["json_default", "write_report"]


def write_report(results: Results, folder: str | os.PathLike[str], overwrite: bool = False, plots: bool = True, *,
                 models: Mapping[str, bytes] | None = None,
                 samples: Mapping[str, Sequence[float]] | None = None,
                 extra: Mapping[str, bytes] | None = None) -> dict[str, Path]:
    """Write results.json, report.md, report.html, plots/*.png and models/*.tflite into ``folder``.

    Every target is checked before anything is written, so a refusal leaves the folder as it was.

    Args:
        results: the comparison's schema dict (or an object whose ``to_dict()`` gives it).
        folder: the report folder (created if missing).
        overwrite: replace report files that exist.
        plots: draw the plots (``plots/*.png``, and embedded in ``report.html``).
        models: ``.tflite`` bytes by file name, written into ``models/``.
        samples: the timed runs of each mode for the latency plot (see :func:`~edgeq.report.plots.plot_pngs`).
        extra: more files by name, written as they are (``inputs.npz``, ``reference.npz``).

    Raises:
        OutputExistsError: a report file exists and ``overwrite`` is False (nothing is written then).
        OutputError: ``folder`` cannot be written.
    """
    data = results_dict(results)
    out = Path(folder)
    pngs = plot_pngs(data, samples) if plots else {}
    files: dict[str, bytes] = {
        "results.json": (dumps_json(data, indent=2, default=json_default) + "\n").encode(),
        "report.md": markdown(data).encode(),
        "report.html": html_page(data, pngs).encode(),
    }
    files.update({f"plots/{name}": b for name, b in pngs.items()})
    files.update({f"models/{name}": b for name, b in (models or {}).items()})
    files.update(extra or {})
    targets = {name: out / name for name in files}
    clash = [str(p) for p in targets.values() if p.exists()]
    if clash and not overwrite:
        raise OutputExistsError(f"{len(clash)} report file(s) exist", argument="output", received=clash[0],
                                fix="choose another folder or pass overwrite=True (--force)")
    check_output_folder(out, argument="folder")
    written = {}
    for name, payload in files.items():
        if name.endswith((".md", ".html", ".json")):
            written[name] = atomic_write_text(targets[name], payload.decode(), overwrite=overwrite)
        else:
            written[name] = atomic_write_bytes(targets[name], payload, overwrite=overwrite)
    return written


def json_default(obj: Any) -> Any:
    """``json.dumps``' ``default`` for values JSON has no type for: a NumPy array or scalar as its
    value (``tolist()``), anything else as its ``str``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)
