"""The public API: re-exported names, sorted __all__, docstrings, one error tree."""

from __future__ import annotations

import inspect

import edgeq_device
import edgeq_device.errors

import edgeq
import edgeq.errors


def test_all_is_sorted_and_resolves():
    for mod in (edgeq, edgeq_device, edgeq.errors, edgeq_device.errors):
        assert mod.__all__ == sorted(mod.__all__), mod.__name__
        for name in mod.__all__:
            assert hasattr(mod, name), f"{mod.__name__}.{name}"


def test_public_callables_have_docstrings():
    for mod in (edgeq, edgeq_device):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert inspect.getdoc(obj), f"{mod.__name__}.{name} has no docstring"


def test_every_error_derives_from_one_base():
    for mod in (edgeq.errors, edgeq_device.errors):
        for name in mod.__all__:
            obj = getattr(mod, name)
            base = edgeq.errors.EdgeqWarning if name.endswith("Warning") else edgeq.EdgeqError
            assert issubclass(obj, base), name
    assert edgeq.EdgeqError is edgeq_device.EdgeqError
    assert edgeq.errors.EdgeqWarning is edgeq_device.errors.EdgeqWarning
    assert issubclass(edgeq.errors.EdgeqWarning, UserWarning)


def _packages():
    import importlib
    import pkgutil

    import edgeq_device

    for root in (edgeq, edgeq_device):
        yield root
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + "."):
            if info.ispkg:
                yield importlib.import_module(info.name)


def test_no_name_shadows_a_submodule():
    """``edgeq.x.y`` is always the module y: a package never binds a function or class to a submodule's name."""
    import importlib
    import pkgutil
    import types

    checked = 0
    for pkg in _packages():
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.startswith("__"):
                continue
            module = importlib.import_module(f"{pkg.__name__}.{info.name}")
            bound = getattr(pkg, info.name)
            assert isinstance(bound, types.ModuleType) and bound is module, (
                f"{pkg.__name__}.{info.name} is {bound!r}, not the submodule")
            checked += 1
    assert checked > 20


def test_one_name_per_concept_across_the_api():
    """progress, max_drop, store and evaluation mean one thing wherever they appear."""
    for func in (edgeq.convert, edgeq.convert_all, edgeq.compare, edgeq.debug, edgeq.debug_ranges, edgeq.qat,
                 edgeq.deploy):
        params = inspect.signature(func).parameters
        assert "progress" in params and "show_progress" not in params, func.__name__
    assert "max_drop" in inspect.signature(edgeq.compare).parameters
    assert "max_drop" in inspect.signature(edgeq.convert).parameters
    for func in (edgeq.compare, edgeq.deploy):
        assert "store" in inspect.signature(func).parameters
    for func in (edgeq.compare, edgeq.convert, edgeq.deploy):
        assert "evaluation" in inspect.signature(func).parameters


def test_convert_accepts_the_old_progress_name_with_a_warning(model_file):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = edgeq.convert(model_file, "float32", show_progress=False)
    assert result.size_bytes > 0
    renamed = [w for w in caught if issubclass(w.category, DeprecationWarning) and "show_progress" in str(w.message)]
    assert len(renamed) == 1 and renamed[0].filename == __file__


def test_no_module_is_over_500_lines():
    """One concept per module: a module that grows past 500 lines holds more than one."""
    from pathlib import Path

    import edgeq_device

    long = []
    for root in (Path(edgeq.__file__).parent, Path(edgeq_device.__file__).parent):
        for path in root.rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > 500:
                long.append(f"{path.relative_to(root.parent)}: {lines}")
    assert not long


def test_result_objects_are_frozen_and_read_plainly():
    """Every result the API returns is frozen, prints as text, shows as HTML in a notebook, has a dict form."""
    import dataclasses

    results = [edgeq.BoardResult, edgeq.BudgetReport, edgeq.Comparison, edgeq.ConversionResult,
               edgeq.DeployReport, edgeq.LayerReport, edgeq.Measurement, edgeq.ModelAnalysis, edgeq.QATResult,
               edgeq.RangesChoice, edgeq.RangesDebugReport,
               edgeq_device.BenchResult, edgeq_device.EvalResult, edgeq_device.ModelInfo]
    for cls in results:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls.__name__
        assert cls.__str__ is not object.__str__, cls.__name__
        assert callable(getattr(cls, "_repr_html_", None)), cls.__name__
        assert callable(getattr(cls, "to_dict", None)), cls.__name__
