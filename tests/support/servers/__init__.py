"""Real servers the stores and transports talk to: one way to start, share and stop each.

Every server here is the real one (Debian's package, never an imitation),
and every one is handled the same way:

- **found or not**: :func:`find_binary` looks for the executable;
  :func:`unavailable` skips the test saying what to install, or, under CI
  (``CI`` set), fails it: CI installs every server (``scripts/test.sh``), so
  a missing one there is a broken setup, not a reason to skip.
- **its own place**: a temporary directory for its data, logs and config;
  ``127.0.0.1`` and free ports (:func:`support.net.free_port`, retried on
  a collision, since these servers can not bind port 0 and report it).
- **started through** :func:`support.processes.spawn` (its own process
  group, output to a file) and **stopped by pid**
  (:func:`support.processes.stop_group`: SIGTERM, then SIGKILL after a deadline).
- **once per session** when tests can share it: :func:`shared` starts it on
  first use and keeps it; the plugin (:mod:`support.fixtures`) calls
  :func:`stop_shared` when the session ends. A server that failed to start is
  not tried again for every test: the next ones fail at once with the first error.
- **marked**: a test that reaches one without the ``servers`` marker fails
  and says so (:mod:`support.markers`).

The servers: :mod:`support.servers.redis` (``redis_server`` fixture, and the
``redis`` entry of ``STORAGE_BACKENDS``), :mod:`support.servers.rabbitmq`
(``rabbitmq`` fixture).

Adding one (PostgreSQL is next): a module ``support/servers/postgres.py``
with a class that has ``start()``, ``stop()`` (by pid, through
:func:`~support.processes.stop_group`), ``close()`` (stop for good and remove
its directory), ``alive()``, ``pid`` and ``url`` (it may have more: a
``client()``, ``pause()``), a ``start_postgres(directory=None)`` that checks
for the binaries with :func:`find_binary` / :func:`unavailable`
(``initdb``, ``postgres``: Debian keeps them in ``/usr/lib/postgresql/<version>/bin``),
runs ``initdb`` as the unprivileged user that runs the tests into a temporary
directory, and starts ``postgres -k <private socket dir> -h 127.0.0.1 -p <free port>``;
then ``shared_postgres() = shared("postgres", start_postgres)`` and a
``postgres`` fixture next to ``redis_server`` in :mod:`support.fixtures`
(and, for the storage contract, an entry in :data:`support.backends.STORAGE_BACKENDS`
marked ``servers``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from typing import NoReturn, Protocol, TypeVar

from support import markers


class SharedServer(Protocol):
    """What :func:`shared` needs of a server."""

    def alive(self) -> bool: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=SharedServer)

_SHARED: dict[str, SharedServer] = {}
_FAILED: dict[str, BaseException] = {}


def find_binary(name: str, candidates: Iterable[str] = ()) -> str | None:
    """``name`` on ``PATH``, else the first executable of ``candidates``, else None."""
    found = shutil.which(name)
    if found:
        return found
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


def unavailable(reason: str, *, module: bool = False) -> NoReturn:
    """Skip the running test (or, with ``module``, the module being collected) because
    ``reason``; under CI (``CI`` set), fail it instead.

    Chromium for the browser tests is checked this way too.
    """
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def shared(name: str, start: Callable[[], S]) -> S:
    """The session's one server called ``name``, started by ``start()`` on first use.

    Started again if it died (a test may kill it); never started again
    after it failed to start. Stopped by :func:`stop_shared`.
    """
    markers.require(markers.SERVERS, f"uses the session's {name}")
    if name in _FAILED:
        raise RuntimeError(f"the session's {name} failed to start earlier: {_FAILED[name]!r}") from _FAILED[name]
    server = _SHARED.get(name)
    if server is not None and server.alive():
        return server  # type: ignore[return-value]  # stored by the same name, so by the same start
    if server is not None:
        del _SHARED[name]
        server.close()
    try:
        server = start()
    except Exception as exc:  # a skip (no binary) is no Exception: the next test checks again
        _FAILED[name] = exc
        raise
    _SHARED[name] = server
    return server


def stop_shared() -> None:
    """Close every server :func:`shared` started, the last started first."""
    while _SHARED:
        _, server = _SHARED.popitem()
        server.close()
