"""Stores, found by the scheme of ``MEMQUEUE_STORAGE`` (a URL).

Backends register a factory under the entry-point group
``flask_memqueue.storage``, keyed by URL scheme; the built-in ones
(``memory``, ``sqlite``, ``redis``/``rediss``/``unix`` for Redis, and
``postgresql``/``postgres``/``postgresql+psycopg`` for PostgreSQL) are registered the same way in this package's
metadata, so a backend written elsewhere needs no change here::

    [project.entry-points."flask_memqueue.storage"]
    mysql = "my_package.storage:open_mysql"

Entry points are loaded lazily, when a URL names their scheme: a backend's
driver is imported only by the apps that use it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..exceptions import ConfigurationError
from .base import Capabilities, Storage, StorageFactory, StoreContext, TickInfo, redact_url

__all__ = [
    "ENTRY_POINT_GROUP",
    "Capabilities",
    "Storage",
    "StorageFactory",
    "StoreContext",
    "TickInfo",
    "available_schemes",
    "open_storage",
    "redact_url",
    "register_backend",
    "split_url",
]

#: The entry-point group a backend registers its URL scheme under.
ENTRY_POINT_GROUP = "flask_memqueue.storage"

# The built-in backends, used when this package's metadata is not installed
# (a vendored copy): the same table its entry points declare.
_BUILTIN = {
    "memory": "flask_memqueue.storage.memory:open_memory",
    "sqlite": "flask_memqueue.storage.sqlite:open_sqlite",
    "redis": "flask_memqueue.storage.redis:open_redis",
    "rediss": "flask_memqueue.storage.redis:open_redis",
    "unix": "flask_memqueue.storage.redis:open_redis",
    "postgresql": "flask_memqueue.storage.postgres:open_postgres",
    "postgres": "flask_memqueue.storage.postgres:open_postgres",
    "postgresql+psycopg": "flask_memqueue.storage.postgres:open_postgres",
}

_lock = threading.Lock()
_registered: dict[str, StorageFactory] = {}


def register_backend(scheme: str, factory: StorageFactory) -> None:
    """Make ``scheme://`` URLs open stores with ``factory`` in this process.

    For tests and for apps that define a backend in their own code; a
    distributed backend declares an entry point instead. Registering a
    scheme again replaces it.
    """
    if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise ValueError(f"a storage scheme must be letters, digits, '+', '-' or '.', not {scheme!r}")
    with _lock:
        _registered[scheme.lower()] = factory


def _entry_points() -> dict[str, Any]:
    found: dict[str, Any] = {name: ("builtin", target) for name, target in _BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name.lower()] = ep
    return found


def available_schemes() -> list[str]:
    """Every scheme this process can open: built in, registered, or from an entry point."""
    with _lock:
        names = set(_registered)
    return sorted(names | set(_entry_points()))


def _factory(scheme: str) -> StorageFactory | None:
    with _lock:
        factory = _registered.get(scheme)
    if factory is not None:
        return factory
    ep = _entry_points().get(scheme)
    if ep is None:
        return None
    if isinstance(ep, tuple):  # a built-in, without metadata
        import importlib

        module, _, attr = ep[1].partition(":")
        loaded: StorageFactory = getattr(importlib.import_module(module), attr)
    else:
        loaded = ep.load()
    with _lock:
        _registered.setdefault(scheme, loaded)
    return loaded


def split_url(url: str, key: str = "MEMQUEUE_STORAGE") -> tuple[str, dict[str, str]]:
    """The scheme of ``url`` and the options of its query string.

    :raises ConfigurationError: not a URL with a scheme, or an option given twice.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"{key} is not a valid URL ({exc}): {redact_url(url)!r}") from None
    if any(ord(c) < 32 or c == "\x7f" for c in url):  # urlsplit would drop tabs and newlines silently
        raise ConfigurationError(f"{key} holds a control character (a tab, a newline, a NUL byte): {redact_url(url)!r}")
    if url != url.strip():
        raise ConfigurationError(f"{key} has spaces around it: {redact_url(url)!r}; remove them")
    if parts.fragment or url.endswith("#"):
        raise ConfigurationError(
            f"{key}: a URL fragment ('#...') means nothing here: {redact_url(url)!r}; a '#' in a file name"
            " is written %23"
        )
    if not parts.scheme or "://" not in url:
        raise ConfigurationError(
            f"{key} must be a URL like 'memory://' or 'sqlite:///jobs.db', not {redact_url(url)!r}"
        )
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in options:
            raise ConfigurationError(f"{key}: the option {name!r} is given twice in the URL's query string")
        options[name] = value
    return parts.scheme.lower(), options


def open_storage(url: str, options: Mapping[str, Any], context: StoreContext) -> Storage:
    """Open the store ``url`` names, with ``options`` (query string and
    ``MEMQUEUE_STORAGE_OPTIONS``, merged and checked by the caller).

    :raises ConfigurationError: no backend is installed for the scheme.
    """
    scheme, _ = split_url(url)
    factory = _factory(scheme)
    if factory is None:
        raise ConfigurationError(
            f"MEMQUEUE_STORAGE: no storage backend is installed for the scheme {scheme!r}"
            f" ({redact_url(url)!r}); installed: {', '.join(s + '://' for s in available_schemes())}."
            f" A backend registers its scheme under the entry-point group {ENTRY_POINT_GROUP!r}."
        )
    return factory(url, options, context)


def scheme_installed(scheme: str) -> bool:
    """True if a URL of ``scheme`` can be opened here (without importing its driver)."""
    with _lock:
        if scheme in _registered:
            return True
    return scheme in _entry_points()
