"""The SQLite journal: a store every process of one host shares, in one file.

``MEMQUEUE_STORAGE = "sqlite:///jobs.db"`` (relative to the app's instance
folder) or ``"sqlite:////var/lib/app/jobs.db"`` (absolute); the old
``MEMQUEUE_JOURNAL = "jobs.db"`` means the same. Options (query string or
``MEMQUEUE_STORAGE_OPTIONS``): ``sync`` = ``normal`` (survives the process
dying at any instant) or ``full`` (also power loss: one fsync per commit).

This package is SQL only (``schema.py``: the file and its tables; ``store.py``: the
primitives). Everything a cross-process store needs beyond its
commands (group commit, claims that record the previous job, owners and
take-over, waiters, the local job cache) is
:class:`~flask_memqueue.storage.durable.DurableStorage`'s; each primitive
here is one transaction. Only the standard library's :mod:`sqlite3` is used,
in WAL mode, so readers go on while a write commits; a claim is one ``BEGIN
IMMEDIATE`` transaction (SQLite's single writer lock makes it atomic across
processes).

**Several apps.** Rows carry the app's name (``app.name``): apps of one name
share jobs; two different apps can share one file without seeing each other's.

**fork.** A connection must never cross a fork: the store declares
``reopen_after_fork``, so a child's queue opens a new one; the inherited
store is kept referenced (in ``_OPEN``) but never used or closed in the
child (closing the parent's connection there could disturb its locks).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from ...exceptions import ConfigurationError
from ..base import StoreContext, redact_url
from ..durable import check_options
from .errors import JournalError

if TYPE_CHECKING:
    from .store import SQLiteStorage

#: The options this backend takes, and what each means.
OPTIONS = {"sync": "'normal' (default) survives a crash; 'full' also survives power loss"}

def journal_file(url: str, base_dir: str, key: str = "MEMQUEUE_STORAGE") -> str:
    """The file a ``sqlite://`` URL names: three slashes and a relative path are
    relative to ``base_dir`` (the instance folder, made if missing), four an absolute one.
    Errors name ``key``, the config key the URL came from."""
    parts = urlsplit(url)
    shown = redact_url(url)
    if parts.netloc:
        raise ConfigurationError(
            f"{key}: a sqlite URL has no host; use 'sqlite:///relative.db' (in the"
            f" instance folder) or 'sqlite:////absolute/path.db', not {shown!r}"
        )
    path = unquote(parts.path, errors="strict")
    if path.startswith("/"):
        path = path[1:]
    if not path or path.endswith("/") or not path.strip():
        raise ConfigurationError(f"{key}: the sqlite URL {shown!r} names no file, like 'sqlite:///jobs.db'")
    if path == ":memory:":
        raise ConfigurationError(
            f"{key}: an in-memory SQLite database ({shown!r}) is not shared between processes or"
            " connections; for jobs in memory use 'memory://', for a journal name a file"
        )
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise ConfigurationError(f"{key}: the sqlite file name in {shown!r} holds a control character or NUL byte")
    if os.path.isabs(path):
        return path
    try:
        os.makedirs(base_dir, exist_ok=True)
    except OSError as exc:
        raise JournalError(
            f"cannot create the instance folder {base_dir!r} for the journal {path!r}: {exc}"
        ) from exc
    return os.path.join(base_dir, path)


def open_sqlite(url: str, options: Mapping[str, Any], context: StoreContext) -> SQLiteStorage:
    """The ``sqlite://`` entry point."""
    check_options(options, OPTIONS, url)
    sync = str(options.get("sync", "normal")).lower()
    if sync not in ("normal", "full"):
        raise ConfigurationError(
            f"MEMQUEUE_STORAGE / MEMQUEUE_STORAGE_OPTIONS: the sqlite option sync must be 'normal' or 'full',"
            f" not {options.get('sync')!r}"
        )
    from .store import SQLiteStorage  # sqlite3 is imported by the apps that open a journal only

    return SQLiteStorage(journal_file(url, context.base_dir, context.config_key), context, sync=sync, url=url)




#: The alias's keys.
_JOURNAL, _SYNC = "MEMQUEUE_JOURNAL", "MEMQUEUE_JOURNAL_SYNC"


def journal_alias(
    given: Mapping[str, Any], url: str | None, options: Mapping[str, Any]
) -> tuple[str, dict[str, Any]] | None:
    """``MEMQUEUE_JOURNAL = "jobs.db"``: ``MEMQUEUE_STORAGE = "sqlite:///jobs.db"``, with
    ``MEMQUEUE_JOURNAL_SYNC`` as its ``sync`` option. None when the alias is not used.

    ``given`` holds the alias's keys the app set; ``url`` and ``options`` are
    ``MEMQUEUE_STORAGE`` (None if unset) and ``MEMQUEUE_STORAGE_OPTIONS``.

    :raises ConfigurationError: a bad value, or the alias set along with
        ``MEMQUEUE_STORAGE`` (or its sync along with the options' sync).
    """
    sync_given = _SYNC in given
    sync = given.get(_SYNC, "normal")
    if not (isinstance(sync, str) and sync.lower() in ("normal", "full")):
        raise ConfigurationError(f"{_SYNC} must be 'normal' or 'full', not {sync!r}")
    sync = sync.lower()
    path = given.get(_JOURNAL)
    if path is None or path == "":
        if sync_given and sync != "normal":
            raise ConfigurationError(
                f"{_SYNC} goes with {_JOURNAL}; with MEMQUEUE_STORAGE say"
                " MEMQUEUE_STORAGE_OPTIONS = {'sync': 'full'} (or ?sync=full in the URL)"
            )
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(f"{_JOURNAL} must be a file path, not {path!r}")
    if url is not None:
        raise ConfigurationError(
            f"MEMQUEUE_STORAGE and {_JOURNAL} are both set: {_JOURNAL} is an alias of"
            " MEMQUEUE_STORAGE = 'sqlite:///<path>'; keep one of them"
        )
    if "sync" in options and sync_given:
        raise ConfigurationError(f"{_SYNC} and MEMQUEUE_STORAGE_OPTIONS['sync'] are both set; keep one")
    # an absolute path gives sqlite:////abs, as SQLAlchemy writes it
    return "sqlite:///" + quote(os.fspath(path)), {"sync": sync, **options}


def __getattr__(name: str) -> Any:
    """The store itself, imported on first use (it imports :mod:`sqlite3`)."""
    if name == "SQLiteStorage":
        from .store import SQLiteStorage

        return SQLiteStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["OPTIONS", "JournalError", "SQLiteStorage", "journal_alias", "journal_file", "open_sqlite"]
