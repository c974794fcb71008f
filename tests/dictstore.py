"""A storage backend written only for the tests: records in a dict, behind the durable machinery.

It is the proof of the storage seam: one file plus one entry in
``STORAGE_BACKENDS`` (tests/support/backends.py), and the whole contract runs against it.
Every operation goes through :class:`~flask_memqueue.storage.durable.DurableStorage`
(records, JSON arguments, group commit, claims, owners, take-over, waiters),
so the contract checks that machinery apart from SQL. Stores opened on the
same URL share one table, as processes share a journal file.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from flask_memqueue.exceptions import DependencyError, QueueFull
from flask_memqueue.storage import StoreContext
from flask_memqueue.storage.base import dependency_cancelled, dependency_failed, released_args
from flask_memqueue.storage.durable import FINISHED, DurableStorage, Record, check_options

SCHEME = "dict"
#: The same store without ``capabilities.workflows``: how a store that lacks it behaves.
PLAIN_SCHEME = "dictplain"
WAITING = ("queued", "scheduled", "deferred")


class _Edge:
    """A workflow link: ``child`` waits on ``parent``; ``result`` is the parent's (JSON),
    kept from the parent's success until the child is released."""

    __slots__ = ("child", "done", "parent", "position", "result")

    def __init__(self, parent: str, child: str, position: int) -> None:
        self.parent, self.child, self.position = parent, child, position
        self.done = False
        self.result: str | None = None


class _Table:
    """What a file would be: every namespace's records, in insertion order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, tuple[str, int, Record]] = {}  # id -> (namespace, seq, record)
        self.seq = itertools.count(1)
        self.consumers: dict[tuple[str, str, str], float] = {}  # (namespace, owner, queue) -> seen at
        self.ticks: dict[tuple[str, str], tuple[float, str | None, float]] = {}  # (namespace, task) -> last claim
        # id -> (the claim it was asked of: the record's started_at, reason)
        self.aborts: dict[str, tuple[float | None, str]] = {}
        self.paused: set[tuple[str, str]] = set()  # (namespace, queue)
        # Workflows (ids are unique across namespaces): the links by parent and by child, the
        # counter of each deferred job (its parents not yet succeeded), each group's members.
        self.down: dict[str, list[_Edge]] = {}
        self.up: dict[str, list[_Edge]] = {}
        self.waits: dict[str, int] = {}
        self.groups: dict[tuple[str, str], dict[str, None]] = {}  # (namespace, group) -> member ids, in order


_TABLES: dict[str, _Table] = {}
_TABLES_LOCK = threading.Lock()


def open_dict(url: str, options: Mapping[str, Any], context: StoreContext) -> DictStorage:
    check_options(options, {}, url)
    with _TABLES_LOCK:
        table = _TABLES.setdefault(url, _Table())
    return DictStorage(url, context, table)


def open_plain(url: str, options: Mapping[str, Any], context: StoreContext) -> DictStorage:
    """The dict store without ``capabilities.workflows`` (scheme ``dictplain``)."""
    check_options(options, {}, url)
    with _TABLES_LOCK:
        table = _TABLES.setdefault(url, _Table())
    return PlainDictStorage(url, context, table)


def _due_time(record: Record) -> float:
    """When a queued record became due: its enqueue time, or its eta once requeued."""
    return record.eta if record.eta is not None else record.enqueued_at


class _DictWorkflows:
    """The workflow primitives of the dict store: every one under the table's lock, and the
    release of dependents (:meth:`_settled_locked`) in the same critical section as the
    write that records a parent's final outcome."""

    namespace: str
    maxsize: int
    table: _Table
    _mine: Callable[[], list[tuple[int, Record]]]

    def _insert_workflow(self, records: list[Record], links: list[tuple[str, str, int]],
                         groups: list[tuple[str, int, str]], now: float) -> list[str]:
        table = self.table
        mine = {r.id for r in records}
        with table.lock:
            if self.maxsize:
                waiting = sum(1 for _, r in self._mine() if r.status in WAITING)
                if waiting + len(records) > self.maxsize:
                    raise QueueFull(f"the workflow's {len(records)} jobs do not fit under MEMQUEUE_MAXSIZE"
                                    f" ({self.maxsize}); none of them was queued")
            outside = {parent for parent, _child, _pos in links if parent not in mine}
            for parent in sorted(outside):
                row = table.rows.get(parent)
                if row is None or row[0] != self.namespace:
                    raise DependencyError(f"depends_on: this app's queue holds no job {parent!r}; nothing was queued")
            for r in records:
                table.rows[r.id] = (self.namespace, next(table.seq), replace(r))
            for parent, child, position in links:
                edge = _Edge(parent, child, position)
                table.down.setdefault(parent, []).append(edge)
                table.up.setdefault(child, []).append(edge)
                table.waits[child] = table.waits.get(child, 0) + 1
            for group, _idx, job_id in groups:
                table.groups.setdefault((self.namespace, group), {})[job_id] = None
            changed: list[str] = []
            for parent in outside:
                stored = table.rows[parent][2]
                if stored.status in FINISHED:
                    changed += self._settled_locked(stored, stored.finished_at or now)
        return [jid for jid in changed if jid in mine]

    def _settled_locked(self, record: Record, now: float) -> list[str]:
        """``record`` reached a final status (lock held): use its links once; release the
        children whose last parent it was, or cancel them (and theirs). Returns their ids."""
        table = self.table
        table.waits.pop(record.id, None)
        touched: list[str] = []
        stack: list[tuple[Record, str | None]] = [(record, None)]
        while stack:
            parent, reason = stack.pop()
            for edge in table.down.get(parent.id, ()):
                if edge.done:
                    continue
                edge.done = True
                succeeded = parent.status == "succeeded"
                edge.result = parent.result if succeeded and edge.position >= 0 else None
                row = table.rows.get(edge.child)
                if row is None or row[2].status != "deferred":
                    continue  # cancelled already
                child = row[2]
                if succeeded:
                    table.waits[child.id] = table.waits.get(child.id, 1) - 1
                    if table.waits[child.id] > 0:
                        continue
                    self._release_locked(child)
                else:
                    why = reason or (dependency_cancelled(parent.id, parent.task) if parent.status == "cancelled"
                                     else dependency_failed(parent.id, parent.task, parent.error))
                    child.status, child.finished_at, child.error = "cancelled", now, why
                    stack.append((child, why))
                table.waits.pop(child.id, None)
                touched.append(child.id)
        return touched

    def _release_locked(self, child: Record) -> None:
        """Queue a deferred ``child`` whose parents all succeeded, with what its ``bind`` says first."""
        edges = sorted((e for e in self.table.up.get(child.id, ()) if e.position >= 0), key=lambda e: e.position)
        bind = json.loads(child.options).get("bind") if child.options else None
        if bind == "first":
            first = next((e.result for e in edges if e.position == 0), None)
            child.args = released_args(child.args, first if first is not None else "null")
        elif bind == "list":
            bound = "[" + ",".join("null" if e.result is None else e.result for e in edges) + "]"
            child.args = released_args(child.args, bound)
        for edge in edges:
            edge.result = None
        child.status = "queued"
        namespace, _seq, _ = self.table.rows[child.id]
        self.table.rows[child.id] = (namespace, next(self.table.seq), child)  # at the end of its line

    def _forget_locked(self, records: Iterable[Record]) -> None:
        """Jobs deleted (lock held): their group rows, counters, and the links nobody needs any
        more; by key (each job's own links, its group from its options), never a scan."""
        table = self.table
        for record in records:
            job_id = record.id
            table.waits.pop(job_id, None)
            group = json.loads(record.options).get("group") if record.options else None
            members = table.groups.get((self.namespace, group)) if group else None
            if members is not None:
                members.pop(job_id, None)
                if not members:
                    del table.groups[(self.namespace, group)]  # type: ignore[arg-type]
            for edge in table.down.pop(job_id, ()):
                row = table.rows.get(edge.child)
                if row is not None and row[2].status == "deferred":
                    table.down.setdefault(job_id, []).append(edge)  # it carries a result for that child
            for edge in table.up.pop(job_id, ()):
                if edge.parent in table.rows:
                    table.up.setdefault(job_id, []).append(edge)  # the parent lists it as a dependent

    def _dependents(self, job_id: str) -> list[str]:
        with self.table.lock:
            row = self.table.rows.get(job_id)
            if row is not None and row[0] != self.namespace:
                return []
            return [edge.child for edge in self.table.down.get(job_id, ())]

    def _group_members(self, group_id: str) -> list[Record]:
        with self.table.lock:
            ids = self.table.groups.get((self.namespace, group_id), {})
            return [replace(self.table.rows[jid][2]) for jid in ids if jid in self.table.rows]


class DictStorage(_DictWorkflows, DurableStorage):
    capabilities = replace(DurableStorage.capabilities, abort_flags=True, workflows=True)

    def __init__(self, url: str, context: StoreContext, table: _Table) -> None:
        super().__init__(url, context)
        self.table = table

    def _mine(self) -> list[tuple[int, Record]]:
        return [(seq, r) for ns, seq, r in self.table.rows.values() if ns == self.namespace]

    def _insert(self, records: list[Record]) -> int:
        with self.table.lock:
            room = len(records)
            if self.maxsize:
                waiting = sum(1 for _, r in self._mine() if r.status in WAITING)
                room = max(0, min(room, self.maxsize - waiting))
            for r in records[:room]:
                self.table.rows[r.id] = (self.namespace, next(self.table.seq), replace(r))
            return room

    def _insert_all(self, records: list[Record]) -> bool:
        with self.table.lock:
            if self.maxsize:
                waiting = sum(1 for _, r in self._mine() if r.status in WAITING)
                if waiting + len(records) > self.maxsize:
                    return False
            for r in records:
                self.table.rows[r.id] = (self.namespace, next(self.table.seq), replace(r))
            return True

    def _set_paused(self, queue: str, paused: bool, now: float) -> bool:
        with self.table.lock:
            key = (self.namespace, queue)
            was = key in self.table.paused
            if paused:
                self.table.paused.add(key)
            else:
                self.table.paused.discard(key)
            return was != paused

    def _paused(self) -> set[str]:
        with self.table.lock:
            return {queue for ns, queue in self.table.paused if ns == self.namespace}

    def _delete_finished(self, job_ids: list[str]) -> int:
        with self.table.lock:
            n = 0
            for job_id in job_ids:
                row = self.table.rows.get(job_id)
                if row is not None and row[0] == self.namespace and row[2].status in FINISHED:
                    del self.table.rows[job_id]
                    self._forget_locked([row[2]])
                    n += 1
            return n

    def _save_locked(self, record: Record) -> None:
        old = self.table.rows.get(record.id)
        if old is not None and old[0] != self.namespace:
            return
        seq = old[1] if old is not None else next(self.table.seq)
        self.table.rows[record.id] = (self.namespace, seq, replace(record))
        if record.status in FINISHED and (old is None or old[2].status not in FINISHED):
            # a final outcome: what waits on the job is released or cancelled, under this lock
            self._settled_locked(record, record.finished_at or time.time())

    def _save(self, record: Record) -> None:
        with self.table.lock:
            self._save_locked(record)

    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        with self.table.lock:
            for record in settle:
                self._save_locked(record)
            if stop():
                return None
            mine = [(seq, r) for seq, r in self._mine() if r.queue == queue]
            # As SQLite does: the best due scheduled record (priority, eta, insertion) against the
            # first queued one (priority, insertion): priority first, then due time, where a
            # queued record's is its enqueue time (its eta once requeued); the queued one wins a tie.
            due = min(((-r.priority, r.eta or 0.0, seq, r) for seq, r in mine
                       if r.status == "scheduled" and (r.eta or 0.0) <= now), key=lambda row: row[:3], default=None)
            head = min(((-r.priority, seq, r) for seq, r in mine if r.status == "queued"),
                       key=lambda row: row[:2], default=None)
            if due is None and head is None:
                return None
            if head is None or (due is not None and (due[0], due[1]) < (head[0], _due_time(head[2]))):
                found = due[3]  # type: ignore[index]
            else:
                found = head[2]
            before = replace(found)
            found.status, found.owner, found.started_at = "running", owner, now
            found.attempts += 1
            return before

    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        with self.table.lock:
            old = self.table.rows.get(job_id)
            if old is None or old[0] != self.namespace or old[2].status not in tuple(from_status):
                return False
            if record.status == "queued":  # requeued: a new place, at the end of its line
                del self.table.rows[job_id]
            self._save_locked(record)
            return True

    def _transition_many(self, changes: list[tuple[str, tuple[str, ...], Record]]) -> list[bool]:
        """A bulk action's batch under one hold of the table's lock."""
        out = []
        with self.table.lock:
            for job_id, statuses, record in changes:
                old = self.table.rows.get(job_id)
                if old is None or old[0] != self.namespace or old[2].status not in statuses:
                    out.append(False)
                    continue
                if record.status == "queued":  # requeued: a new place, at the end of its line
                    del self.table.rows[job_id]
                self._save_locked(record)
                out.append(True)
        return out

    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        with self.table.lock:
            old = self.table.rows.get(job_id)
            if old is None or old[0] != self.namespace or old[2].status != "running" or old[2].owner != owner:
                return False
            self._save_locked(record)
            return True

    def _load(self, job_id: str, visible_after: float | None) -> Record | None:
        with self.table.lock:
            old = self.table.rows.get(job_id)
            if old is None or old[0] != self.namespace:
                return None
            r = old[2]
            if visible_after is not None and r.finished_at is not None and r.finished_at <= visible_after:
                return None
            return replace(r)

    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        found = [self._load(jid, None) for jid in job_ids]
        return [r for r in found if r is not None and (not finished_only or r.status in FINISHED)]

    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        with self.table.lock:
            rows = [(r.enqueued_at, seq, r) for seq, r in self._mine()
                    if (status is None or r.status == status) and (queue is None or r.queue == queue)
                    and (r.finished_at is None or r.finished_at > visible_after)]
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        return [replace(r) for _, _, r in rows[offset:offset + limit]]

    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self.table.lock:
            for _, r in self._mine():
                if (r.finished_at is None or r.finished_at > visible_after) and (queue is None or r.queue == queue):
                    counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    def _queue_counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self.table.lock:
            for _, r in self._mine():
                if r.status in ("queued", "scheduled", "running"):
                    row = out.setdefault(r.queue, {"queued": 0, "scheduled": 0, "running": 0})
                    row[r.status] += 1
        return out

    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        wanted = set(statuses)
        with self.table.lock:
            return sum(
                1 for _, r in self._mine()
                if r.status in wanted and (queue is None or r.queue == queue)
                and (r.status != "scheduled" or due_before is None or (r.eta or 0.0) <= due_before)
            )

    def _request_abort(self, job_id: str, reason: str) -> bool:
        with self.table.lock:
            row = self.table.rows.get(job_id)
            if row is None or row[0] != self.namespace or row[2].status != "running":
                return False
            self.table.aborts[job_id] = (row[2].started_at, reason)
            return True

    def _abort_requests(self, job_ids: list[str]) -> dict[str, str]:
        found = {}
        with self.table.lock:
            for job_id in job_ids:
                asked, row = self.table.aborts.get(job_id), self.table.rows.get(job_id)
                if asked is not None and row is not None and row[2].status == "running" \
                        and row[2].started_at == asked[0]:
                    found[job_id] = asked[1]
        return found

    def _running_owners(self) -> set[str]:
        with self.table.lock:
            return {r.owner for _, r in self._mine() if r.status == "running" and r.owner}

    def _running_of(self, owner: str) -> list[Record]:
        with self.table.lock:
            return [replace(r) for _, r in self._mine() if r.status == "running" and r.owner == owner]

    def _prune(self, finished_before: float, keep: int) -> None:
        with self.table.lock:
            finished = sorted(((r.finished_at or 0.0), seq, r.id) for seq, r in self._mine() if r.status in FINISHED)
            drop = {jid for at, _, jid in finished if at <= finished_before}
            kept = [row for row in finished if row[2] not in drop]
            if len(kept) > keep:
                drop.update(jid for _, _, jid in kept[: len(kept) - keep])
            self._forget_locked([self.table.rows.pop(jid)[2] for jid in drop])

    def _purge(self) -> int:
        with self.table.lock:
            drop = [r.id for _, r in self._mine() if r.status in FINISHED]
            self._forget_locked([self.table.rows.pop(jid)[2] for jid in drop])
            return len(drop)

    def _remove_waiting(self) -> list[Record]:
        with self.table.lock:
            waiting = sorted((seq, r) for seq, r in self._mine() if r.status in WAITING)  # deferred too
            for _, r in waiting:
                del self.table.rows[r.id]
            self._forget_locked([r for _, r in waiting])
            return [r for _, r in waiting]

    def _next_eta(self, queue: str | None = None) -> float | None:
        with self.table.lock:
            etas = [r.eta for _, r in self._mine() if r.status == "scheduled" and r.eta is not None
                    and (queue is None or r.queue == queue)]
        return min(etas) if etas else None

    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:
        with self.table.lock:
            self.table.consumers = {k: v for k, v in self.table.consumers.items() if k[:2] != (self.namespace, owner)}
            for lane in queues:
                self.table.consumers[(self.namespace, owner, lane)] = now

    def _declared(self, seen_after: float) -> set[str]:
        with self.table.lock:
            return {k[2] for k, seen in self.table.consumers.items() if k[0] == self.namespace and seen > seen_after}

    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        with self.table.lock:
            live = sorted((seq, r) for seq, r in self._mine()
                          if r.unique_key == record.unique_key and r.status in ("queued", "scheduled", "running"))
            if live:
                return replace(live[0][1])
            if full:
                return None
            self.table.rows[record.id] = (self.namespace, next(self.table.seq), replace(record))
            return record

    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        with self.table.lock:
            last = self.table.ticks.get((self.namespace, task))
            if last is not None and last[0] >= tick:
                return False
            self.table.ticks[(self.namespace, task)] = (tick, None if record is None else record.id, now)
            if record is not None:
                self.table.rows[record.id] = (self.namespace, next(self.table.seq), replace(record))
            return True

    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        with self.table.lock:
            return {task: row for (ns, task), row in self.table.ticks.items() if ns == self.namespace}

    def _close(self) -> None:
        pass


class PlainDictStorage(DictStorage):
    """The dict store without ``capabilities.workflows``: a store that refuses workflows."""

    capabilities = replace(DictStorage.capabilities, workflows=False)
