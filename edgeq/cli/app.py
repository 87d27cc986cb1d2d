"""The ``edgeq`` command line: a thin layer over the library.

Each command's docstring is its help text. Library errors become one line on
standard error and exit status 2 (see ``edgeq_device.clikit``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click
from edgeq_device.clikit import Choice, ChoiceList, ErrorBoundaryGroup, flatten_choices
from edgeq_device.clikit import verbose as is_verbose
from edgeq_device.fileio import atomic_write_text, check_output_folder, check_writable
from edgeq_device.info import format_bytes
from edgeq_device.preprocess import Preprocess

from edgeq._version import __version__
from edgeq.errors import InvalidArgumentError, OutputExistsError

_MODE_NAMES = ("float32", "dynamic", "float16", "int8", "int16x8")


@click.group(cls=ErrorBoundaryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
def cli() -> None:
    """edgeq: take a trained Keras model to a measured .tflite on a single-board computer."""

def _parse_size(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        w, h = (int(v) for v in value.lower().split("x"))
        return (w, h)
    except ValueError:
        raise InvalidArgumentError("expected WIDTHxHEIGHT", argument="--size", received=value,
                                   fix="give e.g. --size 224x224") from None


def preprocess_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The image preprocessing flags shared by commands that read image folders."""
    f = click.option("--size", help="Resize images to WIDTHxHEIGHT (default: the model's input size).")(f)
    f = click.option("--color", type=Choice(["rgb", "l"]), help="Color mode (default: from channels).")(f)
    f = click.option("--mean", type=float, default=None, help="Float input = (pixel - MEAN) / STD [0].")(f)
    f = click.option("--std", type=float, default=None, help="See --mean [255].")(f)
    return f


def _use_custom_objects(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Make the custom Keras objects FILE.py defines known to the model loaders for this command."""
    if value is None:
        return
    from edgeq.inputs.models import custom_objects_from_file, register_custom_objects

    ctx.call_on_close(register_custom_objects(custom_objects_from_file(value, argument="--custom-objects")))


custom_objects_option = click.option(
    "--custom-objects", type=click.Path(), metavar="FILE.py", expose_value=False, callback=_use_custom_objects,
    help="A Python file defining the model's custom layers/functions (its `custom_objects` dict if it has "
         "one, else every class and function it defines), passed to the Keras loader.")


def build_preprocess(size: str | None, color: str | None, mean: float | None, std: float | None,
                     model: Any = None) -> Preprocess | None:
    """A Preprocess from CLI flags; flags not given come from the model's input shape.

    Returns None when no flag is given, letting the library derive everything.
    """
    if size is None and color is None and mean is None and std is None:
        return None
    derived = None
    if model is not None:
        from edgeq.inputs.models import load_model
        from edgeq.quantize.converter import default_preprocess

        derived = default_preprocess(load_model(model).inputs[0])
    return Preprocess(
        size=_parse_size(size) or (derived.size if derived else None),
        color=color or (derived.color if derived else "rgb"),
        mean=0.0 if mean is None else mean,
        std=255.0 if std is None else std,
    )


def native_log_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--verbose`` for commands that run TensorFlow, whose C++ log lines are hidden otherwise.

    Without it the lines TensorFlow's C++ code writes to standard error (``I0000 ...``,
    ``fully_quantize: ...``, CUDA's ``cuInit`` error) go to a temporary log that is deleted
    afterwards (see :mod:`edgeq.nativelog`); progress and errors still reach standard error.
    """
    @functools.wraps(f)
    def run(*args: Any, verbose: bool, **kwargs: Any) -> Any:
        from edgeq.nativelog import quiet_native_logs, show_native_logs

        with show_native_logs() if is_verbose(click.get_current_context(), verbose) else quiet_native_logs():
            return f(*args, **kwargs)

    return click.option("--verbose", "-v", is_flag=True,
                        help="Show TensorFlow's own log lines on standard error (as `edgeq --verbose` does; "
                             "also the traceback of an internal error).")(run)


def _console(stderr: bool = False) -> Any:
    """A rich console; not a terminal (a pipe, a file, a notebook capture) gets 140 columns, not 80."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=140)
    return console


def _check_json_out(json_out: str | None, force: bool) -> None:
    """Refuse, before any work, a --json file that exists (without --force) or cannot be written."""
    if json_out and json_out != "-":
        check_writable(json_out, force, argument="--json")


def _check_output(out: Any) -> None:
    """Refuse, before any work, an --output folder (or .tflite file's folder) that cannot be written."""
    check_output_folder(out.parent if out.suffix == ".tflite" else out, argument="--output")


def _check_db(db: str | None) -> None:
    """Refuse, before any work, a results store that does not exist yet and cannot be created."""
    from pathlib import Path

    from edgeq.store.db import default_db_path

    path = Path(db).expanduser() if db else default_db_path()
    if not path.exists():
        check_writable(path, False, argument="--db")


def _modes_arg(modes: tuple[str, ...]) -> Any:
    """``("all",)`` or all five -> "all"; one mode -> its name; several -> the list."""
    if "all" in modes or set(modes) == set(_MODE_NAMES):
        return "all"
    return modes[0] if len(modes) == 1 else list(modes)


format_option = click.option(
    "--format", "fmt", type=Choice(["table", "md", "csv", "json"]), default="table", show_default=True,
    help="table: fitted to the terminal (lesser columns left out when narrow, every column when piped); "
         "md: Markdown; csv: CSV with a header line; json: the JSON document.")


def print_rows(header: list[str], rows: list[list[str]], fmt: str, *, err: bool = False,
               drop: tuple[str, ...] = (), left: tuple[str, ...] = (), title: str | None = None,
               styles: list[str | None] | None = None) -> None:
    """Print rows as a table that fits the terminal (``fmt="table"``), Markdown or CSV.

    On a terminal, the columns in ``drop`` are left out in order until the table fits, and a
    line says which; piped or redirected, every column is kept and no row is wrapped, so
    each row stays one line for grep. Names and figures are never cut with an ellipsis.
    """
    from rich.console import Console

    from edgeq.report.markdown import markdown_table
    from edgeq.report.tables import csv_table, fitted_table, natural_width

    if fmt == "md":
        click.echo(markdown_table(header, rows), nl=False, err=err)
        return
    if fmt == "csv":
        click.echo(csv_table(header, rows), nl=False, err=err)
        return
    console = Console(stderr=err)
    width = console.width if console.is_terminal else None
    if width is None:
        console = Console(stderr=err, width=max(console.width, natural_width(header, rows)))
    table, hidden = fitted_table(header, rows, width=width, drop=drop, left=left, title=title, styles=styles)
    table.title_justify = "left"
    console.print(table)
    if hidden:
        console.print(f"(left out for lack of width: {', '.join(hidden)}; --format md or csv shows every column)",
                      highlight=False, markup=False)


@cli.command("convert")
@native_log_option
@click.argument("model", type=click.Path())
@click.option("--mode", "-m", "modes", type=ChoiceList((*_MODE_NAMES, "all")), multiple=True, default=["int8"],
              callback=flatten_choices, show_default=True,
              help="Quantization mode; several as a comma list (int8,float16) or by repeating --mode. "
                   "int8 and int16x8 need --calib.")
@click.option("--calib", "calib", type=click.Path(), default=None,
              help="Calibration data: image folder, .npy or .npz (int8, int16x8).")
@click.option("--samples", type=int, default=200, show_default=True, help="Calibration samples (seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration sample.")
@click.option("--io", type=Choice(["float", "int8", "uint8", "int16"]), default=None,
              help="Input/output type: float, int8, uint8, int16 [float; uint8 for edgetpu].")
@click.option("--batch-size", type=int, default=None, help="Fix a dynamic batch dimension (e.g. 1).")
@click.option("--allow-float", is_flag=True, help="Let ops that cannot be integer-quantized stay float.")
@click.option("--target", type=Choice(["edgetpu"]), default=None,
              help="Enforce a target's rules (edgetpu: int8, integer I/O, batch 1) and compile where "
                   "edgetpu_compiler is installed.")
@click.option("--output", "-o", type=click.Path(), default="out", show_default=True,
              help="Output folder (or file name for one mode).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--json", "json_out", type=click.Path(), default=None, help="Also write a JSON summary (- for stdout).")
@click.option("--max-drop", type=float, default=None, metavar="POINTS",
              help="Accuracy budget (int8): top-1 points the model may lose on --eval; tries int8, int8 with "
                   "the worst layers in float, int16x8, float16 and keeps the first within it.")
@click.option("--eval", "evaluation", type=click.Path(), default=None,
              help="Labeled evaluation data for --max-drop (image folder with class subfolders, .npz).")
@click.option("--labels", "labels", type=click.Path(), default=None, metavar="FILE",
              help="Class names, one per line in output order, stored in the model (default: the calibration "
                   "folder's classes: integer folder names are their output, other names sorted as Keras does).")
@custom_objects_option
@preprocess_options
def convert_cmd(model: str, modes: tuple[str, ...], calib: str | None, samples: int, seed: int, io: str | None,
                batch_size: int | None, allow_float: bool, target: str | None, output: str, force: bool,
                json_out: str | None, max_drop: float | None, evaluation: str | None, labels: str | None,
                size: str | None, color: str | None, mean: float | None, std: float | None) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel folder) to .tflite and print what was written."""
    import json
    from pathlib import Path

    from edgeq.quantize.converter import convert

    out = Path(output)
    _check_output(out)
    _check_json_out(json_out, force)
    mode = _modes_arg(modes)
    if isinstance(mode, list) and (target is not None or max_drop is not None):
        raise InvalidArgumentError("--target and --max-drop take one mode", argument="--mode",
                                   received=",".join(modes), fix="give --mode int8 alone")
    pre = build_preprocess(size, color, mean, std, model)
    io = io or ("uint8" if target == "edgetpu" else "float")
    results: Any
    if max_drop is not None or evaluation is not None:  # the accuracy budget search (edgeq.budget)
        if max_drop is None or evaluation is None or target is not None:
            raise InvalidArgumentError("--max-drop and --eval go together, without --target",
                                       argument="--max-drop" if max_drop is None else "--eval",
                                       received=max_drop if max_drop is None else evaluation,
                                       fix="give both, e.g. --max-drop 0.5 --eval data/test")
        results = convert(model, mode, calibration=calib, samples=samples, seed=seed, io=io,
                          batch_size=batch_size, preprocess=pre, allow_float_fallback=allow_float,
                          max_drop=max_drop, evaluation=evaluation, labels=labels)
    else:
        results = convert(model, mode, calibration=calib, samples=samples, seed=seed, io=io,
                          batch_size=batch_size, preprocess=pre, allow_float_fallback=allow_float, target=target,
                          labels=labels)
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
    rows = [[r.mode.value, r.io.value, format_bytes(r.size_bytes),
             f"{base.size_bytes / r.size_bytes:.2f}x" if base else "-", f"{r.conversion_seconds:.1f}s",
             str(len(r.float_ops)), path.name] for r, path in zip(results, written)]
    print_rows(["mode", "io", "size", "vs float32", "time", "float ops", "file"], rows, "table",
               err=json_out == "-", drop=("float ops", "time", "vs float32", "io"),
               left=("mode", "io", "float ops", "file"), title=f"edgeq convert {Path(model).name}")
    console = _console(stderr=json_out == "-")
    console.print(f"wrote {len(written)} file(s) to {written[0].parent}")
    if target == "edgetpu":
        _compile_for_edgetpu(results[0], written[0], force, console)
    if results[0].budget is not None:
        click.echo(results[0].budget.table(), nl=False, err=json_out == "-")
    if json_out:
        payload = json.dumps({"schema": "edgeq/convert/1",
                              "results": [dict(r.to_dict(), path=str(p),
                                               **({"budget": r.budget.to_dict()} if r.budget is not None else {}))
                                          for r, p in zip(results, written)]},
                             indent=2)
        if json_out == "-":
            click.echo(payload)
        else:
            atomic_write_text(json_out, payload + "\n", overwrite=force, argument="--json")


def _compile_for_edgetpu(result: Any, path: Any, force: bool, console: Any) -> None:
    """Show the predicted Edge TPU mapping; run edgetpu_compiler where it is installed."""
    import shutil

    from edgeq.targets.edgetpu.compiler import run_edgetpu_compiler

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


# --- quantization-aware training and per-layer debugging: `edgeq qat`, `edgeq debug` --------------

def _check_free(paths: list[Any], force: bool, option: str) -> None:
    for p in paths:
        if p is not None and p.exists() and not force:
            raise OutputExistsError("output file exists", argument=option, received=str(p),
                                    fix=f"choose another {option} or pass --force to overwrite")
        if p is not None:
            check_writable(p, True, argument=option)


@cli.command("qat")
@native_log_option
@click.argument("model", type=click.Path())
@click.option("--train", "train", type=click.Path(), required=True,
              help="Labeled training data: image folder with class subfolders, or .npz with x and y.")
@click.option("--val", "val", type=click.Path(), default=None, help="Labeled validation data, same forms.")
@click.option("--epochs", type=int, default=2, show_default=True, help="Epochs of fine-tuning.")
@click.option("--learning-rate", "--lr", "learning_rate", type=float, default=1e-4, show_default=True,
              help="Adam's learning rate.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Training batch size.")
@click.option("--train-samples", type=int, default=None, help="Train on a seeded subset of N samples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of shuffling and subsets.")
@click.option("--io", type=Choice(["float", "int8", "uint8"]), default="float", show_default=True,
              help="I/O type of the int8 model: float, int8, uint8.")
@click.option("--output", "-o", type=click.Path(), default="out", show_default=True,
              help="Output folder, or a .tflite file name.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--json", "json_out", type=click.Path(), default=None, help="Also write a JSON summary (- for stdout).")
@click.option("--labels", "labels", type=click.Path(), default=None, metavar="FILE",
              help="Class names, one per line in output order; class folders are the outputs of their names "
                   "(default: integer folder names are their output, other names sorted as Keras does).")
@custom_objects_option
@preprocess_options
def qat_cmd(model: str, train: str, val: str | None, epochs: int, learning_rate: float, batch_size: int,
            train_samples: int | None, seed: int, io: str, output: str, force: bool, json_out: str | None,
            labels: str | None, size: str | None, color: str | None, mean: float | None,
            std: float | None) -> None:
    """Fine-tune MODEL with quantization-aware training on --train, then write the int8 .tflite.

    Keras 3 models are rebuilt in tf_keras (checked to give the same outputs); layers
    tensorflow-model-optimization cannot quantize get an output-only or passthrough
    scheme, or stay float, and are listed.
    """
    import json
    from pathlib import Path

    from edgeq.quantize.qat.train import qat

    out = Path(output)
    _check_output(out)
    _check_json_out(json_out, force)
    if out.suffix == ".tflite":
        _check_free([out], force, "--output")
    pre = build_preprocess(size, color, mean, std, model)
    result = qat(model, train, validation=val, epochs=epochs, learning_rate=learning_rate,
                 batch_size=batch_size, preprocess=pre, samples=train_samples, seed=seed, labels=labels)
    converted = result.convert(io=io, seed=seed)
    target = out if out.suffix == ".tflite" else out / converted.default_filename
    _check_free([target], force, "--output")
    written = converted.save(target, overwrite=force)
    console = _console(stderr=json_out == "-")
    last = {k: v[-1] for k, v in result.history.items()}
    console.print(f"trained {result.epochs} epoch(s) in {result.seconds:.1f}s: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in last.items()), highlight=False)
    for p in result.special_layers:
        console.print(f"  {p.layer} ({p.kind}): {p.how} - {p.reason}", highlight=False, markup=False)
    console.print(f"wrote {written} ({format_bytes(converted.size_bytes)}, int8, io {converted.io.value})",
                  highlight=False)
    if json_out:
        payload = json.dumps({"schema": "edgeq/qat/1", "qat": result.to_dict(),
                              "result": dict(converted.to_dict(), path=str(written))}, indent=2)
        if json_out == "-":
            click.echo(payload)
        else:
            atomic_write_text(json_out, payload + "\n", overwrite=force, argument="--json")


@cli.command("debug")
@native_log_option
@click.argument("model", type=click.Path())
@click.option("--calib", "calib", type=click.Path(), required=True,
              help="Calibration data: image folder, .npy or .npz.")
@click.option("--samples", type=int, default=100, show_default=True, help="Samples to calibrate and measure on.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sample.")
@click.option("--limit", type=int, default=20, show_default=True, help="Show the worst N layers (0: all).")
@click.option("--plot", "plot_path", type=click.Path(), default=None, help="Write a PNG of SQNR per layer.")
@click.option("--json", "json_out", type=click.Path(), default=None, help="Write the report as JSON (- for stdout).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@custom_objects_option
@preprocess_options
def debug_cmd(model: str, calib: str, samples: int, seed: int, limit: int, plot_path: str | None,
              json_out: str | None, force: bool, size: str | None, color: str | None, mean: float | None,
              std: float | None) -> None:
    """Per-layer int8 quantization error of MODEL (RMSE, RMSE/scale, SQNR), worst layers first."""
    import json
    from pathlib import Path

    from edgeq.quantize.layer_error import debug

    _check_free([Path(plot_path) if plot_path else None], force, "--plot")
    _check_free([Path(json_out) if json_out and json_out != "-" else None], force, "--json")
    pre = build_preprocess(size, color, mean, std, model)
    report = debug(model, calib, samples=samples, seed=seed, preprocess=pre)
    console = _console(stderr=json_out == "-")
    click.echo(report.table(limit=limit or None), nl=False, err=json_out == "-")
    if plot_path:
        console.print(f"wrote {report.plot(plot_path, overwrite=force)}", highlight=False)
    if json_out:
        payload = json.dumps(report.to_dict(), indent=2)
        if json_out == "-":
            click.echo(payload)
        else:
            atomic_write_text(json_out, payload + "\n", overwrite=force, argument="--json")


# --- results store: `edgeq store import`, `edgeq history` ------------------------------------------

_db_option = click.option(
    "--db", "db", metavar="PATH", envvar="EDGEQ_DB", default=None, show_envvar=True,
    help="Results database (default: $EDGEQ_DB, else ~/.edgeq/results.db).")


@cli.group("store")
def store_group() -> None:
    """Record measurements in the results store (an SQLite file)."""


@store_group.command("import")
@click.argument("files", nargs=-1, required=True, metavar="FILE.json...")
@click.option("--device", metavar="LABEL", default=None,
              help="Device label to record (default: taken from the file's sysinfo).")
@_db_option
def store_import(files: tuple[str, ...], device: str | None, db: str | None) -> None:
    """Record JSON files written by `edgeq-device bench --json` or `edgeq-device eval --json`.

    Every file is checked before any is recorded; a file already in the store is not
    recorded twice.
    """
    from edgeq.store.db import ResultsStore

    _check_db(db)
    measurements = [ResultsStore.read_device_json(f, device=device) for f in files]
    with ResultsStore(db) as store:
        for f, m in zip(files, measurements):
            row_id, new = store.record(m)
            what = "recorded as" if new else "already recorded as"
            click.echo(f"{f}: {what} run #{row_id} ({m.kind}, {m.label}, {m.mode}, {m.device}, "
                       f"{m.runtime}, {m.threads or 'default'} threads)")


def _parse_fraction(text: str, option: str) -> float:
    """'10%' -> 0.10; '0.1' -> 0.1."""
    from edgeq_device.errors import InvalidArgumentError

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


_HISTORY_COLUMNS = ("#", "UTC", "model", "sha256", "mode", "device", "runtime", "thr", "kind", "KiB", "p50 ms",
                    "p90 ms", "top-1 %", "agree %", "SQNR dB")
# What a narrow terminal loses first; #, model, mode, device and p50 ms always stay.
_HISTORY_LESSER = ("sha256", "SQNR dB", "p90 ms", "runtime", "agree %", "KiB", "thr", "kind", "UTC", "top-1 %")


@cli.command("history")
@click.option("--model", metavar="NAME_OR_HASH", default=None,
              help="Only this model: its name or a prefix (6+ hex digits) of its sha256.")
@click.option("--device", metavar="LABEL", default=None, help="Only this device (host, a board label).")
@click.option("--mode", type=Choice([*_MODE_NAMES, "unknown"]), default=None,
              help="Only this quantization mode.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="At most N runs.")
@click.option("--json", "json_out", metavar="PATH", default=None,
              help="Write the runs (or, with --diff, the regressions) as JSON; '-' for standard output.")
@click.option("--force", is_flag=True, help="Overwrite the --json file if it exists.")
@click.option("--diff", is_flag=True,
              help="Compare each model/mode/device/runtime/threads' latest run with the one before; "
                   "exit 1 on a regression.")
@click.option("--threshold-latency", default="10%", show_default=True, metavar="PCT",
              help="With --diff: flag p50 latency up by more than this (10% or 0.10).")
@click.option("--threshold-accuracy", type=float, default=0.5, show_default=True, metavar="POINTS",
              help="With --diff: flag top-1 accuracy down by more than this many percentage points.")
@format_option
@_db_option
def history(model: str | None, device: str | None, mode: str | None, limit: int | None,
            json_out: str | None, force: bool, diff: bool, threshold_latency: str,
            threshold_accuracy: float, fmt: str, db: str | None) -> None:
    """List recorded runs, newest first, or (--diff) find regressions against the previous run.

    With --diff the exit status is 1 when a regression is found, so a CI script can fail on it.
    """
    import json as _json

    from edgeq_device.fileio import atomic_write_text

    from edgeq.store.db import ResultsStore

    lat = _parse_fraction(threshold_latency, "--threshold-latency")
    _check_json_out(json_out, force)
    to_stdout = json_out == "-" or fmt == "json"  # the JSON document goes to standard output
    if diff and fmt in ("md", "csv"):
        raise InvalidArgumentError("--diff prints regressions as lines or JSON", argument="--format",
                                   received=fmt, fix="use --format table or json with --diff")
    with ResultsStore(db, create=False) as store:
        if diff:
            regressions = store.diff(model=model, device=device, mode=mode, latency_threshold=lat,
                                     accuracy_threshold=threshold_accuracy)
            if json_out is not None or to_stdout:
                text = _json.dumps([r.to_dict() for r in regressions], indent=2) + "\n"
                if json_out not in (None, "-"):
                    atomic_write_text(json_out, text, overwrite=force, argument="--json")
                if to_stdout:
                    click.echo(text, nl=False)
            if not to_stdout:
                if not regressions:
                    click.echo(f"no regressions (p50 latency within +{lat * 100:g}%, "
                               f"top-1 accuracy within -{threshold_accuracy:g} points of the previous run)")
                for r in regressions:
                    click.echo(click.style("regression", fg="red", bold=True) + f": {r.describe()}")
            if regressions:
                raise SystemExit(1)
            return
        runs = store.runs(model=model, device=device, mode=mode, limit=limit)
    if json_out is not None or to_stdout:
        text = _json.dumps([m.to_dict() for m in runs], indent=2) + "\n"
        if json_out not in (None, "-"):
            atomic_write_text(json_out, text, overwrite=force, argument="--json")
        if to_stdout:
            click.echo(text, nl=False)
            return
    if not runs and fmt == "table":
        click.echo("no runs recorded" + (" that match" if model or device or mode else ""))
        return
    rows = [[str(m.id), m.created[:16].replace("T", " "), m.label, m.model_sha256[:8], m.mode, m.device,
             m.runtime, str(m.threads or "-"), m.kind, "-" if m.size_bytes is None else f"{m.size_bytes / 1024:.1f}",
             _fmt(m.latency_p50_us, 1e-3), _fmt(m.latency_p90_us, 1e-3), _fmt(m.accuracy_top1, 100, 2),
             _fmt(m.agreement, 100, 2), _fmt(m.sqnr_db, 1.0, 1)] for m in runs]
    print_rows(list(_HISTORY_COLUMNS), rows, fmt, drop=_HISTORY_LESSER,
               left=("UTC", "model", "sha256", "mode", "device", "runtime", "kind"),
               title=f"{len(runs)} run(s), newest first")


# --- model analysis: `edgeq analyze` -----------------------------------------------------------------


@cli.command("analyze")
@click.argument("model", type=click.Path())
@click.option("--target", type=Choice(["edgetpu"]), default=None,
              help="Predict which ops map to this accelerator (edgetpu: Coral Edge TPU).")
@click.option("--latency-us", type=float, default=None, metavar="X",
              help="A measured latency in microseconds, to report achieved MAC/s.")
@click.option("--json", "json_out", metavar="PATH", default=None,
              help="Write the analysis as JSON to PATH (- for stdout; the tables then go to stderr).")
@click.option("--force", is_flag=True, help="Overwrite the --json file if it exists.")
@format_option
def analyze_cmd(model: str, target: str | None, latency_us: float | None, json_out: str | None,
                force: bool, fmt: str) -> None:
    """Analyze MODEL.tflite: ops in order with tensors and MACs, parameters, peak memory, Edge TPU mapping.

    Peak activation memory is an estimate from tensor lifetimes; the runtime's
    arena planner may reuse memory in place.
    """
    from rich.table import Table

    from edgeq.measure.analysis import analyze
    from edgeq.report.markdown import markdown_table

    _check_json_out(json_out, force)
    result = analyze(model, target=target, latency_us=latency_us)
    if fmt == "json":
        if json_out and json_out != "-":
            result.save(json_out, overwrite=force)
        click.echo(result.to_json())
        return
    to_err = json_out == "-"
    console = _console(stderr=to_err)
    tpu = {p.index: p for p in result.edgetpu.ops} if result.edgetpu is not None else {}
    header = ["#", "op", "inputs", "weights", "outputs", "MACs"] + (["Edge TPU"] if tpu else [])
    rows, styles = [], []
    for op in result.ops:
        row = [str(op.index), op.name,
               "\n".join(t.describe() for t in op.inputs if not t.is_constant),
               "\n".join(f"{t.dtype}{list(t.shape)}" for t in op.inputs if t.is_constant),
               "\n".join(t.describe() for t in op.outputs),
               f"{op.macs:,}" if op.macs else ""]
        style = None
        if tpu:
            p = tpu[op.index]
            style = {"mapped": None, "io": "yellow", "unsupported": "bold red"}.get(p.status, "red")
            row.append("Edge TPU" if p.status == "mapped" else f"CPU ({p.status})")
        rows.append(row)
        styles.append(style)
    print_rows(header, rows, fmt, err=to_err, drop=("weights", "inputs"),
               left=("op", "inputs", "weights", "outputs", "Edge TPU"), title=f"edgeq analyze {result.source}",
               styles=styles)
    if fmt == "csv":
        if json_out and json_out != "-":
            result.save(json_out, overwrite=force)
        elif json_out == "-":
            click.echo(result.to_json())
        return
    peak_name = result.ops[result.peak_op].name if 0 <= result.peak_op < len(result.ops) else "-"
    total_rows = [["ops", f"{len(result.ops)} ({', '.join(f'{k} {v}' for k, v in result.op_counts.items())})"],
                  ["MACs", f"{result.total_macs:,} ({result.total_macs / 1e6:.2f} M)"]]
    total_rows += [[f"  {name}", f"{macs:,}"] for name, macs in result.macs_by_op.items()]
    total_rows.append(["parameters", f"{result.total_params:,} ({format_bytes(result.total_param_bytes)})"])
    total_rows += [[f"  {dtype}", f"{t.elements:,} in {t.tensors} tensors ({format_bytes(t.bytes)})"]
                   for dtype, t in result.params_by_dtype.items()]
    total_rows.append(["peak activation memory (estimate)",
                       f"{format_bytes(result.peak_activation_bytes)} at op {result.peak_op} {peak_name}"])
    if result.macs_per_second is not None:
        total_rows.append(["achieved", f"{result.macs_per_second / 1e9:.3f} GMAC/s at {latency_us:g} us"])
    if fmt == "md":
        click.echo("\n" + markdown_table(["totals", ""], total_rows), err=to_err, nl=False)
    else:
        totals = Table(show_header=False, title="totals", title_justify="left")
        totals.add_column("what", no_wrap=True)
        totals.add_column("value", justify="right", overflow="fold")
        for cells in total_rows:
            totals.add_row(*cells)
        console.print(totals)
    if result.edgetpu is not None:
        pred = result.edgetpu
        colour = "green" if pred.fully_mapped else "red" if pred.mapped_count == 0 else "yellow"
        console.print(f"[bold]Edge TPU prediction:[/] [{colour}]{pred.summary()}[/]")
        seen: dict[tuple[str, str], list[int]] = {}
        for prob in pred.problems:
            key = (prob.message if prob.op_index is None else f"{prob.code}: {prob.fix}", prob.severity)
            seen.setdefault(key, []).append(-1 if prob.op_index is None else prob.op_index)
        for prob in pred.problems:
            key = (prob.message if prob.op_index is None else f"{prob.code}: {prob.fix}", prob.severity)
            where = seen.pop(key, None)
            if where is None:
                continue
            tag = "[red]error[/]" if prob.severity == "error" else "[yellow]warning[/]"
            more = f" (and {len(where) - 1} more ops)" if len(where) > 1 else ""
            at = f"op {prob.op_index} {prob.op_name}: " if prob.op_index is not None else ""
            console.print(f"  {tag} {at}{prob.message}{more}\n      fix: {prob.fix}", highlight=False)
    if json_out == "-":
        click.echo(result.to_json())
    elif json_out:
        result.save(json_out, overwrite=force)
        console.print(f"wrote {json_out}")


@cli.command("deploy")
@click.argument("model", type=click.Path())
@click.option("--to", "targets", multiple=True, metavar="USER@HOST[:PORT]",
              help="A board to deploy to (repeat for several); a Host alias from ~/.ssh/config works.")
@click.option("--fleet", type=click.Path(), default=None, metavar="devices.toml",
              help="Boards with labels and per-board options (port, identity, python, threads, runtime, ...).")
@click.option("--bench", is_flag=True, help="Run edgeq-device bench on each board.")
@click.option("--eval", "eval_data", type=click.Path(), default=None, metavar="DATA",
              help="Evaluate on this image folder on each board (copied when it changed).")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N", help="Interpreter threads.")
@click.option("--runtime", type=Choice(["litert", "tflite-runtime", "tensorflow"]), default=None,
              help="TFLite runtime on the boards (default: first found).")
@click.option("--python", default=None, metavar="PATH", help="The boards' Python [python3].")
@click.option("--parallel", type=click.IntRange(min=1), default=4, show_default=True,
              help="At most this many boards at once.")
@click.option("--timeout", type=click.FloatRange(min=1), default=None, metavar="SECS",
              help="Longest any one step may take on a board [900].")
@click.option("--offline", is_flag=True, default=None, help="The boards have no internet: never pip-download there.")
@click.option("--ssh-config", type=click.Path(), default=None, metavar="FILE",
              help="Use this ssh_config instead of ~/.ssh/config.")
@click.option("-i", "--identity", type=click.Path(), default=None, metavar="KEY", help="SSH private key.")
@click.option("--workdir", default=None, metavar="DIR", help="The edgeq folder on the boards [~/.edgeq-device].")
@click.option("--bench-arg", "bench_args", multiple=True, metavar="ARG",
              help="Extra argument for edgeq-device bench (repeat), e.g. --bench-arg=--runs=100.")
@_db_option
@click.option("--no-store", is_flag=True, help="Do not record results in the results database.")
@click.option("--report", "report_path", type=click.Path(), default=None, metavar="PATH",
              help="Also write the whole report as JSON.")
@click.option("--force", is_flag=True, help="Overwrite the --report file if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def deploy_cmd(model: str, targets: tuple[str, ...], fleet: str | None, bench: bool, eval_data: str | None,
               threads: int | None, runtime: str | None, python: str | None, parallel: int,
               timeout: float | None, offline: bool | None, ssh_config: str | None, identity: str | None,
               workdir: str | None, bench_args: tuple[str, ...], db: str | None, no_store: bool,
               report_path: str | None, force: bool, quiet: bool) -> None:
    """Copy MODEL (.tflite) to boards over SSH, set them up, and measure it there.

    Uses the system ssh, so ~/.ssh/config, keys, agent and ProxyJump work as in a
    terminal. On each board edgeq-device is installed into a venv under
    ~/.edgeq-device/ on first use; the model and data are copied only when they
    changed. Boards run concurrently; one that fails does not stop the others.
    Results are stored under each board's label (edgeq history --device LABEL).
    Exit status 1 when a board failed.
    """
    from edgeq.deployment.orchestrate import deploy

    if report_path:
        check_writable(report_path, force, argument="--report")
    if not no_store:
        _check_db(db)
    report = deploy(model, list(targets) or None, fleet=fleet, bench=bench, eval=eval_data, threads=threads,
                    runtime=runtime, python=python, parallel=parallel, timeout=timeout, offline=offline,
                    ssh_config=ssh_config, identity=identity, workdir=workdir, db=db, store=not no_store,
                    bench_args=bench_args, progress=not quiet)
    click.echo(report.summary())
    if report_path:
        report.save(report_path, overwrite=force)
    if not report.ok:
        raise SystemExit(1)


@cli.command("compare")
@native_log_option
@click.argument("model", type=click.Path())
@click.option("--calib", "calib", type=click.Path(), required=True, help="Calibration data (image folder, .npy, .npz).")
@click.option("--eval", "evaluation", type=click.Path(), required=True, help="Labeled evaluation data.")
@click.option("--modes", type=ChoiceList((*_MODE_NAMES, "all")), multiple=True, default=["all"],
              callback=flatten_choices, show_default=True,
              help="Modes to compare: all, or several as a comma list (int8,float16) or by repeating --modes.")
@click.option("--threads", default=None, help="Comma-separated thread counts to time [1,<cores>].")
@click.option("--io", type=Choice(["float", "int8", "uint8"]), default="float", show_default=True,
              help="I/O type of the int8 model.")
@click.option("--samples", type=int, default=200, show_default=True, help="Calibration samples.")
@click.option("--eval-samples", type=int, default=None, help="Evaluate on a seeded subset of this many.")
@click.option("--budget", type=float, default=1.0, show_default=True, help="Accuracy budget, points of top-1.")
@click.option("--prefer", type=Choice(["size", "latency"]), default="size", show_default=True,
              help="Recommend the smallest or the fastest mode within the budget.")
@click.option("--db", type=click.Path(), default=None, help="Results store [$EDGEQ_DB or ~/.edgeq/results.db].")
@click.option("--no-store", is_flag=True, help="Do not record the measurements.")
@click.option("--output", "-o", type=click.Path(), default="out/compare", show_default=True, help="Report folder.")
@click.option("--force", is_flag=True, help="Overwrite existing report files.")
@click.option("--labels", "labels", type=click.Path(), default=None, metavar="FILE",
              help="Class names, one per line in output order, stored in the models; --eval's class folders "
                   "are the outputs of their names (default: the calibration folder's classes, else --eval's: "
                   "integer folder names are their output, other names sorted as Keras does).")
@custom_objects_option
@format_option
@preprocess_options
def compare_cmd(model: str, calib: str, evaluation: str, modes: tuple[str, ...], threads: str | None, io: str, samples: int,
                eval_samples: int | None, budget: float, prefer: str, db: str | None, no_store: bool, output: str,
                force: bool, fmt: str, labels: str | None, size: str | None, color: str | None, mean: float | None,
                std: float | None) -> None:
    """Convert MODEL in every mode and compare size, accuracy, fidelity and latency; write a report."""
    from pathlib import Path

    from edgeq.comparison.run import compare
    from edgeq.store.db import ResultsStore

    out = Path(output)
    check_output_folder(out, argument="--output")
    if not no_store:
        _check_db(db)
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
    mode_list: Any = _modes_arg(modes)
    pre = build_preprocess(size, color, mean, std, model)
    store = None if no_store else ResultsStore(db)
    comp = compare(model, calibration=calib, evaluation=evaluation, modes=mode_list, threads=thread_list, io=io,
                   samples=samples, eval_samples=eval_samples, budget=budget, prefer=prefer, preprocess=pre,
                   labels=labels, store=store)
    if fmt == "table":
        from rich.console import Console

        from edgeq.report.tables import natural_width, rich_table, table_rows

        console = Console()
        if not console.is_terminal:  # piped: every column, each row on one line
            console = Console(width=max(console.width, natural_width(*table_rows(comp.to_dict()))))
        console.print(rich_table(comp))
    else:  # the table (or results.json) alone on standard output; what else is said goes to stderr
        print_compare(comp, fmt)
        console = _console(stderr=True)
    for note in comp.notes:
        console.print(f"note: {note}")
    written = comp.save(out, overwrite=force)
    console.print(f"wrote {out}/report.html, report.md, results.json ({len(written)} files)"
                  + ("" if store is None else f"; measurements stored in {store.path}"))


def print_compare(comp: Any, fmt: str) -> None:
    """Print a comparison's table as Markdown or CSV, or its results.json (``fmt="json"``)."""
    import json

    from edgeq.report.files import json_default as _json_default
    from edgeq.report.markdown import markdown_table
    from edgeq.report.tables import csv_table, table_rows

    if fmt == "json":
        click.echo(json.dumps(comp.to_dict(), indent=2, default=_json_default))
        return
    header, rows = table_rows(comp.to_dict())
    click.echo((markdown_table if fmt == "md" else csv_table)(header, rows), nl=False)


@cli.command("report")
@click.argument("folder", type=click.Path())
@click.option("--db", type=click.Path(), default=None, envvar="EDGEQ_DB",
              help="Results store [$EDGEQ_DB or ~/.edgeq/results.db].")
def report_cmd(folder: str, db: str | None) -> None:
    """Rewrite FOLDER's report (from its results.json) with what boards measured for the same models.

    Deploy a model from FOLDER/models with `edgeq deploy --bench --eval`, then run this: report.md,
    report.html, results.json and the plots in FOLDER are written again with an "On boards" table.
    """
    import json
    from pathlib import Path

    from edgeq.comparison.records import Comparison
    from edgeq.errors import DataError

    path = Path(folder) / "results.json"
    if path.is_file():
        check_output_folder(folder, argument="FOLDER")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError("cannot read the comparison's results.json", argument="FOLDER", received=str(path),
                        fix="give the folder edgeq compare wrote (-o)") from exc
    comp = Comparison.from_dict(data).with_board_results(db)
    found = len(comp.boards)
    comp.save(folder, overwrite=True)
    _console().print(f"rewrote {folder}/report.html and report.md with {found} board measurement(s)")


def main() -> None:
    """Entry point of the ``edgeq`` console script."""
    cli(prog_name="edgeq")


if __name__ == "__main__":
    main()
