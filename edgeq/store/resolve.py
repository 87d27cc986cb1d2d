"""The one meaning of a ``store=`` argument across the API."""

from __future__ import annotations

import os
from typing import Union

from edgeq.errors import InvalidArgumentError
from edgeq.store.db import ResultsStore

__all__ = ["StoreLike", "resolve_store"]

#: What ``store=`` accepts: a :class:`ResultsStore`, a database path, True for the default store
#: (``$EDGEQ_DB`` or ``~/.edgeq/results.db``), or False/None for no recording.
StoreLike = Union[ResultsStore, str, "os.PathLike[str]", bool, None]


def resolve_store(store: StoreLike, argument: str = "store") -> tuple[ResultsStore | None, bool]:
    """(the store to record in or None, whether the caller opened it and must close it)."""
    if store is None or store is False:
        return None, False
    if isinstance(store, ResultsStore):
        return store, False
    if store is True:
        return ResultsStore(None), True
    if isinstance(store, (str, os.PathLike)):
        return ResultsStore(store), True
    raise InvalidArgumentError("is not a results store", argument=argument, received=repr(store),
                               fix="give a ResultsStore, a database path, True (the default store) or False")
