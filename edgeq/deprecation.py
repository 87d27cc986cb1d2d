"""Renamed keyword arguments keep working for one release, with a DeprecationWarning.

The API uses one name per concept: ``evaluation`` (the data accuracy is measured on),
``max_drop`` (the accuracy budget, in points), ``store`` (the results store: a
:class:`~edgeq.ResultsStore`, a path, or False for none) and ``progress`` (True, False, None
for "when attached to a terminal", or a callback).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

__all__ = ["renamed_arguments"]

F = TypeVar("F", bound=Callable[..., Any])


def renamed_arguments(**renamed: str) -> Callable[[F], F]:
    """Accept each old keyword (``old="new"``) as its new name, warning that it goes in the next release.

    Raises TypeError when both names are given, as Python does for a repeated argument.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renamed.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{func.__name__}() got both {old}= and {new}=; {old}= is the old "
                                        f"name of {new}=, give only {new}=")
                    warnings.warn(f"{func.__name__}({old}=...) is renamed {new}=...; {old}= goes in the "
                                  "next release", DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
