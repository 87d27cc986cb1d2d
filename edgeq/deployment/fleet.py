"""The boards to deploy to: :class:`Board` (one board and how to reach it), the
``devices.toml`` fleet file (:func:`load_fleet`), and the list one deploy works on
(:func:`boards_for`: the fleet file's boards and the ``to=`` ones, with the
run's settings filling in what a board leaves at its default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from edgeq._toml import toml
from edgeq.deployment.ssh import SSHTarget, parse_target
from edgeq.errors import InvalidArgumentError

__all__ = ["BOARD_KEYS", "DEFAULT_TIMEOUT", "DEFAULT_WORKDIR", "RUNTIME_CHOICES", "Board", "boards_for",
           "load_fleet"]

BOARD_KEYS = ("host", "label", "port", "user", "identity", "python", "threads", "runtime", "workdir",
              "timeout", "ssh_config", "ssh_options", "offline", "connect_timeout", "groups")
RUNTIME_CHOICES = ("litert", "tflite-runtime", "tensorflow")
DEFAULT_WORKDIR = "~/.edgeq-device"
DEFAULT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Board:
    """One board and how to reach and use it (a row of ``devices.toml``).

    Attributes:
        host: ``user@host``, ``user@host:PORT`` or a ``Host`` alias from ssh config.
        label: the name results are stored under (default: the host name).
        port: SSH port (overrides one in ``host``).
        identity: private key file for this board.
        python: the board's Python that makes the venv (``python3``, a path, or a
            venv's python whose packages the edgeq venv then sees too).
        threads: interpreter threads for bench/eval (None: the runtime's default).
        runtime: ``litert``, ``tflite-runtime`` or ``tensorflow`` (None: first found).
        workdir: the per-user edgeq folder on the board.
        timeout: seconds any one step may take on this board.
        ssh_config: an ssh_config file to use instead of ``~/.ssh/config``.
        ssh_options: extra ``-o`` options for ssh (``"ProxyJump=bastion"``).
        offline: the board has no internet: never let pip download there.
        connect_timeout: seconds for the SSH connection itself.
        groups: labels for the board beside its own (an inventory's group names); kept with its
            results in the store and shown in reports.
    """

    host: str
    label: str = ""
    port: int | None = None
    identity: str | None = None
    python: str = "python3"
    threads: int | None = None
    runtime: str | None = None
    workdir: str = DEFAULT_WORKDIR
    timeout: float = DEFAULT_TIMEOUT
    ssh_config: str | None = None
    ssh_options: tuple[str, ...] = ()
    offline: bool = False
    connect_timeout: float = 15.0
    groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        dest, port = parse_target(self.host)
        if port is not None and self.port is None:
            object.__setattr__(self, "port", port)
        object.__setattr__(self, "host", dest)
        if not self.label:
            object.__setattr__(self, "label", dest.split("@")[-1])
        if self.port is not None and not (isinstance(self.port, int) and 0 < self.port < 65536):
            raise InvalidArgumentError("not a TCP port", argument=f"{self.label}.port", received=self.port,
                                       fix="give an integer between 1 and 65535")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InvalidArgumentError("threads must be a positive integer", argument=f"{self.label}.threads",
                                       received=self.threads, fix="give e.g. threads = 4, or leave it out")
        if self.runtime is not None and self.runtime not in RUNTIME_CHOICES:
            raise InvalidArgumentError("unknown runtime", argument=f"{self.label}.runtime", received=self.runtime,
                                       fix=f"use one of {', '.join(RUNTIME_CHOICES)}, or leave it out")
        if not isinstance(self.timeout, (int, float)) or self.timeout <= 0:
            raise InvalidArgumentError("timeout must be a positive number of seconds",
                                       argument=f"{self.label}.timeout", received=self.timeout,
                                       fix="give e.g. timeout = 600")
        object.__setattr__(self, "groups", (self.groups,) if isinstance(self.groups, str) else tuple(self.groups))
        if isinstance(self.ssh_options, str):
            object.__setattr__(self, "ssh_options", (self.ssh_options,))
        else:
            object.__setattr__(self, "ssh_options", tuple(self.ssh_options))

    def target(self) -> SSHTarget:
        """The :class:`~edgeq.deployment.ssh.SSHTarget` for this board."""
        return SSHTarget(self.host, self.port, self.identity, self.ssh_config, self.ssh_options,
                         self.connect_timeout)

    def describe(self) -> str:
        """``user@host:port`` (or ``user@host``) as a person would write it."""
        return f"{self.host}:{self.port}" if self.port else self.host


def _board_from_mapping(d: Mapping[str, Any], where: str) -> Board:
    unknown = sorted(set(d) - set(BOARD_KEYS))
    if unknown:
        raise InvalidArgumentError(f"unknown key {unknown[0]!r} in {where}", argument="fleet",
                                   received=unknown, fix=f"use only {', '.join(BOARD_KEYS)}")
    if "host" not in d:
        raise InvalidArgumentError(f"{where} has no host", argument="fleet", received=dict(d),
                                   fix='add host = "user@hostname"')
    kw = dict(d)
    user = kw.pop("user", None)
    if user and "@" not in str(kw["host"]):
        kw["host"] = f"{user}@{kw['host']}"
    for key in ("identity", "ssh_config"):
        if kw.get(key):
            kw[key] = str(Path(str(kw[key])).expanduser())
    try:
        return Board(**kw)
    except TypeError as exc:
        raise InvalidArgumentError(f"bad value in {where}: {exc}", argument="fleet", received=dict(d),
                                   fix="check the key names and value types") from exc


def load_fleet(path: str | os.PathLike[str]) -> list[Board]:
    """Read a ``devices.toml`` fleet file.

    Format::

        [defaults]              # optional, applies to every board
        identity = "~/.ssh/id_ed25519"
        threads = 4

        [[board]]
        label = "pi4-kitchen"
        host = "pi@raspberrypi.local"
        port = 22
        python = "python3"
        runtime = "litert"

    Keys: ``host`` (required), ``label``, ``port``, ``user``, ``identity``,
    ``python``, ``threads``, ``runtime``, ``workdir``, ``timeout``,
    ``ssh_config``, ``ssh_options`` (list), ``offline``, ``connect_timeout``, ``groups`` (list of labels).
    Relative ``identity``/``ssh_config`` paths are taken from the file's folder.

    Raises:
        InvalidArgumentError: the file is missing, not TOML, or has unknown keys.
    """
    p = Path(path).expanduser()
    try:
        data = toml.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidArgumentError("no such fleet file", argument="fleet", received=str(p),
                                   fix="give the path of a devices.toml") from None
    except (OSError, UnicodeDecodeError, toml.TOMLDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read the fleet file: {exc}", argument="fleet", received=str(p),
                                   fix="fix the TOML syntax") from exc
    defaults = data.get("defaults", {})
    rows = data.get("board", data.get("boards"))
    extra = sorted(set(data) - {"defaults", "board", "boards"})
    if extra or not isinstance(rows, list) or not rows:
        raise InvalidArgumentError("a fleet file needs one or more [[board]] tables (and optionally "
                                   "[defaults])", argument="fleet", received=extra or str(p),
                                   fix='add [[board]] with host = "user@hostname"')
    boards = []
    for i, row in enumerate(rows):
        merged = {**defaults, **row}
        for key in ("identity", "ssh_config"):
            if merged.get(key) and not str(merged[key]).startswith(("~", "/")):
                merged[key] = str(p.parent / str(merged[key]))
        boards.append(_board_from_mapping(merged, f"{p} board #{i + 1}"))
    labels = [b.label for b in boards]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise InvalidArgumentError("two boards share a label", argument="fleet", received=dup,
                                   fix="give each [[board]] its own label")
    return boards


def boards_for(to: str | Board | Iterable[str | Board] | None, fleet: str | os.PathLike[str] | None,
               overrides: Mapping[str, Any], extra: Iterable[Board] = ()) -> list[Board]:
    """The boards of one deploy: ``fleet``'s, ``extra`` ones (an inventory's), then ``to``'s, with
    ``overrides`` filling in their defaults.

    Raises:
        InvalidArgumentError: no board at all, an item that is not a board, or two boards with one label.
    """
    boards: list[Board] = []
    if fleet is not None:
        boards += load_fleet(fleet)
    boards += list(extra)
    if to is not None:
        items = [to] if isinstance(to, (str, Board)) else list(to)
        for item in items:
            if isinstance(item, Board):
                boards.append(item)
            elif isinstance(item, str):
                boards.append(Board(item))
            else:
                raise InvalidArgumentError("a board must be a 'user@host' string or a Board", argument="to",
                                           received=item, fix="pass to='pi@raspberrypi.local'")
    if not boards:
        raise InvalidArgumentError("no board to deploy to", argument="to", received=to,
                                   fix="give to='user@host' (--to), a devices.toml (--fleet) or an Ansible "
                                       "inventory (--inventory)")
    out = []
    for b in boards:
        # A setting given for the whole run fills in what the board itself leaves at its default.
        changes = {k: v for k, v in overrides.items()
                   if v is not None and getattr(b, k) == getattr(Board(b.host), k)}
        out.append(replace(b, **changes) if changes else b)
    labels = [b.label for b in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise InvalidArgumentError("two boards share a label", argument="to", received=dup,
                                   fix="give each board its own label (a devices.toml 'label' key)")
    return out
