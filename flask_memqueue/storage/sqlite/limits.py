"""The journal's rate and concurrency limits, checked inside the claim's transaction.

A part of :class:`~flask_memqueue.storage.sqlite.store.SQLiteStorage` (see
:mod:`flask_memqueue.storage.limits` for what a limit means). The claim picks
its row as before; only when that row carries a limit (its options' JSON)
does it read which keys are full and pick again, passing over the rows of
those keys, all in the one ``BEGIN IMMEDIATE`` transaction that makes the
row running (the journal's writes are serialised, so no other process
counts between). A plain job pays one substring test of its options.

- Concurrency: the running rows of each key are counted (a partial index
  holds only running rows that have options, so plain jobs never enter it).
  A slot is freed by whatever takes a row out of ``running``.
- Rate: ``memqueue_rates`` holds one row per key: the end of its current
  fixed window and how many claims it saw.
"""

from __future__ import annotations

import abc
import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from ..limits import LimitUse, limit_uses, window_of
from .schema import _COLUMNS
from .schema import due_first as _due_first

_CK = "json_extract(options, '$.concurrency_key')"
_RK = "json_extract(options, '$.rate_key')"
#: Appended to a claim's WHERE: not a row of a full key (two JSON arrays bound).
EXCLUDE = (
    f" AND (options IS NULL OR (coalesce({_CK} NOT IN (SELECT value FROM json_each(?)), 1)"
    f" AND coalesce({_RK} NOT IN (SELECT value FROM json_each(?)), 1)))"
)


class JournalLimits(abc.ABC):
    """Limits in SQL, over the journal's connection (a mixin of the store)."""

    namespace: str

    @abc.abstractmethod
    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

    def _limited_row(self, conn: sqlite3.Connection, queue: str, now: float) -> Any:
        """The claim's two index walks again, passing over the rows of full keys, and the
        start counted in its rate window. In the claim's transaction."""
        ns = self.namespace
        conc, rate = self._full_keys(conn, now)
        due = conn.execute(
            f"SELECT seq, {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND lane=? AND status='scheduled'"
            f" AND eta<=?{EXCLUDE} ORDER BY priority DESC, eta, seq LIMIT 1",
            (ns, queue, now, conc, rate),
        ).fetchone()
        row = conn.execute(
            f"SELECT seq, {_COLUMNS} FROM memqueue_jobs WHERE queue=? AND lane=? AND status='queued'"
            f"{EXCLUDE} ORDER BY priority DESC, seq LIMIT 1",
            (ns, queue, conc, rate),
        ).fetchone()
        if due is not None and (row is None or _due_first(due, row)):
            row = due
        if row is not None and row[-1] is not None and '"rate_limit":' in row[-1]:
            self._count_start(conn, row[-1], now)
        return row

    def _full_keys(self, conn: sqlite3.Connection, now: float) -> tuple[str, str]:
        """The concurrency keys with all their slots running and the rate keys whose
        window is full, each as a JSON array (for :data:`EXCLUDE`)."""
        ns = self.namespace
        conc = [k for k, n, lim in conn.execute(
            f"SELECT {_CK}, count(*), max(json_extract(options, '$.concurrency')) FROM memqueue_jobs"
            " WHERE queue=? AND status='running' AND options IS NOT NULL"
            f" AND {_CK} IS NOT NULL GROUP BY 1", (ns,)
        ) if lim is not None and n >= lim]
        rate = [k for (k,) in conn.execute(
            "SELECT key FROM memqueue_rates WHERE queue=? AND window_end > ? AND count >= lim", (ns, now)
        )]
        return json.dumps(conc), json.dumps(rate)

    def _count_start(self, conn: sqlite3.Connection, options: str, now: float) -> None:
        """Count the claim of a rate-limited row (options JSON) in its key's current window.

        A key's window never moves back: a claim whose ``now`` is older than the window
        another process already opened counts in that newer window (stricter, never looser).
        It used to reopen the older window with a count of 1, which dropped the newer one's
        count and let up to another full window of claims through."""
        o = json.loads(options)
        key, limit, period = o.get("rate_key"), o.get("rate_limit"), o.get("rate_period") or 1.0
        if key is None or limit is None:
            return
        end = window_of(now, period) + period
        conn.execute(
            "INSERT INTO memqueue_rates (queue, key, window_end, count, lim, period) VALUES (?, ?, ?, 1, ?, ?)"
            " ON CONFLICT (queue, key) DO UPDATE SET"
            " count = CASE WHEN excluded.window_end <= window_end THEN count + 1 ELSE 1 END,"
            " window_end = max(window_end, excluded.window_end), lim = excluded.lim, period = excluded.period",
            (self.namespace, key, end, limit, period),
        )

    def _limit_uses(self, now: float) -> list[LimitUse]:
        ns = self.namespace
        running = self._read(
            f"SELECT {_CK}, count(*), max(json_extract(options, '$.concurrency')) FROM memqueue_jobs"
            f" WHERE queue=? AND status='running' AND options IS NOT NULL AND {_CK} IS NOT NULL GROUP BY 1", (ns,))
        windows = {k: (end - period, count, lim, period) for k, end, count, lim, period in self._read(
            "SELECT key, window_end, count, lim, period FROM memqueue_rates WHERE queue=? AND window_end > ?",
            (ns, now))}
        waiting = self._read(
            f"SELECT {_CK}, json_extract(options, '$.concurrency'), {_RK}, json_extract(options, '$.rate_limit'),"
            " json_extract(options, '$.rate_period'), count(*) FROM memqueue_jobs"
            " WHERE queue=? AND status IN ('queued', 'scheduled') AND options IS NOT NULL"
            f" AND ({_CK} IS NOT NULL OR {_RK} IS NOT NULL) GROUP BY 1, 2, 3, 4, 5", (ns,))
        return limit_uses(now, {k: n for k, n, _ in running}, {k: lim for k, _, lim in running}, windows,
                          [tuple(row) for row in waiting])


__all__ = ["EXCLUDE", "JournalLimits"]
