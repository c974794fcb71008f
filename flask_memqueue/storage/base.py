"""The storage contract: what the queue, the consumer and the routes may ask of a store.

A store holds jobs in four places (waiting now, scheduled for later, running,
finished) and moves them between those places under its own lock. It never
calls a task and never decides what happens to a job: the lifecycle (start,
succeed, fail or retry, cancel, requeue, take-over) is decided by the methods
of :class:`~flask_memqueue.job.Job`, and a store persists what they decided.
So a durable store (the SQLite journal), a remote one or a third party's can
replace the memory store without the consumer or the HTTP routes knowing.

What the rest of the code needs to know about a store it asks of
:attr:`Storage.capabilities`, never of the store's class: nothing above
``storage/`` imports a concrete store (a test checks the import graph).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ..job import Job, JobHost, JobStatus, TaskLike
    from ..jobfilter import JobFilter
    from .limits import LimitUse

#: Jobs a bulk action (:meth:`Storage.act_on`) reads and changes per step: a big table is
#: worked through in steps of this many, none holding a lock for long.
BULK_BATCH = 500


@dataclass(frozen=True)
class Capabilities:
    """What a store can do, declared by the store (never inferred from its type).

    The queue and the CLI branch on these, so a third-party backend that
    declares them truthfully behaves like the built-in ones.
    """

    #: Other processes (and hosts) see this store's jobs and may run them: a
    #: process that only enqueues (``MEMQUEUE_CONSUMER = False``) makes sense,
    #: and ``flask memqueue jobs|retry|purge|worker`` can work on it.
    shared: bool = False
    #: Waiting jobs outlive the process: shutdown leaves them in the store for
    #: the next start instead of cancelling them.
    persistent: bool = False
    #: Arguments and results must be JSON values, and the enqueuing process
    #: sees them as a JSON round trip gives them (as any other process would).
    json_only: bool = False
    #: :meth:`Storage.wake_from_signal_handler` may be called from a signal
    #: handler (it takes no lock). Without it a worker's stop request is seen
    #: within the store's poll interval only.
    signal_safe_wake: bool = False
    #: A forked child must never use the inherited store (a connection or
    #: socket shared with the parent): the queue opens a new one in the child.
    reopen_after_fork: bool = False
    #: The store is a server reached over a network: a failure is an outage that
    #: ends by itself (a restart, a cut link), so ``flask memqueue worker`` keeps
    #: backing off and trying for as long as it lasts instead of exiting after a
    #: number of consecutive failures (which suits a damaged or read-only file).
    outages_end: bool = False
    #: :meth:`Storage.put_in_transaction` works: a job can be inserted through the
    #: caller's own database connection, in its open transaction
    #: (``mq.options(session=db.session)``), and commits or rolls back with it.
    transactional: bool = False
    #: :meth:`Storage.put_workflow`, :meth:`Storage.dependents` and :meth:`Storage.group_jobs`
    #: work: jobs may wait on others (chains, groups, chords, ``depends_on=``), and the
    #: store releases (or cancels) a waiting job in the same atomic step that records
    #: the outcome of the last job it waits on.
    workflows: bool = False
    #: :meth:`Storage.request_abort` records an abort for the process that runs the
    #: job, which learns of it through :meth:`Storage.abort_requests` (polled while
    #: jobs run): ``job.abort()`` reaches a job that another process runs. Without
    #: it, only a job running in the asking process can be asked to stop.
    abort_flags: bool = False
    #: :meth:`Storage.pause` and :meth:`Storage.resume` work: a paused queue keeps
    #: taking jobs and starts none, in every process that shares the store.
    pausable: bool = False
    #: :meth:`Storage.act_on_batch` changes a batch of the jobs a bulk action matched in
    #: one step of the store (one lock hold, one transaction, one script), instead of one
    #: step per job: ``POST /jobs/retry|cancel|delete`` on 10,000 jobs costs 20 steps.
    bulk_actions: bool = False
    #: The store checks a job's rate and concurrency limits (its options' ``concurrency``,
    #: ``rate_limit`` and their keys; :mod:`flask_memqueue.joblimits`) when it claims:
    #: a job over a limit stays queued, no consumer holds it, and the claim takes the
    #: next job. A shared store holds the limits across every process that shares it,
    #: and :meth:`Storage.limit_uses` shows them.
    limits: bool = False


class Link(NamedTuple):
    """One edge of a workflow: ``child`` (a deferred job) waits on ``parent``.

    ``position`` is where ``parent``'s result goes among what ``child`` is given
    (see :attr:`JobOptions.bind <flask_memqueue.options.JobOptions.bind>`): 0 for a
    chain's link, the member's index for a chord's callback, -1 for nothing
    (``depends_on=``).
    """

    parent: str
    child: str
    position: int


#: The error of a job cancelled because a job it waits on failed for good.
def dependency_failed(job_id: str, task: str, error: str | None) -> str:
    """``dependency <id> (<task>) failed: <error>``: why a dependent was cancelled."""
    return f"dependency {job_id} ({task}) failed: {error}"


def dependency_cancelled(job_id: str, task: str) -> str:
    """Why a dependent was cancelled when a job it waits on was cancelled."""
    return f"dependency {job_id} ({task}) was cancelled"


def released_args(args_json: str, bound_json: str) -> str:
    """A released job's JSON arguments: ``bound_json`` (a result, or the JSON list of
    a chord's results) first, then its own. Worked on the text (no decode): the same in
    Python, SQL transactions and Lua."""
    inner = args_json.strip()[1:-1].strip()
    return f"[{bound_json}]" if not inner else f"[{bound_json},{inner}]"


class TickInfo(NamedTuple):
    """The last tick of a periodic task that some process claimed (:meth:`Storage.claim_tick`).

    A named tuple, not a dataclass: it is made per read, and costs nothing at import.
    """

    #: The tick's Unix time (when it was due).
    tick: float
    #: The id of the job queued for it; None when the tick was claimed without a
    #: job (a schedule's first start, which missed nothing).
    job_id: str | None
    #: When it was claimed (Unix time).
    claimed_at: float


@dataclass(frozen=True)
class StoreContext:
    """What the queue tells a store when it opens it: nothing Flask-specific.

    :param namespace: the app's name; stores keep apps of different names apart.
    :param token: this process's random id prefix (new after every fork).
    :param host: what a :class:`~flask_memqueue.job.Job` made by the store is bound to.
    :param task: finds a task by its registered name (a stand-in that fails
        the job for a name this process does not know).
    :param base_dir: where relative paths in a URL are resolved (the app's
        instance folder); a store that needs it creates it.
    :param maxsize: waiting jobs at most (0: no limit).
    :param max_finished: finished jobs kept at most.
    :param result_ttl: seconds a finished job stays readable.
    :param local_jobs: keep this process's enqueued Job objects so its own
        consumer runs the very object ``enqueue`` returned (a durable store's
        enqueue-only process that no local consumer drains turns it off).
    """

    namespace: str
    token: str
    host: JobHost
    task: Callable[[str], TaskLike]
    base_dir: str
    maxsize: int = 10_000
    max_finished: int = 1000
    result_ttl: float = 3600.0
    local_jobs: bool = True
    #: The config key the URL came from, for error messages
    #: (``MEMQUEUE_STORAGE``, or ``MEMQUEUE_JOURNAL`` for the alias).
    config_key: str = "MEMQUEUE_STORAGE"
    #: ``app.debug`` or ``app.testing``: a store may create what it needs (tables) on
    #: first use; a production app's store asks for an explicit migration instead.
    development: bool = False


class Storage(abc.ABC):
    """Abstract base of every store. All methods are thread-safe.

    A backend is one module with a subclass of this (or of
    :class:`~flask_memqueue.storage.durable.DurableStorage` for a store that
    several processes share) and a factory registered for its URL scheme
    (see :func:`flask_memqueue.storage.open_storage`).
    """

    #: Declared by each backend; see :class:`Capabilities`.
    capabilities: Capabilities = Capabilities()

    #: The store's URL as shown to people (``/stats``, the CLI), password redacted.
    url: str = "memory://"

    @abc.abstractmethod
    def put(self, job: Job) -> None:
        """Queue ``job`` (status QUEUED) behind every waiting job.

        :raises QueueFull: the store holds its maximum of waiting jobs.
        """

    @abc.abstractmethod
    def schedule(self, job: Job, *, retry: bool = False) -> None:
        """Hold ``job`` (status SCHEDULED, ``job.eta`` set) until it is due.

        A ``retry`` comes back from the running place and is never refused,
        so a failing job is not lost to a full queue.

        :raises QueueFull: not a retry, and the store is full.
        """

    @abc.abstractmethod
    def put_unique(self, job: Job) -> Job:
        """Queue ``job`` (QUEUED, or SCHEDULED with its eta) unless a live job holds
        its key, ``job.unique_key``: then queue nothing and return that job.

        Live means queued, scheduled (a retry included) or running; a job that
        succeeded, failed for good or was cancelled holds no key. Returns
        ``job`` itself when it was queued. Looking for a holder and queueing
        are one atomic step of the store (its lock, a transaction, a script),
        so any number of threads and processes racing with one key make one
        job. A key is one identity across the namespace's tasks.

        :raises QueueFull: no holder, and the store is full.
        """

    @abc.abstractmethod
    def claim_tick(self, task: str, tick: float, job: Job | None) -> bool:
        """Claim tick ``tick`` (a Unix time) of the periodic task named ``task`` and
        queue ``job`` for it, in one atomic step; or do nothing and return False
        if a tick at or after ``tick`` was claimed already, by any process.

        The store keeps each task's last claimed tick after its job finished
        (:meth:`last_ticks`), so a tick is claimed once, and a process that
        comes late (a slow clock, a restart) can never claim it again, nor an
        older one. ``job=None`` claims a tick with no job (a schedule's first
        start: nothing was missed, nothing runs).

        :raises QueueFull: ``job`` given, and the store is full (nothing is claimed).
        """

    @abc.abstractmethod
    def last_ticks(self) -> dict[str, TickInfo]:
        """Every periodic task's last claimed tick, by task name."""

    @abc.abstractmethod
    def take(
        self,
        timeout: float | None,
        done: Job | None = None,
        *,
        queue: str = "default",
        stop: Callable[[], bool] | None = None,
    ) -> Job | None:
        """Move the next due job of ``queue`` to RUNNING and return it.

        Within a queue the highest priority goes first; within a priority, the
        earliest due time: a queued job's is its enqueue time, a scheduled or
        retried job's its eta, a requeued job's the time of the requeue (its
        eta then); a queued job wins a tie, and queued jobs keep their enqueue
        order (FIFO). Several
        threads may take from one queue at once: each job goes to one of them.
        Blocks up to ``timeout`` seconds (None: until woken) when nothing is
        due, and returns None then, or when :meth:`wake` is called: with
        ``stop``, a woken taker returns None only if ``stop()`` is true (every
        thread of a pool sees its own stop request); without it, the first
        taker woken returns None.

        ``done`` is the job this consumer ran last: it is recorded first, as
        :meth:`finish` would (or as a retry, if its status is SCHEDULED), in
        the same critical section, so the consumer takes one lock per job.

        If it raises, ``done`` is still the store's to record: it must do so
        on a later call (the consumer backs off and calls again with
        ``done=None``), so a job that ran is never left RUNNING.
        """

    @abc.abstractmethod
    def finish(self, job: Job) -> None:
        """Record that a running job reached a final state (set on the job)."""

    @abc.abstractmethod
    def cancel(self, job: Job) -> bool:
        """Cancel a waiting job. False if it is running or finished."""

    @abc.abstractmethod
    def requeue(self, job: Job) -> bool:
        """Queue a failed or cancelled job again (the dashboard's retry).

        False if the job is not finished-and-unsuccessful.
        """

    @abc.abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job with that id, if the store still holds it for this namespace."""

    @abc.abstractmethod
    def jobs(
        self, status: JobStatus | None = None, limit: int = 50, offset: int = 0, *, queue: str | None = None
    ) -> list[Job]:
        """Jobs, newest enqueued first, optionally of one status and of one queue."""

    @abc.abstractmethod
    def counts(self, queue: str | None = None) -> dict[str, int]:
        """How many jobs the store holds (in ``queue``, or in all), by status value."""

    @abc.abstractmethod
    def queue_counts(self) -> dict[str, dict[str, int]]:
        """Per queue name with live jobs: how many are ``queued``, ``scheduled`` and ``running``."""

    @abc.abstractmethod
    def depth(self, queue: str | None = None) -> int:
        """How many jobs wait (queued + scheduled), in every queue or in one."""

    @abc.abstractmethod
    def purge_finished(self) -> int:
        """Forget every finished job; returns how many."""

    @abc.abstractmethod
    def join(self, timeout: float | None, *, due_only: bool = False, queue: str | None = None) -> bool:
        """Block until no job waits or runs (in ``queue``, or in any queue). False on timeout.

        With ``due_only``, jobs scheduled for later do not count (shutdown
        drains what is due; it does not wait an hour for a job due in one).
        """

    @abc.abstractmethod
    def waiter(self, job: Job) -> threading.Event | None:
        """An event set when ``job`` finishes; None if it has finished already.

        Whichever object or process ran the job, once the event is set
        ``job`` (the object passed here) carries the outcome.
        """

    @abc.abstractmethod
    def wake(self) -> None:
        """Make every blocked :meth:`take` look again now (used to stop the consumers)."""

    def wake_from_signal_handler(self) -> None:  # noqa: B027 - optional hook
        """:meth:`wake` for a signal handler: takes no lock (see ``signal_safe_wake``).

        The default does nothing: a store without the capability is woken by
        its own poll interval.
        """

    @abc.abstractmethod
    def drop_waiting(self) -> list[Job]:
        """Remove every waiting job of this process and return them (shutdown of a store
        whose jobs do not outlive the process): queued, scheduled and deferred, and also
        those a store with ``capabilities.limits`` set aside for a concurrency slot or a
        rate window, out of every count (none runs later when its slot or window comes)."""

    def request_abort(self, job_id: str, reason: str) -> bool:
        """Record that the running job ``job_id`` is asked to stop (``reason``: who asked,
        when), for whichever process runs it. True if the job runs (the request is
        recorded); False if it waits, finished, or is not known. Only stores that
        declare ``abort_flags`` implement it (see :doc:`/limits`)."""
        return False

    def abort_requests(self, job_ids: Iterable[str]) -> dict[str, str]:
        """Of these jobs (running in this process), those asked to stop, with each
        request's reason. The process that runs them asks every half second or so."""
        return {}

    # -- many jobs at once (issue 24) ----------------------------------------------------------
    def put_many(self, jobs: list[Job]) -> None:
        """Queue every job of ``jobs`` (QUEUED, or SCHEDULED with its eta), in order, as one
        step of the store: all of them, or none (``MEMQUEUE_MAXSIZE`` counts the batch as a
        whole). The built-in stores do it atomically (one lock hold, one transaction, one
        script); this default, for a third party's store that does not override it, queues
        them one by one (a full store refuses the rest: not atomic).

        :raises QueueFull: the batch does not fit: nothing was queued.
        """
        for job in jobs:
            if job.status.value == "scheduled":
                self.schedule(job)
            else:
                self.put(job)

    def pause(self, queue: str) -> bool:
        """Start no job of ``queue`` from now on, in every process sharing the store (within
        a second), until :meth:`resume`; jobs are still queued, and running ones go on.
        The state is the store's: a durable store keeps it across restarts. True if the
        queue was not paused. Only stores that declare ``pausable`` implement it."""
        raise NotImplementedError(f"{type(self).__name__} cannot pause a queue (it does not declare 'pausable')")

    def resume(self, queue: str) -> bool:
        """Start the jobs of ``queue`` again (see :meth:`pause`); True if it was paused."""
        raise NotImplementedError(f"{type(self).__name__} cannot pause a queue (it does not declare 'pausable')")

    def paused(self) -> set[str]:
        """The paused queues (see :meth:`pause`)."""
        return set()

    def limit_uses(self) -> list[LimitUse]:
        """Every rate and concurrency limit that jobs use now: running or started in the
        current window, or waiting (see ``capabilities.limits``)."""
        return []

    def find(self, flt: JobFilter, limit: int = 50, offset: int = 0) -> list[Job]:
        """The jobs ``flt`` matches, newest enqueued first (as :meth:`jobs`).

        This default reads every job the store lists; a store that can select in its
        own query language (SQL) overrides it.
        """
        if flt.statuses is not None and len(flt.statuses) == 1:
            from ..job import JobStatus

            candidates = self.jobs(JobStatus(flt.statuses[0]), limit=2**31, queue=flt.queue)
        else:
            candidates = self.jobs(limit=2**31, queue=flt.queue)
        matched = [job for job in candidates if job_matches(flt, job)]
        return matched[offset:offset + limit]

    def count_matching(self, flt: JobFilter) -> int:
        """How many jobs ``flt`` matches (all of them, not a page)."""
        return len(self.find(flt, limit=2**31))

    def delete(self, job: Job) -> bool:
        """Forget a finished job (succeeded, failed or cancelled). False if it waits or runs
        (cancel it first: a waiting job never disappears without a trace) or is gone."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete one job")

    def act_on(self, flt: JobFilter, action: str, done: Callable[[Job], None] | None = None) -> int:
        """Do ``action`` to every job ``flt`` matches now (not a page), and return how many
        it changed: ``"retry"`` queues the failed and cancelled ones again (:meth:`requeue`),
        ``"cancel"`` cancels the waiting ones (:meth:`cancel`), ``"delete"`` forgets the
        finished ones (:meth:`delete`). Jobs in another state are left as they are.
        ``done`` is called with each job changed (the queue sends its signals there).

        The matches are read first (in one read), then changed by the store's own
        conditional step: per batch of :data:`BULK_BATCH` with
        ``capabilities.bulk_actions`` (:meth:`act_on_batch`), else one by one. A job that
        changed meanwhile (it started, another operator retried it) is skipped, not
        broken. Not one transaction: an outage part-way leaves the batches done so far done.
        """
        if action not in ("retry", "cancel", "delete"):
            raise ValueError(f"action must be 'retry', 'cancel' or 'delete', not {action!r}")
        allowed = {"retry": ("failed", "cancelled", "aborted"), "cancel": ("queued", "scheduled", "deferred"),
                   "delete": ("succeeded", "failed", "cancelled", "aborted")}[action]
        wanted = allowed if flt.statuses is None else tuple(s for s in flt.statuses if s in allowed)
        if not wanted:
            return 0
        from dataclasses import replace

        # One read of every match (not pages by offset: each page would read the ones before
        # it again, and a store that filters in Python, like Redis, would read n²/500 records).
        matched = self.find(replace(flt, statuses=wanted), limit=2**31)
        if not self.capabilities.bulk_actions:
            return self._one_by_one(action, matched, done)
        return sum(self.act_on_batch(action, matched[i:i + BULK_BATCH], done)
                   for i in range(0, len(matched), BULK_BATCH))

    def act_on_batch(self, action: str, jobs: list[Job], done: Callable[[Job], None] | None = None) -> int:
        """Do ``action`` (``"retry"``, ``"cancel"``, ``"delete"``) to ``jobs`` (at most
        :data:`BULK_BATCH`, matched by :meth:`act_on`) in one step of the store, each only
        if it is still in a state the action takes (as :meth:`requeue`, :meth:`cancel`,
        :meth:`delete` decide); return how many changed, calling ``done`` with each.

        A store that declares ``capabilities.bulk_actions`` overrides this with one lock
        hold, transaction or script per batch. This default changes them one by one.
        """
        return self._one_by_one(action, jobs, done)

    def _one_by_one(self, action: str, jobs: list[Job], done: Callable[[Job], None] | None) -> int:
        changed = 0
        verb = {"retry": self.requeue, "cancel": self.cancel, "delete": self.delete}[action]
        for job in jobs:
            if verb(job):
                changed += 1
                if done is not None:
                    done(job)
        return changed

    def put_in_transaction(self, job: Job, session: Any) -> Job:
        """Queue ``job`` (as :meth:`put`, :meth:`schedule` or, with a ``unique_key``,
        :meth:`put_unique`) through ``session``, the caller's database session or
        connection, inside its open transaction: the job exists for no one until that
        transaction commits, and never if it rolls back. Returns the job, or the live
        holder of its key. Only stores that declare ``transactional`` implement it.
        """
        raise NotImplementedError(
            f"{type(self).__name__} cannot insert a job in your database transaction (session=): only a"
            " store in that database can (MEMQUEUE_STORAGE = 'postgresql://...'); with this store use"
            " .options(on_commit=db.session), which queues the job once the session commits"
        )

    # -- workflows (capabilities.workflows) ----------------------------------------------
    def put_workflow(self, jobs: list[Job], links: list[Link]) -> None:
        """Queue ``jobs`` (QUEUED, SCHEDULED with an eta, or DEFERRED) and their ``links`` in
        one atomic step: all of them, or none.

        A DEFERRED job waits until every job it is linked to as a child succeeded,
        then is released to QUEUED in the same atomic step that records the last
        of those outcomes, with what its options' ``bind`` says bound as its first
        positional argument. A parent that failed for good or was cancelled cancels
        it (with :func:`dependency_failed`'s or :func:`dependency_cancelled`'s error),
        and so on down, in that same step. A parent outside ``jobs`` is a job the
        store holds already: finished, it counts at once (a success is taken, a
        failure cancels the child now).

        Every job counts toward ``maxsize`` (a deferred job waits); a workflow that
        does not fit is refused whole.

        :raises QueueFull: the jobs do not all fit; none was queued.
        :raises DependencyError: a parent is neither in ``jobs`` nor in the store.
        """
        raise NotImplementedError(f"{type(self).__name__} does not declare capabilities.workflows")

    def dependents(self, job_id: str) -> list[str]:
        """The ids of the jobs linked as children of ``job_id`` (in the order they were linked)."""
        return []

    def dependents_many(self, job_ids: Sequence[str]) -> dict[str, list[str]]:
        """:meth:`dependents` of each of ``job_ids`` (those with none may be left out), in one
        read where the store can: a listing of a page of jobs asks once, not once per job.

        This default asks :meth:`dependents` per id; the built-in stores override it."""
        out: dict[str, list[str]] = {}
        for job_id in job_ids:
            found = self.dependents(job_id)
            if found:
                out[job_id] = found
        return out

    def group_jobs(self, group_id: str) -> list[Job] | None:
        """The members of group ``group_id`` in member order, or None if the store holds none of them."""
        return None

    def schema_sql(self) -> str | None:
        """The SQL that creates (or brings up to date) what this store needs in its
        database, for a team that applies migrations itself; None: nothing to create."""
        return None

    def upgrade_schema(self) -> tuple[int, int] | None:
        """Create or migrate this store's tables: ``(version before, version after)``;
        None for a store without a schema to manage."""
        return None

    def declare_queues(self, queues: Iterable[str]) -> None:  # noqa: B027 - optional hook
        """Record that this process consumes ``queues`` (a store other processes share
        keeps it for a while, so their enqueues may name a queue only a worker declares).

        The default records nothing: a store whose jobs live in one process has
        no other process to tell.
        """

    def known_queues(self) -> set[str]:
        """Queues that some process sharing this store declared lately (see :meth:`declare_queues`)."""
        return set()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections. The memory store has none."""


def job_matches(flt: JobFilter, job: Job) -> bool:
    """True if ``flt`` matches ``job`` (an object: its arguments as JSON text)."""
    return flt.matches(job)


#: A backend's factory: ``(url, options, context) -> Storage``. ``options`` merges
#: the URL's query string and ``MEMQUEUE_STORAGE_OPTIONS`` (validated by the
#: backend, which raises ConfigurationError naming the key).
StorageFactory = Callable[[str, Mapping[str, Any], StoreContext], Storage]


#: Query-string options whose values are secrets (matched case-insensitively, as a part of the name).
_SECRET_OPTIONS = ("password", "passwd", "pwd", "secret", "token", "key", "auth", "credential")


def redact_url(url: str) -> str:
    """``url`` as logs, pages and errors show it: every secret replaced by ``***``.

    Worked on the text, not on a parsed URL, so that an unencoded ``/``, ``?``
    or ``@`` in a password cannot hide it from the parser: everything before
    the last ``@`` of the part after ``://`` is the user information (a user
    name stays, the password goes; a lone token goes), and query options whose
    names say they are secrets (``password``, ``token``, ``key``...) lose their value.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    at = rest.rfind("@")
    if at >= 0 and not rest.startswith("/"):  # "scheme:///path": no user information, an "@" is the path's
        user, colon, _secret = rest[:at].partition(":")
        rest = (f"{user}:***" if colon else "***") + rest[at:]
    head, qmark, query = rest.partition("?")
    if qmark:
        query, hash_, fragment = query.partition("#")
        parts = []
        for item in query.split("&"):
            name, eq, _value = item.partition("=")
            if eq and any(word in name.lower() for word in _SECRET_OPTIONS):
                item = f"{name}=***"
            parts.append(item)
        rest = head + "?" + "&".join(parts) + hash_ + fragment
    return f"{scheme}://{rest}"
