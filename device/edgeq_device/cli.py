"""The ``edgeq-device`` command: ``info``, ``bench`` and ``eval`` on this machine.

A thin layer over :func:`edgeq_device.model_info`, :func:`edgeq_device.benchmark`
and :func:`edgeq_device.evaluate`: options become arguments, results are
printed, ``--json PATH|-`` writes their versioned JSON form. Errors edgeq
raises on purpose print one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import click

from . import __version__
from .bench import BenchParams, benchmark, format_bench
from .clikit import Choice, ErrorBoundaryGroup, echo_err
from .evaluate import evaluate, format_eval, model_preprocess
from .fileio import check_writable
from .info import format_info, model_info
from .report_json import JsonResult, write_json
from .runtime import RUNTIME_NAMES

__all__ = ["cli", "main"]

F = Callable[..., Any]


def _parse_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = value.lower().replace("×", "x").split("x")
    try:
        w, h = (int(p) for p in parts)
        if w <= 0 or h <= 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 224x224, got {value!r}") from None
    return w, h


def _parse_numbers(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        nums = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected a number or R,G,B numbers, got {value!r}") from None
    if len(nums) not in (1, 3):
        raise click.BadParameter(f"expected one number or three (R,G,B), got {value!r}")
    return nums[0] if len(nums) == 1 else nums


def _parse_options(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE such as device=usb:0, got {item!r}")
        out[key.strip()] = val.strip()
    return out


def _runtime_options(f: F) -> F:
    f = click.option("--delegate-option", "delegate_options", multiple=True, metavar="KEY=VALUE",
                     callback=_parse_options,
                     help="Option for the delegate, e.g. device=usb:0 (repeatable).")(f)
    f = click.option("--delegate", metavar="edgetpu|PATH",
                     help="Run on a delegate: 'edgetpu' (Coral, loads libedgetpu.so.1) or the path "
                          "of an external delegate library.")(f)
    f = click.option("--xnnpack/--no-xnnpack", default=True, show_default=True,
                     help="Use the runtime's default CPU delegate (XNNPACK).")(f)
    f = click.option("--threads", type=click.IntRange(min=1), metavar="N",
                     help="Interpreter threads (default: the runtime's).")(f)
    f = click.option("--runtime", type=Choice(RUNTIME_NAMES),
                     help="TFLite runtime to use (default: first found of " + ", ".join(RUNTIME_NAMES)
                          + ").")(f)
    return f


def _preprocess_options(f: F) -> F:
    f = click.option("--std", callback=_parse_numbers, metavar="S|R,G,B",
                     help="Float input = (pixel - mean) / std.")(f)
    f = click.option("--mean", callback=_parse_numbers, metavar="M|R,G,B",
                     help="Subtracted from pixels 0..255.")(f)
    f = click.option("--color", type=Choice(["rgb", "l"]),
                     help="Channels: rgb or l (grayscale).")(f)
    f = click.option("--size", callback=_parse_size, metavar="WxH",
                     help="Resize images to WIDTHxHEIGHT (default: the model's metadata or input shape).")(f)
    return f


def _output_options(f: F) -> F:
    f = click.option("--force", is_flag=True, help="Overwrite the --json file if it exists.")(f)
    f = click.option("--json", "json_path", metavar="PATH|-",
                     help="Also write the result as JSON to PATH (atomically), or only JSON to stdout "
                          "with '-'.")(f)
    return f


def _check_json(json_path: str | None, force: bool) -> None:
    if json_path and json_path != "-":
        check_writable(json_path, force, argument="--json")


def _emit(result: JsonResult, text: str, json_path: str | None, force: bool) -> None:
    if json_path == "-":
        write_json(result, "-")
        return
    click.echo(text)
    if json_path:
        written = write_json(result, json_path, overwrite=force)
        echo_err(f"wrote {written}")


@click.group(cls=ErrorBoundaryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq-device")
def cli() -> None:
    """Run and measure .tflite models on this machine (Raspberry Pi, Coral Edge TPU, laptop).

    Needs only numpy, pillow, flatbuffers and a TFLite runtime (LiteRT, tflite-runtime or
    TensorFlow); models converted by edgeq carry their preprocessing and labels.
    """


@cli.command("info")
@click.argument("model")
@_output_options
def info_cmd(model: str, json_path: str | None, force: bool) -> None:
    """Show a model's inputs, outputs, quantization, operators and edgeq metadata (no runtime needed)."""
    _check_json(json_path, force)
    result = model_info(model)
    _emit(result, format_info(result), json_path, force)


@cli.command("bench")
@click.argument("model")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="At least this many timed runs.")
@click.option("--min-secs", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="And at least this many seconds of timed runs.")
@click.option("--max-secs", type=click.FloatRange(min=0), default=150.0, show_default=True,
              help="Stop timing after this many seconds whatever --runs says.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True,
              help="Warm-up runs before timing (reported apart).")
@click.option("--data", type=str, metavar="DIR",
              help="Take the input from an image in DIR (default: random inputs in each input's range).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@_preprocess_options
@_runtime_options
@_output_options
def bench_cmd(model: str, runs: int, min_secs: float, max_secs: float, warmup: int, data: str | None,
              seed: int, size: tuple[int, int] | None, color: str | None, mean: Any, std: Any,
              runtime: str | None, threads: int | None, xnnpack: bool, delegate: str | None,
              delegate_options: dict[str, str], json_path: str | None, force: bool) -> None:
    """Time MODEL's inference: init, first run, warm-up, then latency statistics and memory."""
    _check_json(json_path, force)
    ctx = click.get_current_context()
    if max_secs < min_secs and ctx.get_parameter_source("min_secs") is click.core.ParameterSource.DEFAULT:
        min_secs = max_secs  # a short --max-secs alone shortens the default minimum too
    params = BenchParams(runs=runs, min_secs=min_secs, max_secs=max_secs, warmup=warmup, threads=threads,
                         xnnpack=xnnpack, delegate=delegate, delegate_options=delegate_options,
                         runtime=runtime, data=data, seed=seed)
    preprocess = None
    if any(v is not None for v in (size, color, mean, std)):
        preprocess = model_preprocess(model, size=size, color=color, mean=mean, std=std)
    result = benchmark(model, params, preprocess=preprocess, log=echo_err)
    _emit(result, format_bench(result), json_path, force)


@cli.command("eval")
@click.argument("model")
@click.argument("data")
@click.option("--labels", type=str, metavar="FILE",
              help="Class names, one per line in output order (default: the model's metadata, else "
                   "the sorted class folder names).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Evaluate a seeded random sample of N images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit sample.")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Interpreters run in parallel (default: one per core).")
@click.option("--skip-unreadable", is_flag=True, help="Skip image files that cannot be read.")
@click.option("--predictions", is_flag=True, help="Keep each image's prediction in the JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_preprocess_options
@_runtime_options
@_output_options
def eval_cmd(model: str, data: str, labels: str | None, limit: int | None, seed: int,
             workers: int | None, skip_unreadable: bool, predictions: bool, quiet: bool,
             size: tuple[int, int] | None, color: str | None, mean: Any, std: Any, runtime: str | None,
             threads: int | None, xnnpack: bool, delegate: str | None, delegate_options: dict[str, str],
             json_path: str | None, force: bool) -> None:
    """Accuracy of MODEL on DATA, a folder with one subfolder of images per class.

    Preprocessing and labels come from the model's edgeq metadata; for a model from
    elsewhere give --size, --color, --mean/--std and --labels.
    """
    _check_json(json_path, force)
    preprocess = model_preprocess(model, size=size, color=color, mean=mean, std=std)
    result = evaluate(model, data, preprocess=preprocess, labels=labels, limit=limit, seed=seed,
                      workers=workers, runtime=runtime, threads=threads, xnnpack=xnnpack,
                      delegate=delegate, delegate_options=delegate_options,
                      skip_unreadable=skip_unreadable, keep_predictions=predictions,
                      progress=not quiet)
    _emit(result, format_eval(result), json_path, force)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``edgeq-device`` command."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="edgeq-device")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
