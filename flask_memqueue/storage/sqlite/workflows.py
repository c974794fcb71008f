"""The journal's workflow primitives: links, counters and group rows (see schema.py).

A mixin of :class:`~flask_memqueue.storage.sqlite.store.SQLiteStorage`: every
method runs inside the store's write transaction (``_write``) or reads with
``_read``. :meth:`WorkflowRecords._release_in` is called by every write that
records a final outcome, in that write's transaction: a dependent is released
(or cancelled) in the same commit as its last parent's outcome.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

from ...exceptions import DependencyError, QueueFull
from ..base import dependency_cancelled, dependency_failed, released_args
from ..records import Record
from .schema import _COLUMNS, _INSERT

#: The final statuses: a write that records one releases or cancels the job's dependents.
FINAL = frozenset(("succeeded", "failed", "cancelled", "aborted"))


def record(row: Any) -> Record:
    """A record from a ``SELECT {_COLUMNS}`` row (``options``, the last column, is keyword-only)."""
    return Record(*row[:-1], options=row[-1])


class WorkflowRecords:
    """The workflow primitives of the journal (``capabilities.workflows``)."""

    namespace: str
    maxsize: int
    _room: int | None
    _write: Callable[..., Any]
    _read: Callable[[str, Iterable[Any]], list[Any]]
    _row: Callable[[Record], tuple[Any, ...]]

    # -- workflows ----------------------------------------------------------------------
    def _insert_workflow(self, records: list[Record], links: list[tuple[str, str, int]],
                         groups: list[tuple[str, int, str]], now: float) -> list[str]:
        ns = self.namespace
        mine = {r.id for r in records}

        def insert(conn: sqlite3.Connection) -> list[str]:
            if self.maxsize:
                (waiting,) = conn.execute(
                    "SELECT count(*) FROM memqueue_jobs WHERE queue=?"
                    " AND status IN ('queued', 'scheduled', 'deferred')", (ns,),
                ).fetchone()
                if waiting + len(records) > self.maxsize:
                    raise QueueFull(
                        f"the workflow's {len(records)} jobs do not fit: the queue holds {waiting} of at most"
                        f" {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); none of them was queued"
                    )
            outside: dict[str, tuple[str, str, str | None, str | None, float | None]] = {}
            for parent, _child, _pos in links:
                if parent in mine or parent in outside:
                    continue
                row = conn.execute(
                    "SELECT task, status, result, error, finished_at FROM memqueue_jobs WHERE queue=? AND id=?",
                    (ns, parent),
                ).fetchone()
                if row is None:
                    raise DependencyError(
                        f"depends_on: this app's queue holds no job {parent!r}: it never existed here, it belongs"
                        " to another app, or it finished long enough ago to be forgotten (MEMQUEUE_RESULT_TTL,"
                        " MEMQUEUE_MAX_FINISHED); nothing was queued"
                    )
                outside[parent] = row
            conn.executemany(_INSERT, [self._row(r) for r in records])
            counts: dict[str, int] = {}
            for _parent, child, _pos in links:
                counts[child] = counts.get(child, 0) + 1
            conn.executemany("INSERT INTO memqueue_waits (queue, child, remaining) VALUES (?, ?, ?)",
                             [(ns, child, n) for child, n in counts.items()])
            conn.executemany("INSERT INTO memqueue_links (queue, parent, child, position) VALUES (?, ?, ?, ?)",
                             [(ns, parent, child, pos) for parent, child, pos in links])
            conn.executemany("INSERT INTO memqueue_groups (queue, grp, idx, job_id) VALUES (?, ?, ?, ?)",
                             [(ns, group, idx, jid) for group, idx, jid in groups])
            self._room = None
            changed: list[str] = []
            for parent, (task, status, result, error, finished_at) in outside.items():
                if status in FINAL:
                    changed += self._release_in(conn, parent, task, status, result, error, finished_at or now)
            return [jid for jid in changed if jid in mine]

        return list(self._write(insert, f"enqueueing a workflow of {len(records)} job(s)"))

    def _outcome_in(self, conn: sqlite3.Connection, changed: int, r: Record) -> bool:
        """After a write of ``r``'s state (``changed`` rows): if it is final, release or cancel
        what waits on the job, in the same transaction. Returns whether a row changed."""
        if changed and r.status in FINAL:
            self._release_in(conn, r.id, r.task, r.status, r.result, r.error, r.finished_at or time.time())
        return bool(changed)

    def _release_in(self, conn: sqlite3.Connection, job_id: str, task: str, status: str, result: str | None,
                    error: str | None, now: float) -> list[str]:
        """``job_id`` reached a final state (in this transaction): release the children whose
        last parent it was, or cancel them (and theirs) if it did not succeed. Returns the
        ids of the jobs released or cancelled. Each link is used once (``done``)."""
        ns = self.namespace
        touched: list[str] = []
        stack: list[tuple[str, str, str, str | None, str | None, str | None]] = [
            (job_id, task, status, result, error, None)]
        while stack:
            pid, ptask, pstatus, presult, perror, reason = stack.pop()
            edges = conn.execute(
                "SELECT rowid, child, position FROM memqueue_links WHERE queue=? AND parent=? AND done=0", (ns, pid)
            ).fetchall()
            if not edges:
                continue
            succeeded = pstatus == "succeeded"
            for rowid, child, position in edges:
                conn.execute("UPDATE memqueue_links SET done=1, result=? WHERE rowid=?",
                             (presult if succeeded and position >= 0 else None, rowid))
                row = conn.execute(
                    "SELECT task, status, args, options FROM memqueue_jobs WHERE queue=? AND id=?", (ns, child)
                ).fetchone()
                if row is None or row[1] != "deferred":
                    continue  # cancelled already (by a user, or by another parent's failure)
                ctask, _cstatus, args, options = row
                if succeeded:
                    (left,) = conn.execute(
                        "UPDATE memqueue_waits SET remaining=remaining-1 WHERE queue=? AND child=? RETURNING remaining",
                        (ns, child),
                    ).fetchone()
                    if left > 0:
                        continue
                    self._release_child_in(conn, child, args, options)
                else:
                    why = reason or (dependency_cancelled(pid, ptask) if pstatus == "cancelled"
                                     else dependency_failed(pid, ptask, perror))  # failed, aborted
                    conn.execute(
                        "UPDATE memqueue_jobs SET status='cancelled', finished_at=?, error=? WHERE queue=? AND id=?",
                        (now, why, ns, child),
                    )
                    stack.append((child, ctask, "cancelled", None, why, why))
                conn.execute("DELETE FROM memqueue_waits WHERE queue=? AND child=?", (ns, child))
                touched.append(child)
        return touched

    def _release_child_in(self, conn: sqlite3.Connection, child: str, args: str, options: str | None) -> None:
        """Queue the deferred ``child`` whose last parent just succeeded, with what its
        ``bind`` says first: the chain's link's result (the link at position 0, whichever
        parent came last), or the chord's results in member order (links at 0 and up)."""
        ns = self.namespace
        bind = json.loads(options).get("bind") if options else None
        if bind in ("first", "list"):
            results = conn.execute(
                "SELECT result FROM memqueue_links WHERE queue=? AND child=? AND position>=0 ORDER BY position",
                (ns, child),
            ).fetchall()
            values = ["null" if r is None else r for (r,) in results]
            bound = (values[0] if values else "null") if bind == "first" else "[" + ",".join(values) + "]"
            args = released_args(args, bound)
        conn.execute(
            "UPDATE memqueue_jobs SET status='queued', args=?, seq=(SELECT max(seq) + 1 FROM memqueue_jobs)"
            " WHERE queue=? AND id=?",
            (args, ns, child),
        )
        conn.execute("UPDATE memqueue_links SET result=NULL WHERE queue=? AND child=?", (ns, child))
        conn.execute(  # the links of parents already forgotten served their last purpose
            "DELETE FROM memqueue_links WHERE queue=? AND child=? AND NOT EXISTS"
            " (SELECT 1 FROM memqueue_jobs j WHERE j.id=memqueue_links.parent)", (ns, child))

    def _dependents(self, job_id: str) -> list[str]:
        rows = self._read("SELECT child FROM memqueue_links WHERE queue=? AND parent=? ORDER BY rowid",
                          (self.namespace, job_id))
        return [child for (child,) in rows]

    def _dependents_many(self, job_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for start in range(0, len(job_ids), 500):  # SQLite's limit on bound parameters is 999 (older builds)
            chunk = job_ids[start:start + 500]
            rows = self._read(
                f"SELECT parent, child FROM memqueue_links WHERE queue=? AND parent IN ({', '.join('?' * len(chunk))})"
                " ORDER BY rowid",
                (self.namespace, *chunk),
            )
            for parent, child in rows:
                out.setdefault(parent, []).append(child)
        return out

    def _group_members(self, group_id: str) -> list[Record]:
        rows = self._read(
            f"SELECT {', '.join('j.' + c.strip() for c in _COLUMNS.split(','))} FROM memqueue_groups g"
            " JOIN memqueue_jobs j ON j.queue=g.queue AND j.id=g.job_id WHERE g.queue=? AND g.grp=? ORDER BY g.idx",
            (self.namespace, group_id),
        )
        return [record(row) for row in rows]

