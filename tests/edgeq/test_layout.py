"""The tree keeps its rules: short steps in ``comparison/``, small folders, and a map that names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HOST = ROOT / "edgeq"
BOARD = ROOT / "device" / "edgeq_device"


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.name, node.end_lineno - node.lineno + 1)  # type: ignore[operator]
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_in_comparison_is_over_80_lines() -> None:
    """compare() is a plan of steps: from ``def`` to its last line (docstring included), none over 80."""
    long = [f"{p.name}:{name} ({n} lines)" for p in sorted((HOST / "comparison").glob("*.py"))
            for name, n in _functions(p) if n > 80]
    assert not long, long


def test_the_length_check_sees_long_functions(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    f = tmp_path / "m.py"
    f.write_text(f"def long():\n{body}\n")
    assert _functions(f) == [("long", 86)]


def _packages(root: Path) -> list[Path]:
    return [root, *[d for d in sorted(root.rglob("*")) if d.is_dir() and (d / "__init__.py").exists()]]


def test_no_folder_holds_more_than_15_modules() -> None:
    big = []
    for folder in _packages(HOST) + _packages(BOARD):
        modules = [m for m in folder.glob("*.py") if m.name != "__init__.py"]
        if len(modules) > 15:
            big.append(f"{folder.relative_to(ROOT)}: {len(modules)}")
    assert not big, big


def test_every_subpackage_says_its_purpose() -> None:
    for init in [*HOST.rglob("__init__.py"), *BOARD.rglob("__init__.py")]:
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.relative_to(ROOT)} has no docstring saying what the package holds"


def _rooms(text: str) -> dict[str, str]:
    """ARCHITECTURE.md's table rows by room: ``cli``, ``quantize``, ``base``, ``edgeq_device/model``..."""
    return {m.group(1).strip("/"): m.group(0) for m in re.finditer(r"^\| `?([^`|]+?)`? \|.*$", text, re.M)}


def missing_from_map(text: str) -> list[str]:
    """The modules of both packages that ARCHITECTURE.md's table does not name in their room's row.

    A module of ``edgeq/<room>/[<sub>/]<name>.py`` must be named `` `name` `` in the row of
    ``<room>/`` (with `` `sub/` `` named there too); one of ``edgeq/`` itself in the ``base`` row.
    The board package the same way: ``edgeq_device/<room>/<name>.py`` named in the row of
    ``edgeq_device/<room>/``, one of ``edgeq_device/`` itself in the row of ``edgeq_device/``.
    """
    rows = _rooms(text)
    missing = []
    for p in sorted(HOST.rglob("*.py")):
        if p.name in ("__init__.py", "__main__.py"):
            continue
        parts = p.relative_to(HOST).with_suffix("").parts
        row = rows.get(parts[0] if len(parts) > 1 else "base", "")
        subs = [f"`{d}/`" for d in parts[1:-1]]
        if f"`{parts[-1]}`" not in row or any(s not in row for s in subs):
            missing.append("/".join(parts))
    for p in sorted(BOARD.rglob("*.py")):
        if p.name in ("__init__.py", "__main__.py"):
            continue
        parts = p.relative_to(BOARD).with_suffix("").parts
        row = rows.get("/".join(("edgeq_device", *parts[:-1])), "")
        if f"`{parts[-1]}`" not in row:
            missing.append("/".join(("edgeq_device", *parts)))
    return missing


def test_architecture_names_every_module_of_both_packages() -> None:
    missing = missing_from_map((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    assert not missing, f"modules not named in ARCHITECTURE.md's rooms: {missing}"


def test_the_map_check_finds_a_module_left_out() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert "quantize/precision/budget_steps" in missing_from_map(text.replace("`budget_steps`", "budget_steps"))
    assert "edgeq_device/tasks/fidelity" in missing_from_map(text.replace("`fidelity`", "fidelity"))
    # a board module named in another room's row only is missing from its own
    moved = text.replace("`loadcheck` (", "loadcheck (").replace("`sysinfo` (", "`sysinfo`, `loadcheck` (")
    assert "edgeq_device/run/loadcheck" in missing_from_map(moved)
    assert missing_from_map(text) == []


def _conftest():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("tests_root_conftest", ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_test_cache_key_follows_the_code_that_makes_the_models(tmp_path: Path) -> None:
    conftest = _conftest()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("X = 1\n")
    (tmp_path / "fixture.py").write_text("Y = 2\n")
    key = conftest.source_key(("pkg", "fixture.py"), tmp_path)
    assert key == conftest.source_key(("pkg", "fixture.py"), tmp_path)
    (tmp_path / "pkg" / "a.py").write_text("X = 3\n")
    changed = conftest.source_key(("pkg", "fixture.py"), tmp_path)
    assert changed != key
    (tmp_path / "fixture.py").write_text("Y = 4\n")
    assert conftest.source_key(("pkg", "fixture.py"), tmp_path) not in (key, changed)
    # the real key covers the converter and the fixture code
    assert {"edgeq/quantize", "device/edgeq_device", "tests/conftest.py"} <= set(conftest.CACHE_SOURCES)
    assert all((ROOT / name).exists() for name in conftest.CACHE_SOURCES)
