"""Ansible's host patterns, for ``--limit``: :func:`select_hosts`.

A pattern is terms separated by ``:`` or ``,``. A plain term adds its hosts, ``&term`` keeps only
hosts also in it, ``!term`` removes its hosts; the unions are taken first, then the
intersections, then the exclusions, as Ansible does. A term is a group name (its hosts and its
children's), a host name, ``all``/``*``, a glob (``web*``, ``pi-?``) over host and group names,
or ``~REGEX`` over them.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Mapping, Sequence

from edgeq.errors import InvalidArgumentError

__all__ = ["select_hosts", "split_pattern"]


def split_pattern(pattern: str) -> list[str]:
    """The terms of a pattern (``:`` and ``,`` separate; a ``~regex`` term may hold ``:`` only after ``,``)."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidArgumentError("an empty host pattern", argument="limit", received=pattern,
                                   fix="give a group or host name, e.g. --limit kitchen or --limit 'pis:!pi-3'")
    terms: list[str] = []
    for part in pattern.split(","):
        part = part.strip()
        if part.startswith("~") or part.startswith(("!~", "&~")):
            terms.append(part)
        else:
            terms += [t.strip() for t in part.split(":")]
    return [t for t in terms if t]


def _term_hosts(term: str, hosts: Sequence[str], groups: Mapping[str, Sequence[str]]) -> set[str]:
    if term in ("all", "*"):
        return set(hosts)
    if term in groups:
        return set(groups[term])
    if term in hosts:
        return {term}
    if term.startswith("~"):
        try:
            rx = re.compile(term[1:])
        except re.error as exc:
            raise InvalidArgumentError(f"not a regular expression: {exc}", argument="limit", received=term,
                                       fix="fix the ~REGEX term") from exc
        match = lambda name: rx.match(name) is not None  # noqa: E731
    elif any(c in term for c in "*?["):
        match = lambda name: fnmatch.fnmatchcase(name, term)  # noqa: E731
    else:
        return set()
    out = {h for h in hosts if match(h)}
    for g, members in groups.items():
        if match(g):
            out |= set(members)
    return out


def select_hosts(pattern: str, hosts: Sequence[str], groups: Mapping[str, Sequence[str]]) -> set[str]:
    """The host names ``pattern`` selects among ``hosts`` (``groups``: group -> all its hosts).

    Raises:
        InvalidArgumentError: an empty pattern or a bad ``~regex``.
    """
    union: set[str] = set()
    inter: list[set[str]] = []
    exclude: set[str] = set()
    plain = False
    for term in split_pattern(pattern):
        if term.startswith("!"):
            exclude |= _term_hosts(term[1:], hosts, groups)
        elif term.startswith("&"):
            inter.append(_term_hosts(term[1:], hosts, groups))
        else:
            plain = True
            union |= _term_hosts(term, hosts, groups)
    if not plain:  # only & / ! terms: they act on every host
        union = set(hosts)
    for s in inter:
        union &= s
    return union - exclude
