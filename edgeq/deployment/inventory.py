"""Ansible inventories as fleets: :func:`load_inventory` and :func:`inventory_boards`.

An inventory (a file, or a folder of them, with ``group_vars/`` and ``host_vars/``)
is read the way Ansible reads it:

- with ``ansible-inventory -i PATH --list`` when ``ansible-core`` is installed
  (``pip install 'edgeq[ansible]'``), so dynamic inventories and every inventory
  plugin work as in Ansible itself;
- otherwise by edgeq's own reader of static inventories (:mod:`edgeq.deployment.inventory_static`):
  INI and YAML files, ``[group:children]``/``children:``, ``[group:vars]``/``vars:``,
  ``host[01:20]`` ranges, ``group_vars/`` and ``host_vars/`` folders, Ansible's
  variable precedence. YAML needs PyYAML (in the ``ansible`` extra).

Each host becomes a :class:`~edgeq.deployment.fleet.Board` (:func:`board_from_vars`);
its groups become the board's ``groups`` (labels in the store and reports).
``limit`` follows Ansible's host patterns (:mod:`edgeq.deployment.hostpattern`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from edgeq.deployment.fleet import Board
from edgeq.deployment.hostpattern import select_hosts
from edgeq.deployment.inventory_static import parse_static
from edgeq.errors import InvalidArgumentError

__all__ = ["Inventory", "ansible_inventory_program", "board_from_vars", "inventory_boards", "load_inventory"]

#: Host variables that set a board's edgeq settings (beside Ansible's own ``ansible_*`` connection variables).
EDGEQ_VARS = ("edgeq_runtime", "edgeq_threads", "edgeq_workdir", "edgeq_timeout", "edgeq_offline", "edgeq_labels",
              "edgeq_python", "edgeq_connect_timeout")


@dataclass
class Inventory:
    """Hosts with their (merged) variables and the groups each belongs to.

    Attributes:
        hostvars: inventory host name -> its variables, group variables merged in Ansible's order.
        groups: group name -> the host names in it (children's hosts included).
        children: group name -> its child groups.
        source: ``"ansible-inventory"`` or ``"edgeq"`` (which reader read it).
    """

    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    source: str = "edgeq"

    def group_names(self, host: str) -> list[str]:
        """The groups ``host`` is in (directly or through a child group), ``all``/``ungrouped`` left out, sorted."""
        return sorted(g for g, hosts in self.groups.items() if host in hosts and g not in ("all", "ungrouped"))


def ansible_inventory_program() -> str | None:
    """The ``ansible-inventory`` beside this Python (the same venv), else on ``PATH``, else None."""
    here = Path(sys.executable).parent / "ansible-inventory"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("ansible-inventory")


def _from_list_json(data: Mapping[str, Any]) -> Inventory:
    """An :class:`Inventory` from ``ansible-inventory --list``'s JSON."""
    hostvars = {str(h): dict(v or {}) for h, v in (data.get("_meta", {}).get("hostvars") or {}).items()}
    direct: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for name, body in data.items():
        if name == "_meta" or not isinstance(body, Mapping):
            continue
        direct[name] = [str(h) for h in body.get("hosts") or ()]
        children[name] = [str(c) for c in body.get("children") or ()]
        for h in direct[name]:
            hostvars.setdefault(h, {})

    def members(group: str, seen: frozenset[str] = frozenset()) -> list[str]:
        out = list(direct.get(group, ()))
        for child in children.get(group, ()):
            if child not in seen:
                out += [h for h in members(child, seen | {group}) if h not in out]
        return out

    groups = {g: members(g) for g in direct}
    groups["all"] = list(hostvars)
    return Inventory(hostvars, groups, children, source="ansible-inventory")


def _ansible_list(program: str, path: Path) -> Inventory:
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0",
           "PYTHONWARNINGS": "ignore", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}
    try:
        proc = subprocess.run([program, "-i", str(path), "--list"], capture_output=True, text=True, timeout=120,
                              env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise InvalidArgumentError("ansible-inventory did not answer in 120 s", argument="inventory",
                                   received=str(path), fix="check the inventory (a dynamic one may hang)") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and "Warning" not in ln]
        raise InvalidArgumentError(f"ansible-inventory cannot read it: {lines[-1] if lines else proc.returncode}",
                                   argument="inventory", received=str(path),
                                   fix=f"run {program} -i {shlex.quote(str(path))} --list to see the whole message")
    try:
        return _from_list_json(json.loads(proc.stdout))
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InvalidArgumentError(f"ansible-inventory printed no inventory JSON: {exc}", argument="inventory",
                                   received=str(path), fix="run ansible-inventory --list by hand") from exc


def load_inventory(path: str | os.PathLike[str], *, use_ansible: bool | None = None) -> Inventory:
    """Read an Ansible inventory file or folder.

    Args:
        path: an INI or YAML inventory, a folder of them (with ``group_vars/``/``host_vars/``), or,
            with ansible-core installed, any inventory Ansible reads (dynamic scripts and plugins too).
        use_ansible: True: through ``ansible-inventory --list`` (an error without ansible-core);
            False: edgeq's own reader of static inventories; None: ansible-inventory when installed.

    Raises:
        InvalidArgumentError: the path is missing, the inventory does not parse, or it holds no host.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidArgumentError("no such inventory file or folder", argument="inventory", received=str(p),
                                   fix="give an Ansible inventory (hosts.ini, inventory.yml or a folder)")
    program = ansible_inventory_program() if use_ansible is not False else None
    if use_ansible and program is None:
        raise InvalidArgumentError("ansible-inventory is not installed", argument="inventory", received=str(p),
                                   fix="pip install 'edgeq[ansible]' (ansible-core)")
    inv = _ansible_list(program, p) if program else _inventory_from_static(p)
    if not inv.hostvars:
        raise InvalidArgumentError("the inventory holds no host", argument="inventory", received=str(p),
                                   fix="add hosts to it (an [group] section or a hosts: mapping)")
    return inv


def _inventory_from_static(p: Path) -> Inventory:
    hostvars, direct, children = parse_static(p)
    inv = _from_list_json({**{g: {"hosts": direct.get(g, []), "children": children.get(g, [])}
                              for g in set(direct) | set(children)}, "_meta": {"hostvars": hostvars}})
    inv.source = "edgeq"
    return inv


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _ssh_options(args: str) -> list[str]:
    """``-o Key=Value`` and ``-J host`` from ``ansible_ssh_common_args``/``ansible_ssh_extra_args`` as options."""
    out: list[str] = []
    words = shlex.split(args)
    i = 0
    while i < len(words):
        w = words[i]
        if w in ("-o", "-J") and i + 1 < len(words):
            out.append(words[i + 1] if w == "-o" else f"ProxyJump={words[i + 1]}")
            i += 2
            continue
        if w.startswith("-o") and len(w) > 2:
            out.append(w[2:])
        elif w.startswith("-J") and len(w) > 2:
            out.append(f"ProxyJump={w[2:]}")
        i += 1
    return [o.replace(" ", "=", 1) if "=" not in o else o for o in out]


def board_from_vars(name: str, hostvars: Mapping[str, Any], groups: Sequence[str] = ()) -> Board:
    """One inventory host as a :class:`Board`.

    ``ansible_host`` (else the name), ``ansible_user``, ``ansible_port``, ``ansible_ssh_private_key_file``,
    ``ansible_python_interpreter`` (``auto*``: ``python3``), ``ansible_ssh_common_args`` and
    ``ansible_ssh_extra_args`` (``-o ProxyJump=...``, ``-J``, any ``-o``), ``ansible_ssh_timeout``;
    edgeq's own ``edgeq_runtime``, ``edgeq_threads``, ``edgeq_workdir``, ``edgeq_timeout``,
    ``edgeq_offline``, ``edgeq_python`` and ``edgeq_labels`` (more labels beside the groups).

    Raises:
        InvalidArgumentError: a variable with a value a board cannot take (the message names host and variable).
    """
    v = dict(hostvars)
    host = str(v.get("ansible_host") or name)
    user = v.get("ansible_user") or v.get("ansible_ssh_user")
    dest = f"{user}@{host}" if user else host
    if ":" in host and not host.startswith("["):  # an IPv6 address
        dest = f"{user}@[{host}]" if user else f"[{host}]"
    opts: list[str] = []
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if v.get(key):
            opts += _ssh_options(str(v[key]))
    python = v.get("edgeq_python") or v.get("ansible_python_interpreter") or "python3"
    if str(python).startswith("auto"):
        python = "python3"
    kw: dict[str, Any] = {"label": name, "python": str(python), "ssh_options": tuple(opts),
                          "groups": tuple(dict.fromkeys([*groups, *_as_list(v.get("edgeq_labels"))]))}
    try:
        port = v.get("ansible_port", v.get("ansible_ssh_port"))
        if port is not None:
            kw["port"] = int(port)
        keyfile = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
        if keyfile:
            kw["identity"] = str(Path(str(keyfile)).expanduser())
        if v.get("edgeq_runtime"):
            kw["runtime"] = str(v["edgeq_runtime"])
        if v.get("edgeq_threads") is not None:
            kw["threads"] = int(v["edgeq_threads"])
        if v.get("edgeq_workdir"):
            kw["workdir"] = str(v["edgeq_workdir"])
        if v.get("edgeq_timeout") is not None:
            kw["timeout"] = float(v["edgeq_timeout"])
        for ct in ("edgeq_connect_timeout", "ansible_ssh_timeout", "ansible_timeout"):
            if v.get(ct) is not None:
                kw["connect_timeout"] = float(v[ct])
                break
        if v.get("edgeq_offline") is not None:
            kw["offline"] = str(v["edgeq_offline"]).lower() in ("1", "true", "yes", "on")
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"host {name!r} has a variable edgeq cannot use: {exc}", argument="inventory",
                                   received={k: v[k] for k in sorted(v) if k.startswith(("ansible_", "edgeq_"))},
                                   fix="give ansible_port/edgeq_threads as integers, edgeq_timeout in seconds") from exc
    return Board(dest, **kw)


def inventory_boards(path: str | os.PathLike[str], limit: str | None = None, *,
                     use_ansible: bool | None = None) -> list[Board]:
    """The boards of an inventory (every host, or those ``limit`` selects), sorted by host name.

    Raises:
        InvalidArgumentError: as :func:`load_inventory`; a ``limit`` that selects no host.
    """
    inv = load_inventory(path, use_ansible=use_ansible)
    names = sorted(inv.hostvars)
    if limit:
        chosen = select_hosts(limit, names, inv.groups)
        if not chosen:
            raise InvalidArgumentError("the limit selects no host of the inventory", argument="limit",
                                       received=limit, fix=f"name a group ({', '.join(sorted(inv.groups)[:8])}) "
                                                           "or hosts; 'group1:!group2', 'web*'")
        names = [n for n in names if n in chosen]
    # ansible-inventory lists hosts sorted by name; edgeq's reader sorts them the same way
    return [board_from_vars(n, inv.hostvars[n], inv.group_names(n)) for n in names]
