"""TOML on every Python edgeq supports: ``tomllib`` (3.11+) or its backport ``tomli`` (a dependency on 3.10)."""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib as toml
else:  # pragma: no cover - Python 3.10
    import tomli as toml

__all__ = ["toml"]
