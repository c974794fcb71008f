"""The record primitives: what a backend of :class:`~flask_memqueue.storage.durable.DurableStorage` implements.

Each primitive is one atomic step of the backend (a transaction, a script),
scoped to the store's namespace (the app's name), so two apps sharing a file
or a server never see each other's jobs. :class:`DurableStorage
<flask_memqueue.storage.durable.DurableStorage>` builds the whole storage
contract on them; a backend (``storage/sqlite/``, ``storage/redis/``, a
third party's) is these methods over its own commands. Their names and
signatures are the backend contract: they stay stable.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any

from ..exceptions import MemQueueError, StorageError
from ..job import Job
from ..jobfilter import JobFilter
from .limits import LimitUse
from .owners import owner_alive_here
from .records import Record

#: Seconds an idle consumer waits between two looks at the store for jobs
#: that other processes enqueued (its own process wakes it at once).
POLL_INTERVAL = 0.2


class Primitives(abc.ABC):
    """The primitives a durable backend implements (the ``_`` abstract methods), and the
    hooks it may override (the defaults suit a store on one host)."""

    #: The store's URL as people see it (password redacted), for error messages.
    url: str
    #: This process as the owner of the records it claims (``"<pid>:<start time>:<token>"``).
    owner: str

    @abc.abstractmethod
    def _insert(self, records: list[Record]) -> int:
        """Add ``records`` (status queued or scheduled) in one write, in order, as many
        as ``maxsize`` allows; return how many were added (a prefix of the list)."""

    @abc.abstractmethod
    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        """In one write: save ``settle`` (as :meth:`_save`), then, unless ``stop()``,
        make the next due record of ``queue`` running (owner ``owner``, attempts + 1,
        started ``now``) and return it as it was before: the highest priority
        first; within a priority, the earliest due time (a scheduled record's
        eta; a queued record's enqueue time, or its eta once requeued), a queued
        record winning a tie; queued records in insertion order (a requeue
        inserts it again), scheduled ones by eta, then insertion."""

    @abc.abstractmethod
    def _save(self, record: Record) -> None:
        """Overwrite the state of ``record`` (matched by id); insert it if missing."""

    @abc.abstractmethod
    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        """Overwrite the state of ``job_id`` with ``record``'s if its status is one of
        ``from_status`` (cancel, requeue); False if it is not (or it is gone). A
        record queued again (a requeue) goes to the end of its line: it is due now."""

    def _transition_many(self, changes: list[tuple[str, tuple[str, ...], Record]]) -> list[bool]:
        """:meth:`_transition` for each ``(job_id, from_status, record)`` of a bulk action's
        batch; whether each changed. A backend overrides it with one transaction or script
        per batch; this default makes one :meth:`_transition` per job."""
        return [self._transition(job_id, statuses, record) for job_id, statuses, record in changes]

    @abc.abstractmethod
    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        """Overwrite ``job_id`` with ``record`` if it is still running for ``owner``."""

    @abc.abstractmethod
    def _load(self, job_id: str, visible_after: float | None) -> Record | None:
        """The record of ``job_id``, unless it finished at or before ``visible_after``."""

    @abc.abstractmethod
    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        """The records among ``job_ids`` that exist (and are finished, if asked)."""

    @abc.abstractmethod
    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        """Records (of ``queue`` if given) newest enqueued first (ties: newest inserted first)."""

    @abc.abstractmethod
    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        """How many records (of ``queue`` if given) by status (finished ones only
        if finished after ``visible_after``)."""

    @abc.abstractmethod
    def _queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue with live records: how many are queued, scheduled and running."""

    @abc.abstractmethod
    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        """How many records (of ``queue`` if given) have one of ``statuses``
        (scheduled ones only if due before ``due_before`` when it is given)."""

    @abc.abstractmethod
    def _running_owners(self) -> set[str]:
        """The owners of running records."""

    @abc.abstractmethod
    def _running_of(self, owner: str) -> list[Record]:
        """The running records of ``owner``."""

    @abc.abstractmethod
    def _prune(self, finished_before: float, keep: int) -> None:
        """Delete finished records that finished at or before ``finished_before``,
        and all but the newest ``keep`` finished ones."""

    @abc.abstractmethod
    def _purge(self) -> int:
        """Delete every finished record; return how many."""

    @abc.abstractmethod
    def _remove_waiting(self) -> list[Record]:
        """Delete every waiting record and return them, oldest first."""

    @abc.abstractmethod
    def _next_eta(self, queue: str | None = None) -> float | None:
        """The earliest eta of a scheduled record (of ``queue`` if given)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release connections."""

    # Unique keys and periodic ticks: three small primitives. The caller checks
    # MEMQUEUE_MAXSIZE before (by a count, as precise as a group write's).
    @abc.abstractmethod
    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        """In one write: the live record (queued, scheduled or running) whose
        ``unique_key`` is ``record.unique_key``, if there is one (the oldest, if a
        requeue made two); else, unless ``full`` (the store holds MEMQUEUE_MAXSIZE
        waiting jobs), insert ``record`` (as :meth:`_insert` would) and return it;
        else None. The caller compares the returned id with ``record.id``."""

    @abc.abstractmethod
    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        """In one write: if the last claimed tick of ``task`` is before ``tick`` (or
        there is none), make ``tick`` its last claimed tick (with ``record``'s id, or
        None, claimed at ``now``), insert ``record`` if given, and return True;
        otherwise write nothing and return False. One row per task and namespace,
        kept after its job finished: it is what makes a tick run once."""

    @abc.abstractmethod
    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        """Each task's last claimed tick in this namespace: ``(tick, job id or None, claimed at)``."""

    # Workflows (capabilities.workflows): three primitives, and the release of dependents
    # folded into every write that records a final outcome (_save, _claim's settle,
    # _transition to cancelled, _take_over_one), in that same write.
    def _insert_workflow(self, records: list[Record], links: list[tuple[str, str, int]],
                         groups: list[tuple[str, int, str]], now: float) -> list[str]:
        """In one write: unless the waiting records and ``records`` together exceed
        MEMQUEUE_MAXSIZE (then raise QueueFull) or a link's parent is neither in
        ``records`` nor stored (then raise DependencyError), insert ``records`` (status
        queued, scheduled or deferred), the ``links`` ``(parent, child, position)``,
        each deferred child's counter (its number of links), and ``groups``
        ``(group id, index, job id)``; then apply the outcome of every stored parent
        that finished already (as a write of its outcome would). Returns the ids of
        ``records`` whose state that changed."""
        raise NotImplementedError(f"{type(self).__name__} does not implement workflows")

    def _dependents(self, job_id: str) -> list[str]:
        """The children linked to ``job_id``, in the order they were linked."""
        return []

    def _dependents_many(self, job_ids: list[str]) -> dict[str, list[str]]:
        """:meth:`_dependents` of each id (ids with none may be left out). This default asks
        per id; a backend overrides it with one read (a listing of jobs asks for a page)."""
        out: dict[str, list[str]] = {}
        for job_id in job_ids:
            found = self._dependents(job_id)
            if found:
                out[job_id] = found
        return out

    def _group_members(self, group_id: str) -> list[Record]:
        """The records of group ``group_id``'s members that exist, in member order."""
        return []

    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:  # noqa: B027 - optional
        """Record that ``owner`` consumes ``queues`` (seen at ``now``); with no queues,
        forget ``owner``'s. A backend without it: enqueues check this process's queues only."""

    def _declared(self, seen_after: float) -> set[str]:
        """Queues some owner declared after ``seen_after``."""
        return set()

    def _request_abort(self, job_id: str, reason: str) -> bool:
        """If ``job_id`` runs: record an abort request with ``reason`` and return True
        (a backend that declares ``abort_flags`` implements it). Else False."""
        return False

    def _abort_requests(self, job_ids: list[str]) -> dict[str, str]:
        """The recorded abort requests of these jobs, by id (and forget those of jobs no longer running)."""
        return {}

    def _owner_alive(self, owner: str) -> bool:
        """Whether the process ``owner`` names still runs. Host-local by default
        (pid and start time); a store spanning hosts overrides it (leases)."""
        return owner_alive_here(owner)

    # -- many jobs, pause, find and delete (issue 24): defaults that work on the primitives
    # above; the built-in backends override them with one statement or script each.
    def _insert_all(self, records: list[Record]) -> bool:
        """In one write: insert every record of ``records`` (as :meth:`_insert`), or none if
        the waiting records and these would be more than ``maxsize``; True if inserted.

        This default counts, then inserts: two steps, so two processes racing near the
        limit may pass it together. A backend overrides it with one atomic step."""
        maxsize: int = getattr(self, "maxsize", 0)
        if maxsize and self._busy(("queued", "scheduled"), None) + len(records) > maxsize:
            return False
        return self._insert(records) == len(records)

    def _set_paused(self, queue: str, paused: bool, now: float) -> bool:
        """Mark ``queue`` paused (or not) for every process of this namespace; True if that
        changed it. A backend that keeps no such state cannot pause (it declares no ``pausable``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot pause a queue")

    def _paused(self) -> set[str]:
        """The paused queues of this namespace."""
        return set()

    def _limit_uses(self, now: float) -> list[LimitUse]:
        """Every rate and concurrency limit in use (see :meth:`Storage.limit_uses
        <flask_memqueue.storage.base.Storage.limit_uses>`): a backend that declares
        ``capabilities.limits`` checks them in :meth:`_claim` and reads them here."""
        return []

    def _select(self, flt: JobFilter, limit: int, offset: int, visible_after: float) -> list[Record]:
        """The records ``flt`` matches, newest enqueued first (as :meth:`_list`), finished
        ones only if finished after ``visible_after``. This default pages through
        :meth:`_list` and tests each record; a SQL backend selects with a ``WHERE``."""
        status = flt.statuses[0] if flt.statuses is not None and len(flt.statuses) == 1 else None
        out: list[Record] = []
        skipped, page, start = 0, 1000, 0
        while len(out) < limit:
            rows = self._list(status, page, start, visible_after, flt.queue)
            for r in rows:
                if record_matches(flt, r):
                    if skipped < offset:
                        skipped += 1
                    else:
                        out.append(r)
                        if len(out) >= limit:
                            break
            if len(rows) < page:
                break
            start += page
        return out

    def _count_matching(self, flt: JobFilter, visible_after: float) -> int:
        """How many records ``flt`` matches (see :meth:`_select`)."""
        return len(self._select(flt, 2**31, 0, visible_after))

    def _delete_finished(self, job_ids: list[str]) -> int:
        """Delete the records among ``job_ids`` that are finished; return how many."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete one job")

    # -- hooks a backend may override ------------------------------------------------------
    #: Seconds an idle consumer sleeps at most before it looks at the store again. Polling
    #: stores keep it short; a store that blocks in its server until a job arrives
    #: (:meth:`_sleep`) makes it longer: then it only bounds how soon a stop request made
    #: from a signal handler (which may not call the server) is seen.
    idle_wait: float = POLL_INTERVAL
    #: Seconds between two reads of a job's record by ``Job.wait()`` on a job another
    #: process may run. A store that tells waiters when a job finishes (pub/sub) makes
    #: it long: the poll is then only a safety net for a lost notification.
    waiter_poll_interval: float = POLL_INTERVAL

    def _discarded_outcome(self, job: Job) -> Record | None:
        """The stored record of ``job`` if the last write of its outcome by this process
        was discarded, else None. A store with leases discards the late outcome of a job
        whose lease lapsed and that another process took over (the first outcome
        recorded stands); the object then takes the stored record. A store that takes
        over only the jobs of dead processes never discards one: the default."""
        return None

    def _error(self, exc: BaseException, doing: str) -> MemQueueError:
        """The error raised when a primitive fails: a :class:`StorageError` (a backend
        may return its own subclass) naming the store, its password redacted."""
        return StorageError(f"storage {self.url}: {doing} failed: {exc}")

    # -- calling them -------------------------------------------------------------------------
    def _guard(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a primitive, ``fn(*args)``; its failure becomes this store's error, naming the store."""
        try:
            return fn(*args)
        except MemQueueError:
            raise
        except Exception as exc:
            raise self._wrap(exc, doing) from exc

    def _wrap(self, exc: Exception, doing: str) -> MemQueueError:
        return exc if isinstance(exc, MemQueueError) else self._error(exc, doing)


def record_matches(flt: JobFilter, r: Record) -> bool:
    """True if ``flt`` matches the record ``r``."""
    return flt.matches_values(r.task, r.status, r.queue, r.enqueued_at, r.args, r.kwargs, r.error)


__all__ = ["POLL_INTERVAL", "Primitives", "record_matches"]
