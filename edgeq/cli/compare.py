"""``edgeq compare``: convert a model in every mode, measure size, accuracy, fidelity and latency, write a report."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from edgeq_device.cli.clikit import Choice, ChoiceList, flatten_choices
from edgeq_device.model.int4 import INT4_NOTE
from edgeq_device.results.fileio import check_output_folder
from edgeq_device.results.report_json import dumps_json
from edgeq_device.tasks.detection import parse_outputs_option
from edgeq_device.tasks.masks import load_label_map, parse_ignore
from rich.console import Console

from edgeq.cli.mcu import mcu_options, parse_bytes, resolve_board
from edgeq.cli.options import (
    MODE_NAMES,
    NAMED_MODE_NAMES,
    Channels,
    build_preprocess,
    check_db,
    custom_objects_option,
    db_option,
    force_option,
    format_option,
    modes_arg,
    native_log_option,
    preprocess_options,
)
from edgeq.cli.output import make_console
from edgeq.comparison.records import Comparison
from edgeq.comparison.run import compare
from edgeq.errors import InvalidArgumentError, OutputExistsError
from edgeq.quantize.qat.sparsity import TRAINED_MODES, check_clusters, check_sparsity
from edgeq.report.files import json_default
from edgeq.report.markdown import markdown_table
from edgeq.report.tables import csv_table, natural_width, rich_table, table_rows
from edgeq.store.db import ResultsStore

__all__ = ["compare_cmd", "print_compare"]


@click.command("compare")
@native_log_option
@click.argument("model", type=click.Path())
@click.option("--calib", "calib", type=click.Path(), required=True, help="Calibration data (image folder, .npy, .npz).")
@click.option("--eval", "evaluation", type=click.Path(), required=True, help="Labeled evaluation data.")
@click.option("--modes", type=ChoiceList((*MODE_NAMES, *NAMED_MODE_NAMES, *TRAINED_MODES, "all")), multiple=True,
              default=["all"], callback=flatten_choices, show_default=True,
              help="Modes to compare: all, or several as a comma list (int8,float16) or by repeating --modes; "
                   "int4 (4-bit weights) when named; qat, clustered and pruned need --train.")
@click.option("--threads", default=None, help="Comma-separated thread counts to time [1,<cores>].")
@click.option("--io", type=Choice(["float", "int8", "uint8"]), default="float", show_default=True,
              help="I/O type of the int8 model.")
@click.option("--samples", type=int, default=200, show_default=True, help="Calibration samples.")
@click.option("--eval-samples", type=int, default=None, help="Evaluate on a seeded subset of this many.")
@click.option("--budget", type=float, default=1.0, show_default=True, help="Accuracy budget, points of top-1.")
@click.option("--prefer", type=Choice(["size", "latency"]), default="size", show_default=True,
              help="Recommend the smallest or the fastest mode within the budget.")
@click.option("--profile", is_flag=True,
              help="Also time every operator of each mode alone (first thread count): a per-operator section.")
@click.option("--task", type=Choice(["classification", "detection", "segmentation"]), default="classification",
              show_default=True, help="What accuracy means: top-1, COCO mAP (--annotations) or mIoU (--masks); "
                                      "--budget is then in points of mAP@[.5:.95] or mIoU.")
@click.option("--annotations", type=click.Path(), default=None, metavar="instances.json",
              help="Detection: COCO annotations of the --eval images (matched by file_name).")
@click.option("--masks", type=click.Path(), default=None, metavar="DIR",
              help="Segmentation: class-index PNG/BMP masks named like the --eval images (grayscale, or "
                   "palette PNGs as Pascal VOC's).")
@click.option("--outputs", "det_outputs", default=None, metavar="boxes=NAME,classes=NAME,scores=NAME,count=NAME",
              help="Detection: which Keras outputs are which (default: found by their names).")
@click.option("--class-offset", type=int, default=1, show_default=True,
              help="Detection: category id = model class + this.")
@click.option("--ignore-index", type=str, default="255", show_default=True, metavar="N[,N|LOW-HIGH]",
              help="Segmentation: the mask values that count nowhere: one, several (255,254), a range "
                   "(250-255) or none.")
@click.option("--label-map", type=str, default=None, metavar="cityscapes|FILE",
              help="Segmentation: map the masks' values to classes first: cityscapes (label IDs to the 19 "
                   "train IDs) or a JSON/CSV file of value,class.")
@click.option("--train", "train", type=click.Path(), default=None,
              help="Labeled training data: enables the qat, clustered and pruned modes (fine-tuned, then int8).")
@click.option("--clusters", type=int, default=16, show_default=True, help="Values per kernel of the clustered mode.")
@click.option("--prune", "sparsity", type=float, default=0.5, show_default=True,
              help="Target sparsity (0-1) of the pruned mode.")
@click.option("--train-epochs", type=int, default=2, show_default=True,
              help="Epochs of fine-tuning of the qat, clustered and pruned modes.")
@db_option
@click.option("--no-store", is_flag=True, help="Do not record the measurements.")
@click.option("--output", "-o", type=click.Path(), default="out/compare", show_default=True, help="Report folder.")
@force_option("Overwrite existing report files.")
@click.option("--labels", "labels", type=click.Path(), default=None, metavar="FILE",
              help="Class names, one per line in output order, stored in the models; --eval's class folders "
                   "are the outputs of their names (default: the calibration folder's classes, else --eval's: "
                   "integer folder names are their output, other names sorted as Keras does).")
@click.option("--target", type=Choice(["mcu"]), default=None,
              help="mcu: add each mode's TensorFlow Lite Micro figures (arena, flash, support; --board: fits).")
@mcu_options
@custom_objects_option
@format_option
@preprocess_options
def compare_cmd(model: str, calib: str, evaluation: str, modes: tuple[str, ...], threads: str | None, io: str,
                samples: int, eval_samples: int | None, budget: float, prefer: str, profile: bool, task: str,
                annotations: str | None, masks: str | None, det_outputs: str | None, class_offset: int,
                ignore_index: str, label_map: str | None, train: str | None, clusters: int, sparsity: float, train_epochs: int,
                db: str | None, no_store: bool,
                output: str, force: bool, fmt: str, labels: str | None, size: tuple[int, int] | None,
                color: str | None, mean: Channels, std: Channels, target: str | None = None,
                board: str | None = None, boards_file: str | None = None, reserve_ram: str = "0",
                reserve_flash: str = "0") -> None:
    """Convert MODEL in every mode and compare size, accuracy, fidelity and latency; write a report."""
    chosen_board = resolve_board(board, boards_file, target)
    if chosen_board is not None:
        chosen_board = replace(chosen_board, ram_bytes=chosen_board.ram_bytes - parse_bytes(reserve_ram, "--reserve-ram"),
                               flash_bytes=chosen_board.flash_bytes - parse_bytes(reserve_flash, "--reserve-flash"))
    out = Path(output)
    check_output_folder(out, argument="--output")
    if not no_store:
        check_db(db)
    if (out / "results.json").exists() and not force:
        raise OutputExistsError("a report exists in the output folder", argument="--output", received=str(out),
                                fix="choose another --output or pass --force to overwrite")
    thread_list = None
    if threads:
        try:
            thread_list = [int(t) for t in threads.split(",")]
        except ValueError:
            raise InvalidArgumentError("expected comma-separated integers", argument="--threads",
                                       received=threads, fix="give e.g. --threads 1,4") from None
    if task == "detection" and annotations is None:
        raise InvalidArgumentError("--task detection needs the COCO annotations of the --eval images",
                                   argument="--annotations", received=None, fix="give --annotations instances.json")
    if task == "segmentation" and masks is None:
        raise InvalidArgumentError("--task segmentation needs the masks of the --eval images", argument="--masks",
                                   received=None, fix="give --masks DIR of class-index PNG/BMP")
    roles = parse_outputs_option(det_outputs) if det_outputs else None
    if train is not None:
        check_clusters(clusters, "--clusters")
        check_sparsity(sparsity, "--prune")
    mode_list: Any = modes_arg(modes)
    pre = build_preprocess(size, color, mean, std, model)
    store = None if no_store else ResultsStore(db)
    up_front = f"int4: {INT4_NOTE}"
    if "int4" in modes:  # said before the conversions start, not after minutes of measuring
        make_console(stderr=True).print(f"note: {up_front}")
    comp = compare(model, calibration=calib, evaluation=evaluation, modes=mode_list, threads=thread_list, io=io,
                   samples=samples, eval_samples=eval_samples, max_drop=budget, prefer=prefer, preprocess=pre,
                   labels=labels, store=store, profile=profile, task=task, annotations=annotations, masks=masks,
                   outputs=roles, class_offset=class_offset,
                   ignore_index=parse_ignore(ignore_index, "--ignore-index"),
                   label_map=load_label_map(label_map, "--label-map"), train=train,
                   clusters=clusters, sparsity=sparsity, train_epochs=train_epochs, target=target,
                   mcu_board=chosen_board)
    console: Any
    if fmt == "table":
        console = Console()
        if not console.is_terminal:  # piped: every column, each row on one line
            console = Console(width=max(console.width, natural_width(*table_rows(comp.to_dict()))))
        console.print(rich_table(comp))
    else:  # the table (or results.json) alone on standard output; what else is said goes to stderr
        print_compare(comp, fmt)
        console = make_console(stderr=True)
    for note in comp.notes:
        if note != up_front:
            console.print(f"note: {note}")
    written = comp.save(out, overwrite=force)
    console.print(f"wrote {out}/report.html, report.md, results.json"
                  + (", inputs.npz, reference.npz" if "reference.npz" in written else "")
                  + f" ({len(written)} files)"
                  + ("" if store is None else f"; measurements stored in {store.path}"))


def print_compare(comp: Comparison, fmt: str) -> None:
    """Print a comparison's table as Markdown or CSV, or its results.json (``fmt="json"``)."""
    if fmt == "json":
        click.echo(dumps_json(comp.to_dict(), indent=2, default=json_default))
        return
    header, rows = table_rows(comp.to_dict())
    click.echo((markdown_table if fmt == "md" else csv_table)(header, rows), nl=False)

