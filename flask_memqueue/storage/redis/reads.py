"""The reading side of the Redis store: records, listings, counts, owners and declared queues.

A part of :class:`~flask_memqueue.storage.redis.store.RedisStorage` (a mixin
before :class:`~flask_memqueue.storage.durable.DurableStorage` in its bases),
kept apart so that the store's class holds what changes jobs (inserts,
claims, outcomes, take-overs) and this one what only reads them, plus the
few housekeeping scripts (prune, purge) that run the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..durable import FINISHED, Record
from ..limits import LimitUse, Waiting, limit_uses
from .records import RedisRecord, from_reply, parse

if TYPE_CHECKING:
    from .client import Client


class RedisReads:
    """Primitives of the durable base that read (and prune) with one command or script each."""

    client: Client
    prefix: str
    _alive: dict[str, bool]

    if TYPE_CHECKING:

        def _run(self, name: str, args: list[Any], doing: str, *, repeat: bool = True) -> Any: ...

    def _load(self, job_id: str, visible_after: float | None) -> RedisRecord | None:
        # A script, not HGET: the text's task code is expanded where the table is (load.lua).
        text = self._run("load", [job_id], "reading a job")[0]
        if not text:
            return None
        record = parse(job_id, text)
        if visible_after is not None and record.finished_at is not None and record.finished_at <= visible_after:
            return None
        return record

    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        if not job_ids:
            return []
        found: list[Any] = []
        for i in range(0, len(job_ids), 1000):  # (chunks, for Lua's stack)
            found += self._run("load", job_ids[i:i + 1000], "reading jobs")
        records: list[Record] = []
        for jid, text in zip(job_ids, found, strict=False):
            if text:
                record = parse(jid, text)
                if not finished_only or record.status in FINISHED:
                    records.append(record)
        return records

    # -- listings and counts ---------------------------------------------------------------------------
    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        """Newest inserted first: the insertion number orders jobs, as enqueue times would
        (a job queued again by ``requeue`` takes a new one, at the end of its line)."""
        flat = self._run("list", [status or "", limit, offset, repr(visible_after), queue or ""], "listing jobs")
        return [from_reply(r) for r in flat]

    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        flat = self._run("count", [repr(visible_after)], "counting jobs")
        counts: dict[str, int] = {}
        for field, value in zip(flat[::2], flat[1::2], strict=False):
            status, bar, name = field.partition("|")
            if (queue is None and not bar) or (queue is not None and bar and name == queue):
                counts[status] = int(value)
        return counts

    def _limit_uses(self, now: float) -> list[LimitUse]:
        running, limits, windows, held = self._run("limits", [], "reading the limits")

        def pairs(flat: list[Any]) -> dict[str, str]:
            return {str(k): str(v) for k, v in zip(flat[::2], flat[1::2], strict=False)}

        wins = {}
        for key, text in pairs(windows).items():
            end, count, cap, length = text.split()
            wins[key] = (float(end) - float(length), int(count), int(cap), float(length))
        lim = {k: int(v) for k, v in pairs(limits).items()}
        waiting: list[Waiting] = []
        for field, n in pairs(held).items():
            kind, _, key = field.partition("|")
            if kind == "c":
                waiting.append((key, lim.get(key, 0), None, None, None, int(n)))
            elif key in wins:
                _, _, rate, period = wins[key]
                waiting.append((None, None, key, rate, period, int(n)))
        return limit_uses(now, {k: int(v) for k, v in pairs(running).items()}, lim, wins, waiting)

    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        due = "" if due_before is None else repr(due_before)
        return int(self._run("busy", [",".join(statuses), due, queue or ""], "counting jobs"))

    def _running_owners(self) -> set[str]:
        flat = self._run("owners", [], "reading the owners of running jobs")
        alive = {owner: bool(flag) for owner, flag in zip(flat[::2], flat[1::2], strict=False)}
        self._alive = alive
        return set(alive)

    def _owner_alive(self, owner: str) -> bool:
        """Alive while its lease key exists (renewed by its heartbeat): a lease, not a pid,
        so that it holds across hosts. Read with the owners, in the same script."""
        known = self._alive.get(owner)
        if known is not None:
            return known
        return bool(self.client.command("reading a lease", "EXISTS", f"{self.prefix}:l:{owner}"))

    def _running_of(self, owner: str) -> list[Record]:
        return [from_reply(r) for r in self._run("running_of", [owner], "reading running jobs")]

    def _prune(self, finished_before: float, keep: int) -> None:
        self._run("prune", [repr(finished_before), keep], "forgetting old finished jobs")

    def _purge(self) -> int:
        return int(self._run("purge", [], "purging finished jobs", repeat=False))

    def _remove_waiting(self) -> list[Record]:
        return [from_reply(r) for r in self._run("remove_waiting", [], "dropping waiting jobs", repeat=False)]

    def _next_eta(self, queue: str | None = None) -> float | None:
        eta = self._run("next_eta", [queue or ""], "reading the next due time")
        return None if eta is None else float(eta)

    def _queue_counts(self) -> dict[str, dict[str, int]]:
        flat = self._run("queue_counts", [], "counting jobs by queue")
        return {flat[i]: {"queued": int(flat[i + 1]), "scheduled": int(flat[i + 2]), "running": int(flat[i + 3])}
                for i in range(0, len(flat), 4)}

    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:
        """``<prefix>:dq`` holds, per owner, when it last said which queues it consumes."""
        key = f"{self.prefix}:dq"
        if queues:
            self.client.command("declaring queues", "HSET", key, owner, json.dumps([now, list(queues)]))
        else:
            self.client.command("declaring queues", "HDEL", key, owner)

    def _declared(self, seen_after: float) -> set[str]:
        key = f"{self.prefix}:dq"
        flat = self.client.command("reading declared queues", "HGETALL", key)
        names: set[str] = set()
        stale = []
        for owner, text in zip(flat[::2], flat[1::2], strict=False):
            seen, queues = json.loads(text)
            if seen > seen_after:
                names.update(queues)
            else:
                stale.append(owner)
        if stale:  # gone quiet long ago (killed): nobody will forget them otherwise
            self.client.command("reading declared queues", "HDEL", key, *stale)
        return names
