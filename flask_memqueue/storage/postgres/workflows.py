"""The workflow primitives on PostgreSQL: a workflow queued in one transaction, and the reads.

The release of dependents is not here: it is the trigger of ``workflow_sql.py``,
which runs inside every statement that records a workflow job's outcome. What is
here is :meth:`Workflows.insert` (``_insert_workflow``): in one transaction, under
the namespace's advisory lock of batches when ``MEMQUEUE_MAXSIZE`` bounds the
queue, it marks the parents already stored (row locks in id order, so two
workflows naming the same parents never deadlock), inserts the jobs, counters,
links and group rows, and applies the outcome of a parent that finished already
by calling ``memqueue_release`` itself.
"""

from __future__ import annotations

from ...exceptions import DependencyError, QueueFull
from ..records import Record
from .connection import Connections
from .records import from_row, insert_row
from .schema import ident
from .statements import COLUMNS, INSERT_COLUMNS

#: Rows per INSERT (each a statement of unnest() arrays).
CHUNK = 2000
_FINAL = ("succeeded", "failed", "cancelled", "aborted")


class Workflows:
    """One store's workflow statements (its schema and namespace)."""

    def __init__(self, connections: Connections, *, schema: str, namespace: str, channel: str, digest: str,
                 maxsize: int) -> None:
        self._connections = connections
        self._ns = namespace
        self._channel = channel
        self._digest = digest
        self._maxsize = maxsize
        s = ident(schema)
        self._release = f"SELECT {s}.memqueue_release(%s, %s, %s)"
        self._count = (f"SELECT count(*) FROM {s}.memqueue_jobs WHERE ns = %s"
                       " AND status IN ('queued', 'scheduled', 'deferred')")
        self._mark = (f"UPDATE {s}.memqueue_jobs j SET workflow = true FROM (SELECT id FROM {s}.memqueue_jobs"
                      " WHERE ns = %s AND id = ANY(%s) ORDER BY id FOR UPDATE) p WHERE j.id = p.id"
                      " RETURNING j.id, j.status, j.finished_at")
        self._insert = (
            f"WITH ins AS (INSERT INTO {s}.memqueue_jobs ({INSERT_COLUMNS}, workflow) SELECT %s, *, true FROM"
            " unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[],"
            " %s::text[], %s::int2[], %s::text[], %s::float8[], %s::text[]) RETURNING lane)"
            " SELECT count(pg_notify(%s, 'q:' || l)) FROM (SELECT DISTINCT lane AS l FROM ins) d"
        )
        self._waits = (f"INSERT INTO {s}.memqueue_waits (ns, child, remaining, digest)"
                       " SELECT %s, c, n, %s FROM unnest(%s::text[], %s::int4[]) AS w(c, n)")
        self._links = (f"INSERT INTO {s}.memqueue_links (ns, parent, child, position)"
                       " SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::int4[])")
        self._groups = (f"INSERT INTO {s}.memqueue_groups (ns, grp, idx, job_id)"
                        " SELECT %s, * FROM unnest(%s::text[], %s::int4[], %s::text[])")
        self._dependents = f"SELECT child FROM {s}.memqueue_links WHERE ns = %s AND parent = %s ORDER BY seq"
        self._dependents_many = (f"SELECT parent, child FROM {s}.memqueue_links WHERE ns = %s AND parent = ANY(%s)"
                                 " ORDER BY seq")
        columns = ", ".join("j." + c.strip() for c in COLUMNS.split(","))
        self._members = (f"SELECT {columns} FROM {s}.memqueue_groups g JOIN {s}.memqueue_jobs j"
                         " ON j.id = g.job_id AND j.ns = g.ns WHERE g.ns = %s AND g.grp = %s ORDER BY g.idx")

    def insert(self, records: list[Record], links: list[tuple[str, str, int]],
               groups: list[tuple[str, int, str]], now: float) -> list[str]:
        """The ``_insert_workflow`` primitive (see ``Primitives._insert_workflow``)."""
        ns = self._ns
        mine = {r.id for r in records}
        outside = sorted({parent for parent, _child, _pos in links} - mine)
        with self._connections.conn(f"enqueueing a workflow of {len(records)} job(s)") as conn, conn.transaction():
            if self._maxsize:
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"memqueue-batch:{ns}",))
                (waiting,) = conn.execute(self._count, (ns,)).fetchone()
                if int(waiting) + len(records) > self._maxsize:
                    raise QueueFull(
                        f"the workflow's {len(records)} jobs do not fit: the queue holds {waiting} of at most"
                        f" {self._maxsize} waiting jobs (MEMQUEUE_MAXSIZE); none of them was queued"
                    )
            stored = {row[0]: row for row in conn.execute(self._mark, (ns, outside)).fetchall()} if outside else {}
            for parent in outside:
                if parent not in stored:
                    raise DependencyError(
                        f"depends_on: this app's queue holds no job {parent!r}: it never existed here, it belongs"
                        " to another app, or it finished long enough ago to be forgotten (MEMQUEUE_RESULT_TTL,"
                        " MEMQUEUE_MAX_FINISHED); nothing was queued"
                    )
            for start in range(0, len(records), CHUNK):
                rows = [insert_row(ns, r)[1:] for r in records[start:start + CHUNK]]
                conn.execute(self._insert, (ns, *[list(c) for c in zip(*rows, strict=True)], self._channel))
            counts: dict[str, int] = {}
            for _parent, child, _pos in links:
                counts[child] = counts.get(child, 0) + 1
            if counts:
                conn.execute(self._waits, (ns, self._digest, list(counts), list(counts.values())))
            for start in range(0, len(links), CHUNK):
                part = links[start:start + CHUNK]
                conn.execute(self._links, (ns, *[list(c) for c in zip(*part, strict=True)]))
            for start in range(0, len(groups), CHUNK):
                some = groups[start:start + CHUNK]
                conn.execute(self._groups, (ns, *[list(c) for c in zip(*some, strict=True)]))
            changed: list[str] = []
            for parent in outside:
                _id, status, finished_at = stored[parent]
                if status in _FINAL:
                    (touched,) = conn.execute(self._release, (ns, parent, finished_at or now)).fetchone()
                    changed += touched or []
        return [jid for jid in changed if jid in mine]

    def dependents(self, job_id: str) -> list[str]:
        return [child for (child,) in self._connections.all(self._dependents, (self._ns, job_id))]

    def dependents_many(self, job_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for parent, child in self._connections.all(self._dependents_many, (self._ns, job_ids)):
            out.setdefault(parent, []).append(child)
        return out

    def members(self, group_id: str) -> list[Record]:
        return [from_row(row) for row in self._connections.all(self._members, (self._ns, group_id))]


__all__ = ["Workflows"]
