"""Test support for projects that use or extend flask-memqueue.

:mod:`flask_memqueue.testing.storage`: the storage contract as a test suite a
backend runs in its own CI (:class:`StorageContract`,
:class:`SharedStorageContract`). Importing this package imports pytest; nothing
else in flask-memqueue imports it (the fixtures for testing an *app* are the
pytest plugin's, :mod:`flask_memqueue.pytest_plugin`).
"""

from __future__ import annotations

from .storage import SharedStorageContract, StorageContract, StoreConfig

__all__ = ["SharedStorageContract", "StorageContract", "StoreConfig"]
