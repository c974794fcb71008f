"""Idle consumers, woken by ``NOTIFY`` within milliseconds of an enqueue in any process.

Every insert notifies the store's channel (``'q:<queue>'``, delivered at
commit). Each idle consumer thread listens on a connection of its own (outside
the pool) and blocks in it until a notification, :meth:`IdleConsumers.wake`,
or its timeout. A busy consumer reads nothing: what arrived meanwhile is
drained at once when it is idle again, so no thread is woken per job while
the consumers are busy. With ``notify=false`` (PgBouncer in transaction mode,
where ``LISTEN`` cannot work) this is not used: idle workers poll.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..wakeups import Doorbell
from .connection import Connections
from .schema import ident
from .statements import WAKE


class IdleConsumers:
    """The listening connections of one store's consumer threads in this process.

    :param channel: the store's channel of new jobs.
    :param doorbell: this process's wake-up generation (an enqueue here, ``wake()``).
    """

    def __init__(self, connections: Connections, channel: str, doorbell: Doorbell) -> None:
        self._connections = connections
        self._channel = channel
        self._doorbell = doorbell
        self._pid = os.getpid()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: set[Any] = set()
        self._blocked = 0

    def sleep(self, timeout: float, kicks: int) -> int:
        """Wait for a NOTIFY of a new job, a local kick past ``kicks`` (seen when the wait
        ends), or ``timeout``; returns the kick generation now. A thread's first call only
        connects and listens, and returns at once: a job may have committed before LISTEN."""
        bell = self._doorbell
        pg = self._connections.pg
        conn = getattr(self._local, "conn", None)
        try:
            if conn is None or conn.closed or conn.broken:
                self._local.conn = conn = self._connections.connect()
                with self._lock:
                    self._conns.add(conn)
                conn.execute(f"LISTEN {ident(self._channel)}")
                return bell.kicks  # look once more: a job may have committed before LISTEN
            heard = any(True for _ in conn.notifies(timeout=0.0))  # all that came while busy, at once
            if not heard and not bell.woken and bell.kicks == kicks:
                self._block(conn, timeout)
        except pg.Error as exc:
            self._drop(conn)
            raise self._connections.error(exc, "waiting for new jobs") from exc
        return bell.kicks

    def _block(self, conn: Any, timeout: float) -> None:
        with self._lock:
            self._blocked += 1
        try:
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                break
        finally:
            with self._lock:
                self._blocked -= 1

    def wake(self) -> None:
        """Every consumer blocked in its connection looks again now (in every process: they
        just look again). Best effort: they end their wait within ``idle_wait`` anyway."""
        if not self._blocked or self._pid != os.getpid() or not self._connections.pool_open:
            return
        try:
            with self._connections.pooled("waking consumers") as conn:
                conn.execute(WAKE, (self._channel,))
        except Exception:  # noqa: S110 - they end their wait within idle_wait anyway
            pass

    def _drop(self, conn: Any) -> None:
        self._local.conn = None
        if conn is None:
            return
        with self._lock:
            self._conns.discard(conn)
        _close_quietly(conn)

    def close(self) -> None:
        """Close every consumer's connection (the consumer threads have ended: shutdown joins them first)."""
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            _close_quietly(conn)


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:  # noqa: S110 - closing a broken connection, or closing anyway
        pass


__all__ = ["IdleConsumers"]
