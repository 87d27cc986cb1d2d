"""edgeq's own reader of static Ansible inventories, for machines without ansible-core: :func:`parse_static`.

It reads what Ansible's ``ini`` and ``yaml`` inventory plugins and its ``host_group_vars`` vars
plugin read, and merges variables in Ansible's order (lowest first): the ``all`` group's
inventory vars, ``group_vars/all``, the other groups' inventory vars (sorted by depth, then
``ansible_group_priority``, then name), their ``group_vars/`` files in the same order, the host's
inventory vars, ``host_vars/HOST``. Folders are read file by file in name order, skipping what
Ansible skips (``.cfg``, ``.retry``, ``.orig``, ``.md``, ``~``, hidden files...). Dynamic inventories
(scripts, plugins) need ansible-core itself.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import string
from pathlib import Path
from typing import Any

from edgeq.errors import InvalidArgumentError

__all__ = ["expand_host_range", "parse_static"]

_IGNORED = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
_YAML_EXTS = (".yml", ".yaml", ".json")
_RANGE = re.compile(r"^(.*?)\[([^\]:]+):([^\]:]+)(?::(\d+))?\](.*)$")


class _Group:
    def __init__(self, name: str) -> None:
        self.name = name
        self.hosts: list[str] = []
        self.children: list[str] = []
        self.parents: set[str] = set()
        self.vars: dict[str, Any] = {}


class _Tree:
    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.hosts: dict[str, dict[str, Any]] = {}
        self.dirs: list[Path] = []

    def group(self, name: str) -> _Group:
        if name not in self.groups:
            self.groups[name] = _Group(name)
        return self.groups[name]

    def add_host(self, group: str, name: str, hvars: dict[str, Any]) -> None:
        self.hosts.setdefault(name, {}).update(hvars)
        g = self.group(group)
        if name not in g.hosts:
            g.hosts.append(name)

    def add_child(self, parent: str, child: str) -> None:
        p, c = self.group(parent), self.group(child)
        if child not in p.children:
            p.children.append(child)
        c.parents.add(parent)


def _yaml() -> Any:
    try:
        import yaml
    except ModuleNotFoundError:
        raise InvalidArgumentError("reading a YAML inventory or group_vars needs PyYAML", argument="inventory",
                                   received="yaml", fix="pip install 'edgeq[ansible]' (or an INI inventory)") from None
    return yaml


def expand_host_range(pattern: str) -> list[str]:
    """``pi[01:03]`` -> ``pi01, pi02, pi03``; ``[a:c]`` letters; ``[0:10:5]`` a step (Ansible's host ranges)."""
    m = _RANGE.match(pattern)
    if not m:
        return [pattern]
    head, lo, hi, step, tail = m.groups()
    n = int(step or 1)
    if lo.isdigit() and hi.isdigit():
        width = len(lo) if lo.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1, n)]
    elif len(lo) == 1 and len(hi) == 1 and lo in string.ascii_letters and hi in string.ascii_letters:
        items = [chr(c) for c in range(ord(lo), ord(hi) + 1, n)]
    else:
        raise InvalidArgumentError("not a host range", argument="inventory", received=pattern,
                                   fix="write e.g. pi[01:20] or node[a:f]")
    return [x for item in items for x in expand_host_range(f"{head}{item}{tail}")]


def _host_and_port(text: str) -> tuple[str, int | None]:
    if text.count(":") == 1 and not text.startswith("["):
        name, port = text.split(":")
        if port.isdigit():
            return name, int(port)
    m = re.match(r"^\[([^\]]+)\]:(\d+)$", text)
    if m:
        return m.group(1), int(m.group(2))
    return text, None


def _literal(value: str) -> Any:
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return value


def _parse_ini(path: Path, tree: _Tree) -> None:
    section, kind = "ungrouped", "hosts"
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            head = line[1:-1].strip()
            section, _, kind = head.partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise InvalidArgumentError(f"{path}:{lineno}: unknown section kind {kind!r}", argument="inventory",
                                           received=line, fix="use [group], [group:vars] or [group:children]")
            tree.group(section)
            continue
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise InvalidArgumentError(f"{path}:{lineno}: {exc}", argument="inventory", received=line,
                                       fix="close the quotes") from exc
        if not words:
            continue
        if kind == "children":
            tree.add_child(section, words[0])
        elif kind == "vars":
            key, eq, value = line.partition("=")
            if not eq:
                raise InvalidArgumentError(f"{path}:{lineno}: a [{section}:vars] line needs key=value",
                                           argument="inventory", received=line, fix="write key=value")
            tree.group(section).vars[key.strip()] = _literal(value.strip())
        else:
            hvars: dict[str, Any] = {}
            for w in words[1:]:
                key, eq, value = w.partition("=")
                if not eq:
                    raise InvalidArgumentError(f"{path}:{lineno}: host variables are key=value", argument="inventory",
                                               received=line, fix="write host key=value key2=value2")
                hvars[key] = _literal(value)
            name, port = _host_and_port(words[0])
            for host in expand_host_range(name):
                tree.add_host(section, host, {**({"ansible_port": port} if port else {}), **hvars})


def _parse_yaml_group(tree: _Tree, name: str, body: Any, where: Path) -> None:
    tree.group(name)
    if body is None:
        return
    if not isinstance(body, dict):
        raise InvalidArgumentError(f"{where}: group {name!r} is not a mapping", argument="inventory",
                                   received=type(body).__name__, fix="give hosts:, vars: and children: under it")
    for key in body:
        if key not in ("hosts", "vars", "children"):
            raise InvalidArgumentError(f"{where}: unknown key {key!r} in group {name!r}", argument="inventory",
                                       received=key, fix="use hosts, vars, children")
    for host, hvars in (body.get("hosts") or {}).items():
        hname, port = _host_and_port(str(host))
        for h in expand_host_range(hname):
            tree.add_host(name, h, {**({"ansible_port": port} if port else {}), **dict(hvars or {})})
    tree.group(name).vars.update(dict(body.get("vars") or {}))
    for child, cbody in (body.get("children") or {}).items():
        tree.add_child(name, str(child))
        _parse_yaml_group(tree, str(child), cbody, where)


def _parse_yaml(path: Path, tree: _Tree) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else _yaml().safe_load(text)
    except Exception as exc:  # yaml.YAMLError, json.JSONDecodeError
        raise InvalidArgumentError(f"{path} does not parse: {exc}", argument="inventory", received=str(path),
                                   fix="fix the YAML") from exc
    if not isinstance(data, dict):
        raise InvalidArgumentError(f"{path} is not a YAML inventory (a mapping of groups)", argument="inventory",
                                   received=type(data).__name__, fix="start with all: / hosts:")
    for name, body in data.items():
        _parse_yaml_group(tree, str(name), body, path)


def _vars_files(folder: Path, name: str) -> list[Path]:
    out = []
    for cand in (folder / name, *(folder / f"{name}{ext}" for ext in _YAML_EXTS)):
        if cand.is_file():
            out.append(cand)
        elif cand.is_dir():
            out += sorted(p for p in cand.rglob("*") if p.is_file() and not p.name.startswith("."))
    return out


def _load_vars(files: list[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for f in files:
        if f.suffix not in ("", *_YAML_EXTS):
            continue
        text = f.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if f.suffix == ".json" else _yaml().safe_load(text)
        except Exception as exc:
            raise InvalidArgumentError(f"{f} does not parse: {exc}", argument="inventory", received=str(f),
                                       fix="fix the YAML") from exc
        if isinstance(data, dict):
            merged.update(data)
    return merged


def _dir_vars(tree: _Tree, kind: str, name: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for d in tree.dirs:
        merged.update(_load_vars(_vars_files(d / kind, name)))
    return merged


def _depth(tree: _Tree, name: str, seen: frozenset[str] = frozenset()) -> int:
    parents = [p for p in tree.groups[name].parents if p not in seen]
    return 0 if name == "all" else 1 + max((_depth(tree, p, seen | {name}) for p in parents), default=0)


def parse_static(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]], dict[str, list[str]]]:
    """(host -> merged vars, group -> its own hosts, group -> its child groups) of a static inventory.

    Raises:
        InvalidArgumentError: a file that does not parse, or an executable (dynamic) inventory.
    """
    tree = _Tree()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and not p.name.endswith(_IGNORED))
        tree.dirs.append(path)
    else:
        files = [path]
        tree.dirs.append(path.parent)
    for f in files:
        if f.stat().st_mode & 0o111 and f.suffix not in _YAML_EXTS and f.read_bytes()[:2] == b"#!":
            raise InvalidArgumentError("a dynamic inventory (a script) needs ansible-core", argument="inventory",
                                       received=str(f), fix="pip install 'edgeq[ansible]'")
        (_parse_yaml if f.suffix in _YAML_EXTS else _parse_ini)(f, tree)
    # every group without a parent hangs under all; hosts in no group are ungrouped
    for name, g in tree.groups.items():
        if name != "all" and not g.parents:
            tree.add_child("all", name)
    grouped = {h for n, g in tree.groups.items() if n not in ("all", "ungrouped") for h in g.hosts}
    ung = tree.groups["ungrouped"]
    ung.hosts = [h for h in ung.hosts if h not in grouped]

    def ancestors(group: str) -> set[str]:
        out = {group}
        for p in tree.groups[group].parents:
            out |= ancestors(p)
        return out

    hostvars: dict[str, dict[str, Any]] = {}
    for host, own in tree.hosts.items():
        mine: set[str] = {"all"}
        for name, g in tree.groups.items():
            if host in g.hosts:
                mine |= ancestors(name)
        order = sorted(mine - {"all"}, key=lambda n: (_depth(tree, n), int(tree.groups[n].vars.get(
            "ansible_group_priority", 1)), n))
        merged = {**tree.groups["all"].vars, **_dir_vars(tree, "group_vars", "all")}
        for n in order:
            merged.update(tree.groups[n].vars)
        for n in order:
            merged.update(_dir_vars(tree, "group_vars", n))
        merged.update(own)
        merged.update(_dir_vars(tree, "host_vars", host))
        hostvars[host] = merged
    direct = {n: list(g.hosts) for n, g in tree.groups.items()}
    children = {n: list(g.children) for n, g in tree.groups.items()}
    return hostvars, direct, children
