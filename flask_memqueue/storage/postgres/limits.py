"""Rate and concurrency limits on PostgreSQL: a claimed job with a limit is checked before it starts.

The usual claim stays one statement (plain jobs pay nothing). When the row it
claimed carries a limit (its options' JSON), :meth:`Limits.admit` checks it in
one more transaction:

- concurrency: an advisory transaction lock on the key (so two workers never
  count at once), then the *other* running rows of the key are counted; at the
  limit, the row goes back as it was (its place in line kept) and the key is full;
- rate: an upsert of the key's fixed-window counter (``memqueue_rates``, schema
  version 6) that raises the count only while it is below the limit.

A job sent back makes the claim try again past the full keys (the claim's
statement with their rows excluded), a few times at most; then the consumer
sleeps its poll interval (``idle_wait``, 1 s), so a slot freed in another
process is seen within about a second. A slot held by a dead worker is held by
its ``running`` row until its lease lapses and the row is taken over.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..limits import LimitUse, limit_uses, limited_text, window_of
from .connection import Connections
from .records import PostgresRecord, from_row
from .schema import ident
from .statements import _CLAIM_CTES

#: Claims tried past full keys before the consumer waits its poll interval.
MAX_TRIES = 8

_CK = "(options::jsonb ->> 'concurrency_key')"
_RK = "(options::jsonb ->> 'rate_key')"
_EXCLUDE = (f" AND coalesce(NOT ({_CK} = ANY(%(fullc)s) OR {_RK} = ANY(%(fullr)s)), true)")


class Limits:
    """One store's limit checks (see the module's text)."""

    def __init__(self, connections: Connections, schema: str, namespace: str) -> None:
        self._connections = connections
        self._ns = namespace
        jobs, rates = f"{ident(schema)}.memqueue_jobs", f"{ident(schema)}.memqueue_rates"
        ctes = _CLAIM_CTES.replace("AND eta <= %(now)s", "AND eta <= %(now)s" + _EXCLUDE).replace(
            "AND status = 'queued'", "AND status = 'queued'" + _EXCLUDE)
        self._claim = ("WITH " + ctes + " SELECT * FROM claimed").format(jobs=jobs)
        self._running = (f"SELECT count(*) FROM {jobs} WHERE ns = %s AND status = 'running'"
                         f" AND options IS NOT NULL AND {_CK} = %s AND id <> %s")
        self._count_start = (
            f"INSERT INTO {rates} AS r (ns, key, window_end, count, lim, period) VALUES (%s, %s, %s, 1, %s, %s)"
            " ON CONFLICT (ns, key) DO UPDATE SET count = CASE WHEN excluded.window_end <= r.window_end"
            " THEN r.count + 1 ELSE 1 END, window_end = greatest(r.window_end, excluded.window_end),"
            " lim = excluded.lim, period = excluded.period"
            " WHERE excluded.window_end > r.window_end OR r.count < excluded.lim"
            " RETURNING count"
        )
        self._unclaim = (f"UPDATE {jobs} SET status = %s, attempts = %s, started_at = %s, owner = NULL,"
                         " token = NULL WHERE id = %s AND ns = %s AND status = 'running' AND token = %s")
        self._uses_running = (
            f"SELECT {_CK}, count(*), max((options::jsonb ->> 'concurrency')::int) FROM {jobs}"
            f" WHERE ns = %s AND status = 'running' AND options IS NOT NULL AND {_CK} IS NOT NULL GROUP BY 1")
        self._uses_windows = (f"SELECT key, window_end, count, lim, period FROM {rates}"
                              " WHERE ns = %s AND window_end > %s")
        self._uses_waiting = (
            f"SELECT {_CK}, (options::jsonb ->> 'concurrency')::int, {_RK}, (options::jsonb ->> 'rate_limit')::int,"
            f" (options::jsonb ->> 'rate_period')::float8, count(*) FROM {jobs}"
            " WHERE ns = %s AND status IN ('queued', 'scheduled') AND options IS NOT NULL"
            f" AND ({_CK} IS NOT NULL OR {_RK} IS NOT NULL) GROUP BY 1, 2, 3, 4, 5")

    def admit(self, record: PostgresRecord, claim: dict[str, Any]) -> PostgresRecord | None:
        """The claimed ``record`` if its limits let it start; else the next claim's that
        does (past the full keys), or None. ``claim``: the claim's parameters (its token)."""
        full_c: list[str] = []
        full_r: list[str] = []
        for _ in range(MAX_TRIES):
            full = self._check(record, claim["token"])
            if full is None:
                return record
            (full_c if full[0] == "c" else full_r).append(full[1])
            with self._connections.conn("taking a job") as conn:
                found = conn.execute(self._claim, {**claim, "fullc": full_c, "fullr": full_r}).fetchone()
            if found is None:
                return None
            record = from_row(found)
            if not limited_text(record.options):
                return record
        self._send_back(record, claim["token"])
        return None

    def _check(self, record: PostgresRecord, token: str) -> tuple[str, str] | None:
        """None if ``record`` (claimed) may start (its start counted in its rate window);
        else it is sent back and ``("c"|"r", the full key)`` returned. One transaction."""
        o = json.loads(record.options or "{}")
        ck, limit = o.get("concurrency_key"), o.get("concurrency")
        rk, rate = o.get("rate_key"), o.get("rate_limit")
        with self._connections.conn("checking a job's limits") as conn, conn.transaction():
            full: tuple[str, str] | None = None
            if ck is not None and limit is not None:
                conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 24))", (f"{self._ns}\n{ck}",))
                (others,) = conn.execute(self._running, (self._ns, ck, record.id)).fetchone()
                if others >= limit:
                    full = ("c", ck)
            if full is None and rk is not None and rate is not None:
                # The window of this moment (``now`` was read before the claim's round trip),
                # and never an older one than the key's (the upsert keeps the newer window and
                # counts this start in it): an older window reopened with a count of 1 dropped
                # the newer one's count, and let up to another full window of starts through.
                period = float(o.get("rate_period") or 1.0)
                end = window_of(time.time(), period) + period
                if conn.execute(self._count_start, (self._ns, rk, end, rate, period)).fetchone() is None:
                    full = ("r", rk)
            if full is not None:
                conn.execute(self._unclaim, (record.status, record.attempts, record.started_at, record.id, self._ns,
                                             token))
        return full

    def _send_back(self, record: PostgresRecord, token: str) -> None:
        with self._connections.conn("taking a job") as conn:
            conn.execute(self._unclaim, (record.status, record.attempts, record.started_at, record.id, self._ns,
                                         token))

    def uses(self, now: float) -> list[LimitUse]:
        """The ``_limit_uses`` primitive."""
        with self._connections.conn("reading the limits") as conn:
            running = conn.execute(self._uses_running, (self._ns,)).fetchall()
            windows = conn.execute(self._uses_windows, (self._ns, now)).fetchall()
            waiting = conn.execute(self._uses_waiting, (self._ns,)).fetchall()
        return limit_uses(now, {k: n for k, n, _ in running}, {k: lim for k, _, lim in running},
                          {k: (end - period, count, lim, period) for k, end, count, lim, period in windows},
                          [tuple(row) for row in waiting])


__all__ = ["MAX_TRIES", "Limits"]
