"""The journal's exception. No import of :mod:`sqlite3` here: ``flask_memqueue.JournalError``
is importable (and catchable) without loading the driver."""

from __future__ import annotations

from ...exceptions import StorageError


class JournalError(StorageError):
    """The journal file cannot be opened, read or written."""


__all__ = ["JournalError"]
