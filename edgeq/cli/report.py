"""``edgeq report``: rewrite a comparison's report with what boards measured for its models."""

from __future__ import annotations

import json
from pathlib import Path

import click
from edgeq_device.results.fileio import check_output_folder

from edgeq.cli.options import db_option
from edgeq.cli.output import make_console
from edgeq.comparison.records import Comparison
from edgeq.errors import DataError

__all__ = ["report_cmd"]


@click.command("report")
@click.argument("folder", type=click.Path())
@db_option
def report_cmd(folder: str, db: str | None) -> None:
    """Rewrite FOLDER's report (from its results.json) with what boards measured for the same models.

    Deploy a model from FOLDER/models with `edgeq deploy --bench --eval`, then run this: report.md,
    report.html, results.json and the plots in FOLDER are written again with an "On boards" table
    (and, after `edgeq deploy --profile`, each board's time per operator).
    """
    path = Path(folder) / "results.json"
    if path.is_file():
        check_output_folder(folder, argument="FOLDER")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError("cannot read the comparison's results.json", argument="FOLDER", received=str(path),
                        fix="give the folder edgeq compare wrote (-o)") from exc
    comp = Comparison.from_dict(data)
    comp = comp.with_board_results(db)
    found = len(comp.boards)
    comp.save(folder, overwrite=True)
    profiles = len(comp.board_profiles)
    make_console().print(f"rewrote {folder}/report.html and report.md with {found} board measurement(s)"
                         + (f" and {profiles} per-operator profile(s)" if profiles else ""))

