"""``edgeq analyze``: a .tflite op by op (tensors, MACs), its parameters, peak memory and Edge TPU mapping."""

from __future__ import annotations

import click
from edgeq_device.cli.clikit import Choice
from edgeq_device.model.info import format_bytes
from rich.table import Table

from edgeq.cli.mcu import mcu_options, parse_bytes, resolve_board
from edgeq.cli.options import check_json_out, force_option, format_option, json_option, write_json_out
from edgeq.cli.output import make_console, print_rows
from edgeq.measure.analysis import analyze
from edgeq.report.markdown import markdown_table

__all__ = ["analyze_cmd"]


@click.command("analyze")
@click.argument("model", type=click.Path())
@click.option("--target", type=Choice(["edgetpu", "mcu"]), default=None,
              help="Predict which ops map to this accelerator (edgetpu: Coral Edge TPU); mcu: load and run the "
                   "model in TensorFlow Lite Micro's interpreter (ops it refuses, arena, flash, outputs).")
@click.option("--latency-us", type=float, default=None, metavar="X",
              help="A measured latency in microseconds, to report achieved MAC/s.")
@json_option("Write the analysis as JSON to PATH (- for stdout; the tables then go to stderr).")
@force_option("Overwrite the --json file if it exists.")
@format_option
@mcu_options
def analyze_cmd(model: str, target: str | None, latency_us: float | None, json_out: str | None,
                force: bool, fmt: str, board: str | None, boards_file: str | None, reserve_ram: str,
                reserve_flash: str) -> None:
    """Analyze MODEL.tflite: ops in order with tensors and MACs, parameters, peak memory, Edge TPU mapping.

    Peak activation memory is an estimate from tensor lifetimes; the runtime's
    arena planner may reuse memory in place.
    """
    check_json_out(json_out, force)
    result = analyze(model, target=target, latency_us=latency_us,
                     board=resolve_board(board, boards_file, target),
                     reserve_ram=parse_bytes(reserve_ram, "--reserve-ram"),
                     reserve_flash=parse_bytes(reserve_flash, "--reserve-flash"))
    if fmt == "json":
        if json_out and json_out != "-":
            write_json_out(json_out, result.to_json(), force)
        write_json_out("-", result.to_json(), force)
        return
    to_err = json_out == "-"
    console = make_console(stderr=to_err)
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
        if json_out:
            write_json_out(json_out, result.to_json(), force)
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
    if result.mcu is not None:
        colour = "green" if result.mcu.supported and (result.mcu.fit is None or result.mcu.fit.fits) else "red"
        console.print(f"[bold]microcontroller (TFLM):[/] [{colour}]{result.mcu.summary()}[/]", highlight=False)
    if json_out and write_json_out(json_out, result.to_json(), force) is not None:
        console.print(f"wrote {json_out}")

