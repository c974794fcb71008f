"""Stores, found by the scheme of ``MEMQUEUE_STORAGE`` (a URL).

The built-in backends (``memory``, ``sqlite``, ``redis``/``rediss``/``unix``
for Redis, and ``postgresql``/``postgres``/``postgresql+psycopg`` for
PostgreSQL) are the rows of :data:`_BUILTIN`, the one table of them: a new
built-in backend is one module (or package) plus one row. Backends of other
distributions register a factory under the entry-point group
``flask_memqueue.storage``, keyed by URL scheme, so a MySQL backend written
elsewhere needs no change here::

    [project.entry-points."flask_memqueue.storage"]
    mysql = "my_package.storage:open_mysql"

Backends are loaded lazily, when a URL names their scheme: a backend's driver
is imported only by the apps that use it. This package also holds the other
tables that would otherwise put a backend's name in the core: the config keys
that are aliases of ``MEMQUEUE_STORAGE`` (:func:`resolve_alias`) and the
exceptions that live with their backend (:func:`backend_exception`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from importlib import import_module
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ..exceptions import ConfigurationError
from .base import Capabilities, Link, Storage, StorageFactory, StoreContext, TickInfo, redact_url

if TYPE_CHECKING:
    from .postgres.errors import PostgresCredentialsRefused, PostgresUnavailable, SchemaError
    from .redis.client import RedisCredentialsRefused, RedisUnavailable
    from .sqlite.errors import JournalError

__all__ = [
    "ENTRY_POINT_GROUP",
    "SHARED_STORE_EXAMPLE",
    "TRANSACTIONAL_STORE_EXAMPLE",
    "Capabilities",
    "Link",
    "JournalError",
    "PostgresCredentialsRefused",
    "PostgresUnavailable",
    "RedisCredentialsRefused",
    "RedisUnavailable",
    "SchemaError",
    "Storage",
    "StorageFactory",
    "StoreContext",
    "TickInfo",
    "alias_keys",
    "available_schemes",
    "backend_exception",
    "open_storage",
    "redact_url",
    "register_backend",
    "resolve_alias",
    "scheme_installed",
    "split_url",
]

#: The entry-point group a backend registers its URL scheme under.
ENTRY_POINT_GROUP = "flask_memqueue.storage"

#: The built-in backends: URL scheme -> ``"module:factory"``. They ship inside this
#: package, so they need no package metadata to be found (a vendored copy or a
#: source checkout finds them too), and this package declares no entry points for
#: them: entry points are how *other* distributions add schemes.
_BUILTIN = {
    "memory": "flask_memqueue.storage.memory:open_memory",
    "sqlite": "flask_memqueue.storage.sqlite:open_sqlite",
    "redis": "flask_memqueue.storage.redis:open_redis",
    "rediss": "flask_memqueue.storage.redis:open_redis",
    "unix": "flask_memqueue.storage.redis:open_redis",
    "redis+sentinel": "flask_memqueue.storage.redis:open_redis",
    "redis+cluster": "flask_memqueue.storage.redis:open_redis",
    "postgresql": "flask_memqueue.storage.postgres:open_postgres",
    "postgres": "flask_memqueue.storage.postgres:open_postgres",
    "postgresql+psycopg": "flask_memqueue.storage.postgres:open_postgres",
}

#: A store that processes share and that needs no server, for the messages that suggest
#: one (the core names no backend: it asks for this).
SHARED_STORE_EXAMPLE = "sqlite:///jobs.db"
#: A store that can insert a job in the caller's database transaction (``transactional``),
#: for the messages that suggest one.
TRANSACTIONAL_STORE_EXAMPLE = "postgresql://..."

#: Exceptions that live with a built-in backend, by name -> the module that defines
#: them (none imports its driver). ``flask_memqueue`` and ``flask_memqueue.exceptions``
#: re-export them through :func:`backend_exception`.
_EXCEPTIONS = {
    "JournalError": "flask_memqueue.storage.sqlite.errors",
    "RedisUnavailable": "flask_memqueue.storage.redis.client",
    "RedisCredentialsRefused": "flask_memqueue.storage.redis.client",
    "PostgresUnavailable": "flask_memqueue.storage.postgres.errors",
    "PostgresCredentialsRefused": "flask_memqueue.storage.postgres.errors",
    "SchemaError": "flask_memqueue.storage.postgres.errors",
}

#: Config keys that name a store another way than ``MEMQUEUE_STORAGE`` (kept from
#: earlier releases): the alias key -> (the keys that go with it, the backend's
#: ``"module:function"`` that translates them). See :func:`resolve_alias`.
_ALIASES: dict[str, tuple[tuple[str, ...], str]] = {
    "MEMQUEUE_JOURNAL": (("MEMQUEUE_JOURNAL_SYNC",), "flask_memqueue.storage.sqlite:journal_alias"),
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


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def backend_exception(name: str, where: str = __name__) -> type[Exception]:
    """The exception class ``name`` that a built-in backend defines, imported on first use.

    :raises AttributeError: no backend defines one of that name (as a module
        attribute lookup would, naming ``where``).
    """
    module = _EXCEPTIONS.get(name)
    if module is None:
        raise AttributeError(f"module {where!r} has no attribute {name!r}")
    found: type[Exception] = getattr(import_module(module), name)
    return found


def __getattr__(name: str) -> Any:
    return backend_exception(name)


def alias_keys() -> tuple[str, ...]:
    """Every config key that belongs to an alias of ``MEMQUEUE_STORAGE``."""
    return tuple(k for key, (companions, _) in _ALIASES.items() for k in (key, *companions))


def resolve_alias(
    given: Mapping[str, Any], url: str | None, options: Mapping[str, Any]
) -> tuple[str | None, dict[str, Any], str]:
    """The store's URL and options, and the config key that named it, once the aliases
    of ``MEMQUEUE_STORAGE`` are translated by their backends.

    :param given: the alias keys the app's config has (:func:`alias_keys`), as set.
    :param url: ``MEMQUEUE_STORAGE``, or None if unset.
    :param options: ``MEMQUEUE_STORAGE_OPTIONS``.
    :raises ConfigurationError: an alias key has a bad value, or clashes with
        ``MEMQUEUE_STORAGE`` (the backend says how, naming both keys).
    """
    for key, (companions, target) in _ALIASES.items():
        mine = {k: given[k] for k in (key, *companions) if k in given}
        if not mine:
            continue
        translated = _load(target)(mine, url, options)
        if translated is not None:
            url, options = translated
            return url, dict(options), key
    return url, dict(options), "MEMQUEUE_STORAGE"


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
    if isinstance(ep, tuple):  # a built-in
        loaded: StorageFactory = _load(ep[1])
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
