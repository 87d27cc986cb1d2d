"""``edgeq convert``: a Keras model to .tflite in one or several modes, and for the Edge TPU compiled."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click
from edgeq_device.cli.clikit import Choice, ChoiceList, flatten_choices
from edgeq_device.model.info import format_bytes
from edgeq_device.results.report_json import dumps_json
from edgeq_device.tasks.detection import parse_outputs_option
from edgeq_device.tasks.masks import parse_ignore

from edgeq.cli.mcu import mcu_options, parse_bytes, resolve_board
from edgeq.cli.options import (
    MODE_NAMES,
    NAMED_MODE_NAMES,
    Channels,
    build_preprocess,
    check_json_out,
    check_output,
    custom_objects_option,
    force_option,
    json_option,
    modes_arg,
    native_log_option,
    preprocess_options,
    rounding_option,
    write_json_out,
)
from edgeq.cli.output import make_console, print_rows
from edgeq.errors import InvalidArgumentError, OutputExistsError
from edgeq.quantize.converter import convert, convert_all
from edgeq.quantize.ranges.result import RANGES_METHODS
from edgeq.targets.edgetpu.compiler import run_edgetpu_compiler
from edgeq.targets.mcu.boards import board_fit

__all__ = ["convert_cmd"]


@click.command("convert")
@native_log_option
@click.argument("model", type=click.Path())
@click.option("--mode", "-m", "modes", type=ChoiceList((*MODE_NAMES, *NAMED_MODE_NAMES, "all")), multiple=True, default=["int8"],
              callback=flatten_choices, show_default=True,
              help="Quantization mode; several as a comma list (int8,float16) or by repeating --mode. "
                   "int8 and int16x8 need --calib; int4 (4-bit weights) takes it for --rounding optimized.")
@click.option("--calib", "calib", type=click.Path(), default=None,
              help="Calibration data: image folder, .npy or .npz (int8, int16x8).")
@click.option("--samples", type=int, default=200, show_default=True, help="Calibration samples (seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration sample.")
@click.option("--io", type=Choice(["float", "int8", "uint8", "int16"]), default=None,
              help="Input/output type: float, int8, uint8, int16 [float; uint8 for edgetpu].")
@click.option("--batch-size", type=int, default=None, help="Fix a dynamic batch dimension (e.g. 1).")
@click.option("--allow-float", is_flag=True, help="Let ops that cannot be integer-quantized stay float.")
@click.option("--target", type=Choice(["edgetpu", "mcu"]), default=None,
              help="Enforce a target's rules (edgetpu: int8, integer I/O, batch 1) and compile where "
                   "edgetpu_compiler is installed; mcu: int8, batch 1, int8 I/O by default, then run in "
                   "TensorFlow Lite Micro's interpreter (arena, flash, ops it refuses).")
@click.option("--output", "-o", type=click.Path(), default="out", show_default=True,
              help="Output folder (or file name for one mode).")
@force_option("Overwrite existing output files.")
@json_option("Also write a JSON summary (- for stdout).")
@click.option("--max-drop", type=float, default=None, metavar="POINTS",
              help="Accuracy budget (int8): top-1 points the model may lose on --eval; tries int8, int8 with "
                   "the worst layers at 16-bit activations, then in float, int16x8, float16 and keeps the first "
                   "within it.")
@click.option("--max-slowdown", type=float, default=None, metavar="X",
              help="With --max-drop: candidates must also run within X times int8's latency, measured here.")
@click.option("--max-latency", "max_latency", type=float, default=None, metavar="MS",
              help="With --max-drop: candidates must also run one inference within MS milliseconds here.")
@click.option("--eval", "evaluation", type=click.Path(), default=None,
              help="Labeled evaluation data for --max-drop (image folder with class subfolders, .npz).")
@click.option("--train", "train", type=click.Path(), default=None,
              help="With --max-drop: labeled training data; the budget then tries int8 after quantization-aware "
                   "fine-tuning (int8's size and speed) right after plain int8.")
@click.option("--train-epochs", type=int, default=2, show_default=True,
              help="With --train: epochs of that fine-tuning.")
@click.option("--labels", "labels", type=click.Path(), default=None, metavar="FILE",
              help="Class names, one per line in output order, stored in the model (default: the calibration "
                   "folder's classes: integer folder names are their output, other names sorted as Keras does).")
@rounding_option
@click.option("--a16", "a16", default=None, metavar="LAYERS|K",
              help="int8 with these layers' activations at 16 bits (comma list of layer names from edgeq debug), "
                   "or K: the K worst layers; the rest stays int8.")
@click.option("--task", type=Choice(["classification", "detection", "segmentation"]), default=None,
              help="What the model does, recorded in it: edgeq-device eval then needs no --task.")
@click.option("--class-offset", type=int, default=None, metavar="N",
              help="Detection: category id = model class + N (recorded; a board's default is 1).")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Detection/segmentation: classes the model emits (recorded).")
@click.option("--ignore-index", type=str, default=None, metavar="N[,N|LOW-HIGH]",
              help="Segmentation: mask values that count nowhere: one, several (255,254), a range (250-255) "
                   "or none (recorded; a board's default is 255).")
@click.option("--outputs", "outputs_text", type=str, default=None, metavar="boxes=NAME,classes=NAME,scores=NAME,count=NAME",
              help="Detection: which outputs are boxes, classes, scores and count (recorded).")
@click.option("--ranges", type=Choice(list(RANGES_METHODS)), default="minmax", show_default=True,
              help="How int8 activation ranges are chosen: minmax (the converter's), percentile, mse, entropy, "
                   "cautious (from per-tensor histograms), auto (the best output SQNR on held-out calibration samples).")
@click.option("--percentile", type=float, default=99.99, show_default=True,
              help="The percentile --ranges percentile keeps, in (0, 100]; entropy clips no more than it gives up.")
@custom_objects_option
@preprocess_options
@mcu_options
def convert_cmd(model: str, modes: tuple[str, ...], calib: str | None, samples: int, seed: int, io: str | None,
                batch_size: int | None, allow_float: bool, target: str | None, output: str, force: bool,
                json_out: str | None, max_drop: float | None, max_slowdown: float | None,
                max_latency: float | None, evaluation: str | None, train: str | None, train_epochs: int,
                labels: str | None,
                size: tuple[int, int] | None, color: str | None, mean: Channels, std: Channels, task: str | None,
                class_offset: int | None, num_classes: int | None, ignore_index: str | None,
                outputs_text: str | None, rounding: str = "optimized", a16: str | None = None,
                ranges: str = "minmax", percentile: float = 99.99, board: str | None = None,
                boards_file: str | None = None, reserve_ram: str = "0", reserve_flash: str = "0") -> None:
    """Convert MODEL (.keras, .h5 or SavedModel folder) to .tflite and print what was written."""
    out = Path(output)
    given = {"class_offset": class_offset, "num_classes": num_classes,
             "outputs": None if outputs_text is None else parse_outputs_option(outputs_text)}
    settings: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if ignore_index is not None:  # "none" records None: every mask value counts
        values = parse_ignore(ignore_index, "--ignore-index")
        settings["ignore_index"] = None if not values else values[0] if len(values) == 1 else list(values)
    if settings and task is None:
        raise InvalidArgumentError(f"--{next(iter(settings)).replace('_', '-')} is a task setting", argument="--task",
                                   received=None, fix="give --task detection or --task segmentation with it")
    check_output(out)
    check_json_out(json_out, force)
    mode = modes_arg(modes)
    if isinstance(mode, list) and (target is not None or max_drop is not None):
        raise InvalidArgumentError("--target and --max-drop take one mode", argument="--mode",
                                   received=",".join(modes), fix="give --mode int8 alone")
    pre = build_preprocess(size, color, mean, std, model)
    io = io or {"edgetpu": "uint8", "mcu": "int8"}.get(target or "", "float")
    chosen_board = resolve_board(board, boards_file, target)
    results: Any
    if (max_slowdown is not None or max_latency is not None) and max_drop is None:
        raise InvalidArgumentError("--max-slowdown and --max-latency constrain the accuracy budget",
                                   argument="--max-slowdown" if max_slowdown is not None else "--max-latency",
                                   received=max_slowdown if max_slowdown is not None else max_latency,
                                   fix="give them with --max-drop and --eval")
    if train is not None and max_drop is None:
        raise InvalidArgumentError("--train is for the accuracy budget's QAT step", argument="--train",
                                   received=train, fix="give --max-drop and --eval with it, or use edgeq qat")
    if max_drop is not None or evaluation is not None:  # the accuracy budget search (edgeq.budget)
        if max_drop is None or evaluation is None or target is not None or a16 is not None:
            raise InvalidArgumentError("--max-drop and --eval go together, without --target",
                                       argument="--max-drop" if max_drop is None else "--eval",
                                       received=max_drop if max_drop is None else evaluation,
                                       fix="give both, e.g. --max-drop 0.5 --eval data/test (the budget tries "
                                           "16-bit layers itself)")
        results = convert(model, mode, calibration=calib, samples=samples, seed=seed, io=io,
                          batch_size=batch_size, preprocess=pre, allow_float_fallback=allow_float,
                          max_drop=max_drop, evaluation=evaluation, labels=labels, task=task, task_settings=settings,
                          ranges=ranges, max_slowdown=max_slowdown, max_latency_ms=max_latency, train=train,
                          train_epochs=train_epochs)
    elif a16 is not None:
        if isinstance(mode, list) or target is not None:
            raise InvalidArgumentError("--a16 takes --mode int8 alone, without --target", argument="--a16",
                                       received=a16, fix="give --mode int8 --a16 2 (or layer names)")
        layers = [n.strip() for n in a16.split(",") if n.strip()]
        results = convert(model, mode, calibration=calib, samples=samples, seed=seed, io=io, batch_size=batch_size,
                          preprocess=pre, labels=labels,
                          a16_layers=int(a16) if a16.strip().isdigit() else layers)
    else:
        if (isinstance(mode, list) or mode == "all") and ranges != "minmax":
            raise InvalidArgumentError("--ranges takes one mode, int8", argument="--ranges", received=ranges,
                                       fix="give --mode int8 alone with --ranges")
        if isinstance(mode, list) or mode == "all":
            results = convert_all(model, mode, calibration=calib, samples=samples, seed=seed, io=io,
                                  batch_size=batch_size, preprocess=pre, allow_float_fallback=allow_float,
                                  labels=labels, rounding=rounding, task=task, task_settings=settings)
        else:
            results = convert(model, mode, calibration=calib, samples=samples, seed=seed, io=io,
                              batch_size=batch_size, preprocess=pre, allow_float_fallback=allow_float,
                              target=target, labels=labels, rounding=rounding, task=task,
                              task_settings=settings, ranges=ranges, percentile=percentile)
    results = results if isinstance(results, list) else [results]
    # Check every target before writing any, so a refusal leaves nothing half done.
    single_file = len(results) == 1 and out.suffix == ".tflite"
    targets = [out if single_file else out / r.default_filename for r in results]
    for t in targets:
        if t.exists() and not force:
            raise OutputExistsError("output file exists", argument="--output", received=str(t),
                                    fix="choose another --output or pass --force to overwrite")
    written = [r.save(t, overwrite=force) for r, t in zip(results, targets)]
    base = next((r for r in results if r.mode.value == "float32"), None)
    rows = [[r.variant, r.io.value, format_bytes(r.size_bytes), format_bytes(r.compressed_size),
             f"{base.size_bytes / r.size_bytes:.2f}x" if base else "-", f"{r.conversion_seconds:.1f}s",
             str(len(r.float_ops)), path.name] for r, path in zip(results, written)]
    print_rows(["mode", "io", "size", "gzip -9", "vs float32", "time", "float ops", "file"], rows, "table",
               err=json_out == "-", drop=("float ops", "time", "vs float32", "gzip -9", "io"),
               left=("mode", "io", "float ops", "file"), title=f"edgeq convert {Path(model).name}")
    console = make_console(stderr=json_out == "-")
    console.print(f"wrote {len(written)} file(s) to {written[0].parent}")
    for r in results:
        if r.ranges is not None:
            console.print(r.ranges.summary(), markup=False)
    if target == "edgetpu":
        _compile_for_edgetpu(results[0], written[0], force, console)
    if target == "mcu" and results[0].mcu is not None:
        rep = results[0].mcu
        console.print(rep.summary(), highlight=False, markup=False)
        if chosen_board is not None and rep.supported:
            fit = board_fit(chosen_board, rep.arena_needed, rep.flash_bytes, parse_bytes(reserve_ram, "--reserve-ram"),
                            parse_bytes(reserve_flash, "--reserve-flash"))
            console.print(fit.summary(), highlight=False, markup=False)
    if results[0].budget is not None:
        click.echo(results[0].budget.table(), nl=False, err=json_out == "-")
    if json_out:
        payload = dumps_json({"schema": "edgeq/convert/1",
                              "results": [dict(r.to_dict(), path=str(p),
                                               **({"budget": r.budget.to_dict()} if r.budget is not None else {}))
                                          for r, p in zip(results, written)]},
                             indent=2)
        write_json_out(json_out, payload, force)


def _compile_for_edgetpu(result: Any, path: Path, force: bool, console: Any) -> None:
    """Show the predicted Edge TPU mapping; run edgetpu_compiler where it is installed."""
    console.print(f"predicted Edge TPU mapping: {result.edgetpu.summary()}")
    if shutil.which("edgetpu_compiler") is None:
        console.print("edgetpu_compiler is not installed here (Linux x86-64 only, Debian package edgetpu-compiler "
                      "from Coral's apt repository); the prediction above follows Coral's published rules: "
                      f"see `edgeq analyze {path} --target edgetpu` op by op")
        return
    report = run_edgetpu_compiler(path, path.parent, overwrite=force)
    console.print(f"edgetpu_compiler {report.compiler_version or ''}: {report.ops_on_edgetpu} of {report.total_ops} "
                  f"ops on the Edge TPU, {report.ops_on_cpu} on the CPU, on-chip memory used "
                  f"{format_bytes(report.on_chip_memory_used or 0)}; wrote {report.output_model}")

