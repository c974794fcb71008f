"""Workflows on Redis: dependents released in the script that records their parent's outcome.

A mixin of :class:`~flask_memqueue.storage.redis.store.RedisStorage` (kept
apart so that the store's class stays small, tests/test_sizes.py). The layout
is in ``lua/prelude.lua``: per parent a list of its links (``P:dn:<id>``), per
deferred child a counter of parents still to succeed (a field of ``P:wt``)
and a hash of the links used so far with the results they carry
(``P:lr:<child>``), per group a sorted set of member ids (``P:g:<group>``).
A completion touches its own links and its children's counters only: a chord
of 100,000 members is 100,000 small hash fields, each written once, never one
record that every member rewrites.

The release (``release`` in the prelude) runs inside every script that
records a final outcome (``save``, ``claim``'s settle, ``transition`` to
cancelled, ``take_over``) and inside ``workflow`` for a parent that had
finished already: Redis runs a script whole or not at all, so a crash leaves
a dependent waiting on a parent that will still run or be taken over, or
released; a used link is marked in the same call, so never twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...exceptions import DependencyError, QueueFull
from ..records import Record
from .records import body_of

if TYPE_CHECKING:
    from .client import Client


class RedisWorkflows:
    """``_insert_workflow``, ``_dependents`` and ``_group_members`` (the capability ``workflows``) for Redis."""

    client: Client
    prefix: str
    maxsize: int

    if TYPE_CHECKING:  # what the store provides
        def _run(self, name: str, args: list[Any], doing: str, *, repeat: bool = True) -> Any: ...

        def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]: ...

    def _insert_workflow(self, records: list[Record], links: list[tuple[str, str, int]],
                         groups: list[tuple[str, int, str]], now: float) -> list[str]:
        args: list[Any] = [self.maxsize, len(records)]
        for r in records:
            args += (r.id, r.status, "" if r.eta is None else repr(r.eta), r.queue, r.priority, body_of(r),
                     r.options or "")
        args.append(len(links))
        for parent, child, position in links:
            args += (parent, child, position)
        args.append(len(groups))
        for group, index, job_id in groups:
            args += (group, index, job_id)
        # Repeated after a lost reply, as a plain enqueue: the script marks the workflow added
        # (``P:wf:<first job id>``), so a second run of the same call only answers.
        reply = self._run("workflow", args, f"enqueueing a workflow of {len(records)} job(s)")
        kind = reply[0]
        if kind == "full":
            raise QueueFull(
                f"the workflow's {len(records)} jobs do not fit: the queue holds {reply[1]} of at most"
                f" {self.maxsize} waiting jobs (MEMQUEUE_MAXSIZE); none of them was queued"
            )
        if kind == "missing":
            raise DependencyError(
                f"depends_on: this app's queue holds no job {reply[1]!r}: it never existed here, it belongs"
                " to another app, or it finished long enough ago to be forgotten (MEMQUEUE_RESULT_TTL,"
                " MEMQUEUE_MAX_FINISHED); nothing was queued"
            )
        return [str(jid) for jid in reply[1:]]

    def _dependents(self, job_id: str) -> list[str]:
        edges = self.client.command("reading", "LRANGE", f"{self.prefix}:dn:{job_id}", 0, -1)
        return [str(edge).partition(" ")[2] for edge in edges]

    def _dependents_many(self, job_ids: list[str]) -> dict[str, list[str]]:
        # One round trip for the page: the LRANGEs pipelined (a listing of 500 jobs asked 500 times).
        replies = self.client.commands("reading", [("LRANGE", f"{self.prefix}:dn:{jid}", 0, -1) for jid in job_ids])
        return {jid: [str(edge).partition(" ")[2] for edge in edges]
                for jid, edges in zip(job_ids, replies, strict=True) if edges}

    def _group_members(self, group_id: str) -> list[Record]:
        ids = self.client.command("reading", "ZRANGE", f"{self.prefix}:g:{group_id}", 0, -1)
        return self._load_many([str(i) for i in ids], False)
