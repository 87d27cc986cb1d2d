"""``edgeq deploy``: copy a .tflite to boards over SSH, set them up, and measure it there."""

from __future__ import annotations

import click
from edgeq_device.cli.clikit import Choice
from edgeq_device.results.fileio import check_writable

from edgeq.cli.options import check_db, db_option, force_option
from edgeq.deployment.orchestrate import deploy

__all__ = ["deploy_cmd"]


@click.command("deploy")
@click.argument("model", type=click.Path())
@click.option("--to", "targets", multiple=True, metavar="USER@HOST[:PORT]",
              help="A board to deploy to (repeat for several); a Host alias from ~/.ssh/config works.")
@click.option("--fleet", type=click.Path(), default=None, metavar="devices.toml",
              help="Boards with labels and per-board options (port, identity, python, threads, runtime, ...).")
@click.option("--inventory", "-I", "inventory", type=click.Path(), default=None, metavar="FILE|DIR",
              help="An Ansible inventory (INI/YAML, group_vars/host_vars; any inventory with ansible-core "
                   "installed): its hosts are the boards, their groups the boards' labels.")
@click.option("--limit", "-l", default=None, metavar="PATTERN",
              help="Only the inventory's hosts this Ansible pattern selects ('kitchen', 'pis:!pi-3', 'pis:&lab').")
@click.option("--bench", is_flag=True, help="Run edgeq-device bench on each board.")
@click.option("--profile", is_flag=True,
              help="Run edgeq-device profile on each board: every operator timed alone, beside the whole model.")
@click.option("--eval", "eval_data", type=click.Path(), default=None, metavar="DATA",
              help="Evaluate on this image folder on each board (copied when it changed).")
@click.option("--reference", type=click.Path(), default=None, metavar="Y.npz|DIR",
              help="Measure each board's fidelity to the float Keras model: expected outputs (.npz), or the "
                   "folder edgeq compare wrote (its reference.npz and inputs.npz).")
@click.option("--inputs", type=click.Path(), default=None, metavar="X.npz",
              help="The inputs --reference answers (default with a compare folder: its inputs.npz).")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N", help="Interpreter threads.")
@click.option("--runtime", type=Choice(["litert", "tflite-runtime", "tensorflow"]), default=None,
              help="TFLite runtime on the boards (default: first found).")
@click.option("--python", default=None, metavar="PATH", help="The boards' Python [python3].")
@click.option("--forks", "-f", "--parallel", "forks", type=click.IntRange(min=1), default=5, show_default=True,
              help="At most this many boards (SSH connections) at once (--parallel: its old name).")
@click.option("--retries", type=click.IntRange(min=0), default=1, show_default=True,
              help="Run a board again this many times when its connection drops mid-run.")
@click.option("--resume", default=None, metavar="RUN_ID",
              help="Run only the boards of this run (its id is printed at the end) that did not finish ok.")
@click.option("--timeout", type=click.FloatRange(min=1), default=None, metavar="SECS",
              help="Longest any one step may take on a board [900].")
@click.option("--offline", is_flag=True, default=None, help="The boards have no internet: never pip-download there.")
@click.option("--ssh-config", type=click.Path(), default=None, metavar="FILE",
              help="Use this ssh_config instead of ~/.ssh/config.")
@click.option("-i", "--identity", type=click.Path(), default=None, metavar="KEY", help="SSH private key.")
@click.option("--workdir", default=None, metavar="DIR", help="The edgeq folder on the boards [~/.edgeq-device].")
@click.option("--bench-arg", "bench_args", multiple=True, metavar="ARG",
              help="Extra argument for edgeq-device bench (repeat), e.g. --bench-arg=--runs=100.")
@db_option
@click.option("--no-store", is_flag=True, help="Do not record results in the results database.")
@click.option("--report", "report_path", type=click.Path(), default=None, metavar="PATH",
              help="Also write the whole report as JSON.")
@force_option("Overwrite the --report file if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def deploy_cmd(model: str, targets: tuple[str, ...], fleet: str | None, inventory: str | None, limit: str | None,
               bench: bool, profile: bool, eval_data: str | None, reference: str | None, inputs: str | None,
               threads: int | None, runtime: str | None, python: str | None, forks: int, retries: int,
               resume: str | None,
               timeout: float | None, offline: bool | None, ssh_config: str | None, identity: str | None,
               workdir: str | None, bench_args: tuple[str, ...], db: str | None, no_store: bool,
               report_path: str | None, force: bool, quiet: bool) -> None:
    """Copy MODEL (.tflite) to boards over SSH, set them up, and measure it there.

    Uses the system ssh, so ~/.ssh/config, keys, agent and ProxyJump work as in a
    terminal. On each board edgeq-device is installed into a venv under
    ~/.edgeq-device/ on first use; the model and data are copied only when they
    changed. Boards run concurrently; one that fails does not stop the others.
    Boards come from --to, a devices.toml (--fleet) or an Ansible inventory
    (--inventory, --limit). At most --forks boards run at once; each ends ok,
    failed (with its step and message), unreachable, timed-out or interrupted,
    and the summary counts them. The run's id and each board's state are
    recorded with the results, under each board's label (edgeq history --device
    LABEL); --resume RUN_ID reruns the boards that did not finish ok.
    Exit status 1 when a board did not end ok.
    """
    if report_path:
        check_writable(report_path, force, argument="--report")
    if not no_store:
        check_db(db)
    report = deploy(model, list(targets) or None, fleet=fleet, bench=bench, evaluation=eval_data, threads=threads,
                    runtime=runtime, python=python, forks=forks, retries=retries, resume=resume,
                    inventory=inventory, limit=limit, timeout=timeout, offline=offline,
                    ssh_config=ssh_config, identity=identity, workdir=workdir,
                    store=False if no_store else (db or True),
                    bench_args=bench_args, progress=not quiet, profile=profile, inputs=inputs, reference=reference)
    click.echo(report.summary())
    if report_path:
        report.save(report_path, overwrite=force)
    if not report.ok:
        raise SystemExit(1)

