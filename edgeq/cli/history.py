"""The results store on the command line: ``edgeq store import`` records device JSON, ``edgeq history`` lists
runs and finds regressions."""

from __future__ import annotations

from typing import Any

import click
from edgeq_device.cli.clikit import Choice
from edgeq_device.results.report_json import dumps_json

from edgeq.cli.options import (
    MODE_NAMES,
    NAMED_MODE_NAMES,
    check_db,
    check_json_out,
    db_option,
    force_option,
    format_option,
    json_option,
    write_json_out,
)
from edgeq.cli.output import print_rows
from edgeq.errors import InvalidArgumentError
from edgeq.store.db import ResultsStore
from edgeq.store.records import TASK_METRICS

__all__ = ["history_cmd", "store_group"]


@click.group("store")
def store_group() -> None:
    """Record measurements in the results store (an SQLite file)."""


@store_group.command("import")
@click.argument("files", nargs=-1, required=True, metavar="FILE.json...")
@click.option("--device", metavar="LABEL", default=None,
              help="Device label to record (default: taken from the file's sysinfo).")
@db_option
def store_import(files: tuple[str, ...], device: str | None, db: str | None) -> None:
    """Record JSON files written by `edgeq-device bench --json` or `edgeq-device eval --json`.

    Every file is checked before any is recorded; a file already in the store is not
    recorded twice.
    """
    check_db(db)
    measurements = [ResultsStore.read_device_json(f, device=device) for f in files]
    with ResultsStore(db) as store:
        for f, m in zip(files, measurements):
            row_id, new = store.record(m)
            what = "recorded as" if new else "already recorded as"
            click.echo(f"{f}: {what} run #{row_id} ({m.kind}, {m.label}, {m.mode}, {m.device}, "
                       f"{m.runtime}, {m.threads or 'default'} threads)")


def _parse_fraction(text: str, option: str) -> float:
    """'10%' -> 0.10; '0.1' -> 0.1."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InvalidArgumentError("not a percentage or fraction", argument=option, received=text,
                                   fix="give e.g. 10% or 0.10") from None
    if value < 0:
        raise InvalidArgumentError("cannot be negative", argument=option, received=text, fix="give e.g. 10%")
    return value


def _fmt(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _write_json(items: list[dict[str, Any]], json_out: str | None, to_stdout: bool, force: bool) -> None:
    """The JSON list to the --json file (if a path), and to standard output when ``to_stdout``."""
    text = dumps_json(items, indent=2)
    if json_out not in (None, "-"):
        write_json_out(json_out, text, force)
    if to_stdout:
        write_json_out("-", text, force)


_HISTORY_COLUMNS = ("#", "UTC", "model", "sha256", "mode", "device", "runtime", "thr", "kind", "KiB", "p50 ms",
                    "p90 ms", "top-1 %", "task %", "agree %", "SQNR dB")
# What a narrow terminal loses first; #, model, mode, device and p50 ms always stay.
_HISTORY_LESSER = ("sha256", "SQNR dB", "p90 ms", "runtime", "agree %", "KiB", "thr", "kind", "UTC", "task %",
                   "top-1 %")


@click.command("history")
@click.option("--model", metavar="NAME_OR_HASH", default=None,
              help="Only this model: its name or a prefix (6+ hex digits) of its sha256.")
@click.option("--device", metavar="LABEL", default=None, help="Only this device (host, a board label).")
@click.option("--mode", type=Choice([*MODE_NAMES, *NAMED_MODE_NAMES, "unknown"]), default=None,
              help="Only this quantization mode.")
@click.option("--group", metavar="NAME", default=None,
              help="Only runs of boards in this inventory group (as edgeq deploy --inventory stored them).")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="At most N runs.")
@json_option("Write the runs (or, with --diff, the regressions) as JSON; '-' for standard output.")
@force_option("Overwrite the --json file if it exists.")
@click.option("--diff", is_flag=True,
              help="Compare each model/mode/device/runtime/threads' latest run with the one before; "
                   "exit 1 on a regression.")
@click.option("--threshold-latency", default="10%", show_default=True, metavar="PCT",
              help="With --diff: flag p50 latency up by more than this (10% or 0.10).")
@click.option("--threshold-accuracy", type=float, default=0.5, show_default=True, metavar="POINTS",
              help="With --diff: flag top-1 accuracy down by more than this many percentage points.")
@click.option("--threshold-sqnr", type=float, default=3.0, show_default=True, metavar="DB",
              help="With --diff: flag the output SQNR against the float model down by more than this many dB.")
@click.option("--deploys", is_flag=True, help="List the deploy runs (their ids for --resume) and their boards' states.")
@click.option("--deploy", "deploy_run", default=None, metavar="RUN_ID",
              help="The boards of one deploy run: each one's state, failed step and message, groups.")
@format_option
@db_option
def history_cmd(model: str | None, device: str | None, mode: str | None, group: str | None, limit: int | None,
                json_out: str | None, force: bool, diff: bool, threshold_latency: str,
                threshold_accuracy: float, threshold_sqnr: float, deploys: bool, deploy_run: str | None,
                fmt: str, db: str | None) -> None:
    """List recorded runs, newest first, or (--diff) find regressions against the previous run.

    "task %" is a detection's mAP@[.5:.95] or a segmentation's mIoU; --diff also flags their drops
    (--threshold-accuracy points) and an output SQNR down by more than --threshold-sqnr dB.

    With --diff the exit status is 1 when a regression is found, so a CI script can fail on it.
    """
    lat = _parse_fraction(threshold_latency, "--threshold-latency")
    check_json_out(json_out, force)
    if group is not None and not group.strip():
        raise InvalidArgumentError("must be the name of an inventory group", argument="--group", received=group,
                                   fix="give e.g. --group kitchen (edgeq history --deploy RUN_ID lists the groups)")
    to_stdout = json_out == "-" or fmt == "json"  # the JSON document goes to standard output
    if diff and fmt in ("md", "csv"):
        raise InvalidArgumentError("--diff prints regressions as lines or JSON", argument="--format",
                                   received=fmt, fix="use --format table or json with --diff")
    with ResultsStore(db, create=False) as store:
        if deploys or deploy_run:
            _deploy_runs(store, deploy_run, limit, json_out, to_stdout, force, fmt)
            return
        if diff:
            regressions = store.diff(model=model, device=device, mode=mode, group=group, latency_threshold=lat,
                                     accuracy_threshold=threshold_accuracy, sqnr_threshold=threshold_sqnr)
            _write_json([r.to_dict() for r in regressions], json_out, to_stdout, force)
            if not to_stdout:
                if not regressions:
                    click.echo(f"no regressions (p50 latency within +{lat * 100:g}%, "
                               f"top-1 accuracy, mAP and mIoU within -{threshold_accuracy:g} points, "
                               f"SQNR within -{threshold_sqnr:g} dB of the previous run)")
                for r in regressions:
                    click.echo(click.style("regression", fg="red", bold=True) + f": {r.describe()}")
            if regressions:
                raise SystemExit(1)
            return
        runs = store.runs(model=model, device=device, mode=mode, limit=limit, group=group)
    _write_json([m.to_dict() for m in runs], json_out, to_stdout, force)
    if to_stdout:
        return
    if not runs and fmt == "table":
        click.echo("no runs recorded" + (" that match" if model or device or mode or group else ""))
        return
    rows = [[str(m.id), m.created[:16].replace("T", " "), m.label, m.model_sha256[:8], m.mode, m.device,
             m.runtime, str(m.threads or "-"), m.kind, "-" if m.size_bytes is None else f"{m.size_bytes / 1024:.1f}",
             _fmt(m.latency_p50_us, 1e-3), _fmt(m.latency_p90_us, 1e-3), _fmt(m.accuracy_top1, 100, 2),
             "-" if m.task_metric is None else f"{TASK_METRICS[m.task or ''][0] if m.task else ''} "
                                               f"{m.task_metric * 100:.2f}".strip(),
             _fmt(m.agreement, 100, 2), _fmt(m.sqnr_db, 1.0, 1)] for m in runs]
    header = list(_HISTORY_COLUMNS)
    if any(m.groups for m in runs):  # boards deployed from an inventory: their groups beside the device
        at = header.index("device") + 1
        header.insert(at, "groups")
        for m, row in zip(runs, rows):
            row.insert(at, ",".join(m.groups) or "-")
    print_rows(header, rows, fmt, drop=(*_HISTORY_LESSER, "groups"),
               left=("UTC", "model", "sha256", "mode", "device", "groups", "runtime", "kind"),
               title=f"{len(runs)} run(s), newest first")



def _deploy_runs(store: ResultsStore, run_id: str | None, limit: int | None, json_out: str | None,
                 to_stdout: bool, force: bool, fmt: str) -> None:
    """``--deploys`` (the runs and their counts of board states) or ``--deploy RUN_ID`` (its boards)."""
    if run_id is None:
        runs = store.deploy_runs(limit or 20)
        _write_json(runs, json_out, to_stdout, force)
        if not to_stdout:
            rows = [[r["run_id"], r["created"][:16].replace("T", " "), r["model_name"] or "",
                     ", ".join(f"{n} {s}" for s, n in sorted(r["states"].items()))] for r in runs]
            print_rows(["run", "UTC", "model", "boards"], rows, fmt, left=("run", "UTC", "model", "boards"),
                       title=f"{len(runs)} deploy run(s), newest first")
        return
    run = store.deploy_run(run_id)
    if run is None:
        raise InvalidArgumentError("no such deploy run in the results store", argument="--deploy", received=run_id,
                                   fix="see the run ids with edgeq history --deploys")
    _write_json([run], json_out, to_stdout, force)
    if not to_stdout:
        rows = [[label, b["state"], b["step"] or "", ",".join(b["groups"]), str(b["attempts"]), b["error"] or ""]
                for label, b in run["boards"].items()]
        print_rows(["board", "state", "step", "groups", "tries", "message"], rows, fmt,
                   left=("board", "state", "step", "groups", "message"),
                   title=f"deploy run {run_id}: {run['model_name']}, {len(rows)} board(s)")
