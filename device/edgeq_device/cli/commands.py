"""The ``edgeq-device`` command: ``info``, ``bench``, ``profile`` and ``eval`` on this machine.

A thin layer over :func:`edgeq_device.model_info`, :func:`edgeq_device.benchmark`
and :func:`edgeq_device.evaluate`: options become arguments, results are
printed, ``--json PATH|-`` writes their versioned JSON form. Errors edgeq
raises on purpose print one ``error: ...`` line and exit 2.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import click

from .._version import __version__
from ..measure.bench import BenchParams, benchmark, format_bench
from ..measure.profile import ProfileParams, format_profile, profile_model
from ..model.info import format_info, model_info
from ..model.preprocess_choice import choose_preprocess
from ..results.report_json import JsonResult
from ..run.runtime import RUNTIME_NAMES
from ..tasks.detection import parse_outputs_option
from ..tasks.detection_eval import DetectionResult
from ..tasks.eval_options import EvalOptions
from ..tasks.eval_result import EvalResult
from ..tasks.evaluation import format_eval
from ..tasks.masks import load_label_map, parse_ignore
from ..tasks.registry import TASKS, evaluate_task
from .clikit import (
    Choice,
    ErrorBoundaryGroup,
    check_json_out,
    echo_err,
    force_option,
    json_option,
    preprocess_options,
    write_json_out,
)

__all__ = ["cli", "main"]

F = Callable[..., Any]


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


_preprocess_options = preprocess_options(
    size="the model's metadata, else its input shape",
    color="the model's metadata (edgeq's, else TFLite's), else its input shape",
    mean="the model's metadata (edgeq's, else TFLite's); an integer input takes raw pixels; else 0",
    std="the model's metadata (edgeq's, else TFLite's); an integer input takes raw pixels; else 255")


def _output_options(f: F) -> F:
    return json_option()(force_option()(f))


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Each warning raised inside as one line on stderr (e.g. empty class folders, a guessed
    preprocessing), no source location, once."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    for message in dict.fromkeys(str(w.message) for w in caught):
        echo_err(f"warning: {message}")


def _emit(result: JsonResult, text: str, json_out: str | None, force: bool) -> None:
    """Print ``text``, and write the JSON form where ``--json`` says (with ``-`` only the JSON, on stdout)."""
    if json_out != "-":
        click.echo(text)
    if json_out and write_json_out(json_out, result.to_json(), force) is not None:
        echo_err(f"wrote {json_out}")


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
def info_cmd(model: str, json_out: str | None, force: bool) -> None:
    """Show a model's inputs, outputs, quantization, operators and edgeq metadata (no runtime needed)."""
    check_json_out(json_out, force)
    with _warnings_as_lines():
        result = model_info(model)
    _emit(result, format_info(result), json_out, force)


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
              delegate_options: dict[str, str], json_out: str | None, force: bool) -> None:
    """Time MODEL's inference: init, first run, warm-up, then latency statistics and memory."""
    check_json_out(json_out, force)
    ctx = click.get_current_context()
    if max_secs < min_secs and ctx.get_parameter_source("min_secs") is click.core.ParameterSource.DEFAULT:
        min_secs = max_secs  # a short --max-secs alone shortens the default minimum too
    params = BenchParams(runs=runs, min_secs=min_secs, max_secs=max_secs, warmup=warmup, threads=threads,
                         xnnpack=xnnpack, delegate=delegate, delegate_options=delegate_options,
                         runtime=runtime, data=data, seed=seed)
    with _warnings_as_lines():
        preprocess = choose_preprocess(model, size=size, color=color, mean=mean, std=std, warn=data is not None)
        result = benchmark(model, params, preprocess=preprocess, log=echo_err)
    _emit(result, format_bench(result), json_out, force)


@cli.command("profile")
@click.argument("model")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="At least this many timed runs of each operator.")
@click.option("--min-secs", type=click.FloatRange(min=0), default=0.02, show_default=True,
              help="And at least this many seconds of each operator's runs.")
@click.option("--top", type=click.IntRange(min=1), metavar="N",
              help="Show only the N slowest operators (the JSON keeps every one).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_runtime_options
@_output_options
def profile_cmd(model: str, runs: int, min_secs: float, top: int | None, seed: int, quiet: bool,
                runtime: str | None, threads: int | None, xnnpack: bool, delegate: str | None,
                delegate_options: dict[str, str], json_out: str | None, force: bool) -> None:
    """Time every operator of MODEL alone, beside the whole model's time.

    Each operator is cut into a model of its own, fed the values its inputs had in a
    full run and timed as bench times a model; the table ends with the sum, the whole
    model's p50 and the residual between them (what timing operators alone cannot see).
    """
    check_json_out(json_out, force)
    params = ProfileParams(runs=runs, min_secs=min_secs, threads=threads, xnnpack=xnnpack, delegate=delegate,
                           delegate_options=delegate_options, runtime=runtime, seed=seed)
    show = not quiet and sys.stderr.isatty()
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not show:
            return
        if bar is None:
            bar = click.progressbar(length=total, label="operators", file=sys.stderr)
            bar.__enter__()
        bar.update(1)
        if done == total:
            bar.__exit__(None, None, None)

    with _warnings_as_lines():
        result = profile_model(model, params, log=None if quiet else echo_err, progress=progress)
    _emit(result, format_profile(result, top=top), json_out, force)


@cli.command("eval")
@click.argument("model")
@click.argument("data", required=False)
@click.option("--task", type=Choice(tuple(TASKS)),
              help="What to measure (default: the task the model's metadata records; fidelity with "
                   "--reference; else classification).")
@click.option("--inputs", type=str, metavar="X",
              help="Samples: a .npy (one-input model), an .npz keyed by input name or index, or an image "
                   "folder (fidelity; classification with --labels-npy).")
@click.option("--reference", type=str, metavar="Y.npz",
              help="Expected outputs, keyed by output name or index: measures fidelity (SQNR, cosine, max "
                   "error, arg-max agreement).")
@click.option("--labels-npy", type=str, metavar="Y.npy",
              help="Integer class labels of the --inputs samples (classification of non-image inputs).")
@click.option("--annotations", type=str, metavar="instances.json",
              help="COCO annotations of the images in DATA, matched by file_name (detection).")
@click.option("--outputs", "outputs_text", type=str, metavar="boxes=NAME,classes=NAME,scores=NAME,count=NAME",
              help="Which outputs a detector's are (default: TFLite_Detection_PostProcess's, or by name).")
@click.option("--class-offset", type=int, metavar="N",
              help="Category id = model class + N (detection; default: the model's metadata, else 1).")
@click.option("--masks", type=str, metavar="DIR",
              help="Class-index PNG/BMP masks named like the images in DATA (segmentation): grayscale, or "
                   "palette PNGs as Pascal VOC's (255 = void).")
@click.option("--ignore-index", type=str, metavar="N[,N|LOW-HIGH]",
              help="Mask values that count nowhere: one, several (255,254), a range (250-255) or none "
                   "(segmentation; default: the model's metadata, else 255).")
@click.option("--label-map", type=str, metavar="cityscapes|FILE",
              help="Map the masks' values to classes first: cityscapes (label IDs to the 19 train IDs, "
                   "the rest 255) or a JSON/CSV file of value,class (segmentation).")
@click.option("--image-list", type=str, metavar="FILE",
              help="Evaluate only the images of DATA this file names, one a line (segmentation: Pascal VOC's "
                   "ImageSets/Segmentation/val.txt beside JPEGImages).")
@click.option("--num-classes", type=click.IntRange(min=1), metavar="N",
              help="Classes of the model (a segmenter's class-map output, default: the number of --labels; "
                   "detection's check of categories).")
@click.option("--labels", type=str, metavar="FILE",
              help="Class names, one per line in output order; a class folder is the output of its name "
                   "(default: the model's metadata, else integer folder names are their output and other "
                   "names are numbered in sorted order, as Keras does; empty folders count). Segmentation: "
                   "the names of the mask classes.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Evaluate a seeded random sample of N images.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit sample.")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Interpreters run in parallel (default: one per core).")
@click.option("--skip-unreadable", is_flag=True, help="Skip image files that cannot be read.")
@click.option("--predictions", metavar="[FILE]", is_flag=False, flag_value="", default=None,
              help="Classification: keep each image's prediction in the JSON. Detection: write the COCO "
                   "results JSON to FILE.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_preprocess_options
@_runtime_options
@_output_options
def eval_cmd(model: str, data: str | None, task: str | None, inputs: str | None, reference: str | None,
             labels_npy: str | None, annotations: str | None, outputs_text: str | None,
             class_offset: int | None, masks: str | None, ignore_index: str | None, label_map: str | None,
             image_list: str | None, num_classes: int | None,
             labels: str | None, limit: int | None, seed: int, workers: int | None, skip_unreadable: bool,
             predictions: str | None, quiet: bool, size: tuple[int, int] | None, color: str | None, mean: Any,
             std: Any, runtime: str | None, threads: int | None, xnnpack: bool, delegate: str | None,
             delegate_options: dict[str, str], json_out: str | None, force: bool) -> None:
    """Accuracy of MODEL: classification, detection, segmentation, or fidelity to reference outputs.

    \b
    classification  DATA: one subfolder of images per class (empty ones count; the labels
                    line says how folder names became outputs); or --inputs X --labels-npy Y
    detection       DATA: images, --annotations instances.json (COCO mAP by pycocotools)
    segmentation    DATA: images, --masks DIR (mIoU, pixel accuracy)
    fidelity        --inputs X --reference Y.npz (SQNR, cosine, max error per output)

    The task, preprocessing and labels come from the model's edgeq metadata, else from its
    standard TFLite metadata (normalization, color, labels packed in the model); an integer
    input with no metadata is fed raw pixels (uint8 as is, int8 as pixel - 128). The
    "preprocessing" line says what was used and where it came from; flags win.
    """
    check_json_out(json_out, force)
    outputs = parse_outputs_option(outputs_text) if outputs_text else None
    keep = predictions == ""
    with _warnings_as_lines():
        images = data is not None or (inputs is not None and os.path.isdir(inputs))
        preprocess = choose_preprocess(model, size=size, color=color, mean=mean, std=std, warn=images)
        result = evaluate_task(
            model, data, task=task, inputs=inputs, reference=reference, labels_npy=labels_npy,
            annotations=annotations, masks=masks, outputs=outputs, class_offset=class_offset,
            ignore_index=None if ignore_index is None else parse_ignore(ignore_index, "--ignore-index"),
            label_map=load_label_map(label_map, "--label-map"), image_list=image_list, num_classes=num_classes,
            predictions=predictions or None, overwrite=force, preprocess=preprocess, labels=labels,
            skip_unreadable=skip_unreadable, keep_predictions=keep, options=EvalOptions(
                limit=limit, seed=seed, workers=workers, runtime=runtime, threads=threads, xnnpack=xnnpack,
                delegate=delegate, delegate_options=delegate_options, progress=not quiet))
    if predictions and isinstance(result, DetectionResult):
        echo_err(f"wrote {predictions}")
    _emit(result, format_eval(result) if isinstance(result, EvalResult) else str(result), json_out, force)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``edgeq-device`` command."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="edgeq-device")

