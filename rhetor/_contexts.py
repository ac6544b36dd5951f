"""
ContextStore: the actor that owns conversation history.

History lives in SQLite (see :mod:`rhetor._history`), so it survives restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rhetor._history import HistoryStore
from rhetor._store import StoreActor

__all__ = ["ContextStore"]


class ContextStore(StoreActor):
    """
    Answers :class:`rhetor._store.StoreCall` for the history store's operations.
    """

    allowed: ClassVar[frozenset[str]] = frozenset(
        {
            "append",
            "history",
            "window",
            "get",
            "list",
            "delete",
            "search",
            "set_summary",
            "needs_summary",
        }
    )

    def __init__(self, path: Path) -> None:
        super().__init__(lambda: HistoryStore(path))
