"""Take-over: the running jobs of dead owners go back to work.

Every consumer of a shared store checks the owners of running records when it
starts and every :data:`~flask_memqueue.storage.durable.RECOVER_INTERVAL` s.
What happens to a dead owner's job is decided by :meth:`Job.interrupt
<flask_memqueue.job.Job.interrupt>` (the attempt counted when it was claimed;
the task's retry policy decides), unless an abort was asked of that run
while it ran (the request names that run, so once the job is queued again
no later read would ever see it): such a job ends ``aborted``, with who
asked, never run again. Each write is conditional on the record
still being the dead owner's, so two reclaimers never both take a job, and a
reclaimer that dies mid-way holds no lock.
"""

from __future__ import annotations

import time

from .primitives import Primitives
from .records import Codec, Record


def take_over_dead_owners(store: Primitives, codec: Codec) -> int:
    """Take over the running jobs of dead owners; returns how many."""
    owners: set[str] = store._guard("reading", store._running_owners)
    dead = [o for o in owners if o and o != store.owner and not store._owner_alive(o)]
    n = 0
    now = time.time()
    for owner in dead:
        records: list[Record] = store._guard("reading", store._running_of, owner)
        asked: dict[str, str] = store._guard("reading abort requests", store._abort_requests,
                                             [r.id for r in records]) if records else {}
        for record in records:
            job = codec.detached(record)
            reason = asked.get(record.id)
            if reason is not None:  # asked to stop while its process died: it stops here
                job.mark_aborted(now, reason)
            else:
                job.interrupt(now, task_known=not job.task.missing)
            new = codec.record_of(job)  # no longer running: no owner
            if store._guard("taking over the jobs of a dead process", store._take_over_one, record.id, owner, new):
                n += 1
    return n


__all__ = ["take_over_dead_owners"]
