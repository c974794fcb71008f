"""The job record: plain data, no threads and no I/O of its own.

A queued job is the thing that exists in the largest numbers, so it holds only
what it needs while it waits (its ids, its task, its arguments, one
timestamp). Everything that only a started job has (timestamps, result,
error, progress, a waiter's event) lives on a small :class:`_Outcome` made
when the job starts. That keeps a backlog of 100,000 jobs in a few dozen MB.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol

from .display import MAX_JSON_DEPTH, REPR_LIMIT, finite, isotime, json_safe, nested_deeper_than, safe_repr
from .exceptions import JobFailed
from .options import (
    DEFAULT_OPTIONS,
    DEFAULT_QUEUE,
    MAX_PRIORITY,
    MIN_PRIORITY,
    QUEUE_NAME_MAX,
    UNIQUE_KEY_MAX,
    JobOptions,
    check_priority,
    check_queue_name,
    check_unique_key,
    job_options,
)

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    #: What the job's task returns. Defaults to Any, so a bare ``Job`` in an
    #: annotation means ``Job[Any]`` (mypy and pyright read PEP 696 defaults).
    R = TypeVar("R", default=Any)
else:
    from typing import TypeVar

    R = TypeVar("R")  # the runtime needs no default: it is erased


class TaskLike(Protocol):
    """What a job needs of its task (:class:`~flask_memqueue.Task` is one).

    A protocol, so that this module (near the bottom of the import graph)
    depends on no task, registry or hook.
    """

    name: str
    topic: str | None
    retries: int
    func: Callable[..., Any]
    #: True for the stand-in of a task name this process does not know.
    missing: bool
    #: How the function is called for a job (:class:`flask_memqueue.hooks.Strategy`);
    #: None: in the consumer thread.
    strategy: Callable[[Job[Any]], Any] | None

    def retry_in(self, attempt: int) -> float: ...


class JobHost(Protocol):
    """What a job is bound to: what :meth:`Job.wait`, :meth:`Job.cancel` and :attr:`Job.id`
    need of the app's queue in this process (:class:`~flask_memqueue.runtime.jobs.Jobs`)."""

    token: str

    def job_waiter(self, job: Job[Any]) -> threading.Event | None: ...

    def cancel(self, job: Job[Any]) -> bool: ...

    def job_dependents(self, job: Job[Any]) -> list[str]: ...
    def abort(self, job: Job[Any], by: str | None = None) -> bool: ...


class JobStatus(str, enum.Enum):
    """Where a job is in its life. A ``str``, so it compares to plain strings."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    #: Held by a dependency (a chain's previous link, a chord's members,
    #: ``depends_on=``) until it is released to ``queued`` (RQ's name).
    DEFERRED = "deferred"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: A running job that stopped because an abort was asked (``job.abort()``).
    ABORTED = "aborted"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for the final states (succeeded, failed, cancelled, aborted)."""
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.ABORTED})
_WAITING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED})

class _Outcome:
    """What a job gains once it is scheduled, started or finished.

    Attempts live here too: a job that never started has made none, so a
    waiting job carries no counter of its own.

    Every field defaults to the class attribute below until it is set, so a
    new outcome costs no initialiser (one is made per job run: on the hot
    path) and holds only what was set on it: a succeeded job's outcome has
    four fields, about 100 bytes (``__slots__`` would hold all nine, 112).
    """

    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    progress: float | None = None
    message: str | None = None
    eta: float | None = None
    attempts: int = 0
    #: Why and by whom an abort of the running attempt was asked, once it was.
    abort: str | None = None


_NO_OUTCOME = _Outcome()  # read-only stand-in for a job that has none yet


class Job(Generic[R]):
    """One call of a task (or one message for a handler), and what became of it.

    Jobs are made by :meth:`MemQueue.enqueue` and friends, never by hand.
    Their fields are written by the consumer thread; read them freely, and
    call :meth:`wait` to block until the job is done.

    Generic in what the task returns: ``resize.delay("a.png")`` is a
    ``Job[Image]`` when ``resize`` returns an ``Image``, and ``job.wait()`` an
    ``Image``. ``Generic`` adds no per-instance cost (its ``__slots__`` is
    empty and it defines no ``__new__``), so the enqueue path pays nothing.

    A queued job holds nine references and nothing else (the memory store's
    backlog is made of them): how it is queued is one shared
    :class:`JobOptions`, and what a started job gains is on its ``_Outcome``.
    """

    __slots__ = ("key", "_queue", "task", "args", "kwargs", "status", "enqueued_at", "_out", "options")

    def __init__(
        self,
        host: JobHost,
        id: int | str,
        task: TaskLike,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        enqueued_at: float,
        status: JobStatus = JobStatus.QUEUED,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        unique_key: str | None = None,
        tick: float | None = None,
        *,
        options: JobOptions | None = None,
    ) -> None:
        #: The store's key for the job: the memory store's enqueue number (an
        #: int, so its waiting jobs stay ordered and ids are made only when
        #: read), or the full :attr:`id` for a store that keeps records.
        self.key = id
        self._queue = host
        #: The :class:`~flask_memqueue.registry.Task` this job calls.
        self.task = task
        #: Positional arguments of the call.
        self.args = args
        #: Keyword arguments of the call, or None for none (saves a dict per job).
        self.kwargs = kwargs
        #: A :class:`JobStatus`.
        self.status = status
        #: Unix time of the enqueue.
        self.enqueued_at = enqueued_at
        self._out: _Outcome | None = None
        #: How the job is queued (:class:`JobOptions`): ``options`` if given,
        #: else the shared options of ``queue``, ``priority``, ``unique_key``, ``tick``.
        self.options = options if options is not None else job_options(queue, priority, unique_key, tick)

    # -- how it is queued (read through the shared options) -----------------------
    @property
    def queue(self) -> str:
        """The named queue the job waits in (``"default"`` unless the task or
        the call said otherwise); only that queue's consumer threads run it."""
        return self.options.queue

    @queue.setter
    def queue(self, value: str) -> None:
        self.options = self.options.replace(queue=value)

    @property
    def priority(self) -> int:
        """-100..100: within its queue a higher priority runs first (0 by default)."""
        return self.options.priority

    @priority.setter
    def priority(self, value: int) -> None:
        self.options = self.options.replace(priority=value)

    @property
    def unique_key(self) -> str | None:
        """``task.options(unique_key=...)``: while this job waits or runs, an enqueue
        with the same key returns this job instead of queueing another."""
        return self.options.unique_key

    @unique_key.setter
    def unique_key(self, value: str | None) -> None:
        self.options = self.options.replace(unique_key=value)

    @property
    def tick(self) -> float | None:
        """For a job a periodic task's schedule made: the Unix time of its tick
        (when it was due; a catch-up run starts later). None for other jobs."""
        return self.options.tick

    @tick.setter
    def tick(self, value: float | None) -> None:
        self.options = self.options.replace(tick=value)

    @property
    def attempts(self) -> int:
        """How many times the job has been started (retries included)."""
        return (self._out or _NO_OUTCOME).attempts

    @attempts.setter
    def attempts(self, value: int) -> None:
        if value or self._out is not None:
            self._outcome().attempts = value

    # -- identity --------------------------------------------------------
    @property
    def id(self) -> str:
        """A string unique across apps and processes: ``"<queue token>-<number>"``."""
        i = self.key
        if i.__class__ is int:
            return f"{self._queue.token}-{i}"
        return i  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The task's registered name (``"message:<topic>"`` for a message)."""
        return self.task.name

    @property
    def topic(self) -> str | None:
        """The topic of a message job, else None."""
        return self.task.topic

    # -- outcome fields (None until the job starts) ------------------------
    def _outcome(self) -> _Outcome:
        out = self._out
        if out is None:
            out = self._out = _Outcome()
        return out

    @property
    def result(self) -> R | None:
        """What the task returned, once it succeeded (None before)."""
        return (self._out or _NO_OUTCOME).result  # type: ignore[no-any-return]

    @property
    def error(self) -> str | None:
        """One line: the exception's type and message, once it failed."""
        return (self._out or _NO_OUTCOME).error

    @property
    def traceback(self) -> str | None:
        """The formatted traceback of the last failure."""
        return (self._out or _NO_OUTCOME).traceback

    @property
    def progress(self) -> float | None:
        """0..1 as set by ``current_job.set_progress()``, else None."""
        return (self._out or _NO_OUTCOME).progress

    @property
    def progress_message(self) -> str | None:
        """The message given with the last ``set_progress()``."""
        return (self._out or _NO_OUTCOME).message

    @property
    def started_at(self) -> float | None:
        """Unix time the last attempt started."""
        return (self._out or _NO_OUTCOME).started_at

    @property
    def finished_at(self) -> float | None:
        """Unix time the job reached a final state."""
        return (self._out or _NO_OUTCOME).finished_at

    @property
    def eta(self) -> float | None:
        """Unix time a scheduled job (or a retry) becomes due; for a requeued job
        (``requeue``, the dashboard's retry), when it was requeued."""
        return (self._out or _NO_OUTCOME).eta

    def outcome(self) -> tuple[float | None, float | None, float | None, Any, str | None, str | None]:
        """``(eta, started_at, finished_at, result, error, traceback)`` in one call:
        what a store writes of a job's last run (cheaper than six properties)."""
        out = self._out
        if out is None:
            return (None, None, None, None, None, None)
        return (out.eta, out.started_at, out.finished_at, out.result, out.error, out.traceback)

    @property
    def abort_requested(self) -> bool:
        """True once an abort of this running job was asked: cooperative code checks
        ``current_job.abort_requested`` between steps and returns (it then ends ``aborted``)."""
        return (self._out or _NO_OUTCOME).abort is not None

    @property
    def finished(self) -> bool:
        """True once the job succeeded, failed, was cancelled or aborted."""
        return self.status in _FINISHED

    # -- behaviour -------------------------------------------------------
    def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far a running job is (0..1), with an optional message.

        Call it as ``current_job.set_progress(0.5, "half way")`` from inside
        the job. A number outside 0..1 raises :class:`ValueError`, as a
        non-number raises :class:`TypeError`: a silently clamped 2.0 would
        hide a bug in the caller's arithmetic (pass ``done / total``).
        """
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            raise TypeError(f"progress must be a number between 0 and 1, not {fraction!r}") from None
        if not 0.0 <= value <= 1.0:  # NaN fails this too
            raise ValueError(f"progress must be a number between 0 and 1 (a fraction of the work), not {fraction!r}")
        out = self._outcome()
        out.progress = value
        out.message = None if message is None else str(message)

    def wait(self, timeout: float | None = None) -> R:
        """Block until the job finishes and return its result.

        :raises JobFailed: the job failed or was cancelled.
        :raises TimeoutError: it did not finish within ``timeout`` seconds (beyond
            ``threading.TIMEOUT_MAX``, or ``float("inf")``: no end, as None).
        :raises ValueError: ``timeout`` is NaN.
        """
        wait = wait_timeout(timeout)
        if not self.finished:
            event = self._queue.job_waiter(self)
            if event is not None and not event.wait(wait):
                raise TimeoutError(f"job {self.id} ({self.name}) did not finish within {timeout} s")
        if self.status is JobStatus.SUCCEEDED:
            return (self._out or _NO_OUTCOME).result  # type: ignore[no-any-return]
        raise JobFailed(self)

    # -- the lifecycle: every transition of a job is decided here ---------------
    # Stores persist what these methods decide and call them under their own
    # lock; the consumer calls start/succeed/fail on the job it runs.
    def mark_running(self) -> None:
        """Claimed by a consumer (the store does this as part of the claim)."""
        self.status = JobStatus.RUNNING

    def mark_scheduled(self, eta: float) -> None:
        """Wait until Unix time ``eta`` (enqueue_in/enqueue_at, or a retry)."""
        self._outcome().eta = eta
        self.status = JobStatus.SCHEDULED

    def start(self, now: float) -> _Outcome:
        """An attempt begins: count it. Returns the outcome record the run fills in.

        (``Consumer.execute`` inlines this and :meth:`succeed`: keep them alike.)
        """
        out = self._out
        if out is None:  # the first attempt of a job queued without an eta: the hot path
            out = self._out = _Outcome()
            out.started_at = now
            out.attempts = 1
            return out
        out.eta = None
        out.started_at = now
        out.attempts += 1
        return out

    def succeed(self, result: Any, now: float) -> None:
        """The attempt returned ``result``."""
        out = self._out or self._outcome()  # start() made it
        out.result = result
        out.finished_at = now
        if out.error is not None:  # a retry succeeded: the old failure is history
            out.error = out.traceback = None
        self.status = JobStatus.SUCCEEDED  # last: Job.wait() returns as soon as it sees it

    def fail(self, error: str, traceback: str | None, now: float, *, fatal: bool = False) -> float | None:
        """The attempt raised. Retried if the task has retries left (and the
        error was not fatal, like ``SystemExit``): returns the retry's delay
        in seconds, or None when the job failed for good."""
        out = self._outcome()
        out.error = error
        out.traceback = traceback
        if not fatal and out.attempts <= self.task.retries:
            delay = self.task.retry_in(out.attempts)
            self.mark_scheduled(now + delay)
            return delay
        out.finished_at = now
        self.status = JobStatus.FAILED  # after finished_at: Job.wait() returns as soon as it sees it
        return None

    def mark_cancelled(self, now: float, reason: str = "cancelled", status: JobStatus = JobStatus.CANCELLED) -> None:
        """Cancelled while it waited (by a user, or because its queue shut down), or
        ``status`` (:meth:`mark_aborted`)."""
        out = self._outcome()
        out.finished_at = now
        out.error = reason
        out.eta = None
        self.status = status  # last: Job.wait() returns as soon as it sees it

    def mark_aborted(self, now: float, reason: str) -> None:
        """Stopped after an abort (``reason``: who asked, when): ``aborted``, never retried."""
        self.mark_cancelled(now, reason, JobStatus.ABORTED)

    def reset_for_requeue(self, now: float) -> None:
        """Forget the last run, so a retried job starts as if new (status QUEUED),
        due at ``now``: its :attr:`eta` is when it was requeued, and it takes its
        place among the waiting jobs of its priority by that time."""
        self.status = JobStatus.QUEUED
        out = self._outcome()
        out.error = out.traceback = out.result = out.finished_at = out.started_at = None
        out.progress = out.message = out.abort = None
        out.eta = now
        out.attempts = 0

    def interrupt(self, now: float, *, task_known: bool = True) -> None:
        """Its process died while running it (a take-over): the attempt counted
        when it was claimed, so the task's retry policy decides, as after any
        failure; out of retries, it failed with ``"interrupted"``.

        A job whose task this process does not know (so its retries are
        unknown) is queued again: at-least-once wins over a guess.
        """
        out = self._outcome()
        out.traceback = None
        if not task_known:
            out.error = "interrupted: the process running it died"
            out.eta = None
            self.status = JobStatus.QUEUED
        elif self.fail("interrupted: the process running it died", None, now) is None:
            out.error = "interrupted"

    def restore(
        self,
        status: JobStatus,
        attempts: int,
        *,
        eta: float | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        result: Any = None,
        error: str | None = None,
        traceback: str | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> None:
        """Copy a stored record's state onto this object (a store reading a record back)."""
        self.status = status
        self.attempts = attempts
        if (
            eta is not None or started_at is not None or finished_at is not None or error is not None
            or result is not None or progress is not None or self._out is not None
        ):
            out = self._outcome()
            out.eta = eta
            out.started_at = started_at
            out.finished_at = finished_at
            out.result = result
            out.error = error
            out.traceback = traceback
            out.progress = progress
            out.message = message

    def cancel(self) -> bool:
        """Cancel the job if it is still waiting. True if it was; False if it
        is running or finished already (:meth:`abort` stops a running one)."""
        return self._queue.cancel(self)

    def abort(self, by: str | None = None) -> bool:
        """Cancel a waiting job; ask a running one to stop, wherever it runs (its
        :attr:`abort_requested` turns true, :class:`~flask_memqueue.JobAborted` follows after
        ``MEMQUEUE_GRACE_PERIOD``; it ends ``aborted``, its error naming ``by`` and when).
        True if cancelled or asked; False if it had finished (see :doc:`/limits`)."""
        return self._queue.abort(self, by)

    def to_dict(self, *, dependents: list[str] | None = None) -> dict[str, Any]:
        """A JSON-safe dict of everything known about the job.

        Arguments and results that JSON cannot hold are shown by their
        ``repr``, cut to :data:`REPR_LIMIT` characters (see :func:`json_safe`);
        a number is never NaN or infinite. It does not raise.

        :param dependents: its ``dependents`` ids when the caller read them already
            (a listing reads a page's in one store call,
            :meth:`Storage.dependents_many <flask_memqueue.storage.base.Storage.dependents_many>`);
            None asks the store (:meth:`dependents`).
        """
        return _as_dict(self, dependents)

    def dependents(self) -> list[str]:
        """The ids of the jobs that wait on this one (its chain's next link, its chord's
        callback, the jobs that named it in ``depends_on=``), as its store knows them. It does not raise."""
        try:
            return self._queue.job_dependents(self)
        except Exception:  # a store that is down: to_dict() never raises
            return []

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name} {self.status.value}>"


_new = object.__new__
_QUEUED = JobStatus.QUEUED


def queued_job(
    host: JobHost,
    key: int | str,
    task: TaskLike,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    enqueued_at: float,
    options: JobOptions,
) -> Job[Any]:
    """A new QUEUED job: what ``Job(host, key, task, args, kwargs, enqueued_at,
    options=options)`` makes, for the enqueue hot path.

    Calling a class runs ``__init__`` through the type's generic call
    machinery (an argument tuple, a keyword dict, a fresh interpreter frame
    entered from C); this function sets the same nine slots on a bare
    object: about 2,000 fewer instructions per enqueue (callgrind, CPython
    3.11), an eighth of an enqueue. ``tests/test_queues.py`` checks that the
    two make the same job.
    """
    job: Job[Any] = _new(Job)
    job.key = key
    job._queue = host
    job.task = task
    job.args = args
    job.kwargs = kwargs
    job.status = _QUEUED
    job.enqueued_at = enqueued_at
    job._out = None
    job.options = options
    return job


class Step(NamedTuple):
    """One job of a workflow, before it is made: its call, and what it waits on.

    ``after`` names its parents, each an index into the workflow's steps (an
    earlier step), a :class:`~flask_memqueue.Job` or a job id (a job queued
    before); ``positions`` says where each parent's result goes among what it is
    given (-1: nowhere). ``bind`` is :attr:`JobOptions.bind <flask_memqueue.options.JobOptions.bind>`.
    """

    task: Any  # a Task (registry layer: above this module)
    args: tuple[Any, ...]
    kwargs: dict[str, Any] | None
    options: JobOptions
    after: tuple[int | Job | str, ...] = ()
    positions: tuple[int, ...] = ()
    bind: str | None = None
    group: int | None = None  # the index of the step's group in the workflow, if any


def _as_dict(job: Job[Any], dependents: list[str] | None = None) -> dict[str, Any]:
    """The body of :meth:`Job.to_dict` (a function, so that the class stays small)."""
    out = job._out or _NO_OUTCOME
    started, finished = out.started_at, out.finished_at
    duration = None
    if started is not None:
        duration = (finished if finished is not None else _now()) - started
    return {
        "id": job.id,
        "task": job.name,
        "topic": job.topic,
        "queue": job.queue,
        "priority": job.priority,
        "unique_key": job.unique_key,
        "tick": isotime(job.tick),
        "status": job.status.value,
        "group": job.options.group,
        "depends_on": list(job.options.after or ()),
        "dependents": job.dependents() if dependents is None else dependents,
        "args": json_safe(list(job.args)),
        "kwargs": json_safe(job.kwargs or {}),
        "result": json_safe(out.result),
        "error": out.error,
        "traceback": out.traceback,
        "attempts": job.attempts,
        "retries": job.task.retries,
        "progress": finite(out.progress),
        "progress_message": out.message,
        "enqueued_at": isotime(job.enqueued_at),
        "eta": isotime(out.eta),
        "started_at": isotime(started),
        "finished_at": isotime(finished),
        "duration": finite(None if duration is None else round(duration, 6)),
    }


def group_status(jobs: Sequence[Job]) -> str:
    """What :attr:`Group.status` says of these members."""
    statuses = {job.status for job in jobs}
    if all(s.finished for s in statuses):
        if JobStatus.FAILED in statuses:
            return "failed"
        if JobStatus.CANCELLED in statuses:
            return "cancelled"
        return "succeeded"
    if statuses <= {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}:
        return "queued"
    return "running"


def describe_task(name: str) -> str:
    """A task name as a sentence reads it: ``message:`` names (the handlers') say which topic.

    ``"message:"`` is :data:`flask_memqueue.registry.MESSAGE_PREFIX` (not
    imported: the registry sits above this module).
    """
    if name.startswith("message:"):
        topic = name[len("message:"):]
        return f"the message for topic {topic!r}" if topic else "the message for the default handler"
    return f"the job of task {name!r}"


def _now() -> float:
    return time.time()


def wait_timeout(timeout: float | None) -> float | None:
    """``timeout`` as a wait can take it: None (no end) for one longer than the interpreter's
    locks accept (``threading.TIMEOUT_MAX``, about 292 years: ``float("inf")``, ``1e12``),
    which raised ``OverflowError`` from deep inside ``Job.wait()`` and ``join()``.

    :raises ValueError: ``timeout`` is NaN (no wait means that).
    """
    if timeout is None:
        return None
    if timeout != timeout:  # NaN; a str or a list fails below with the interpreter's TypeError
        raise ValueError("timeout must be a number of seconds or None, not nan")
    return None if timeout >= threading.TIMEOUT_MAX else timeout


__all__ = [  # the names other modules import from here (several are defined in options and display)
    "DEFAULT_OPTIONS", "DEFAULT_QUEUE", "MAX_JSON_DEPTH", "MAX_PRIORITY", "MIN_PRIORITY", "QUEUE_NAME_MAX",
    "REPR_LIMIT", "UNIQUE_KEY_MAX", "Job", "JobHost", "JobOptions", "JobStatus", "Step", "TaskLike", "check_priority",
    "check_queue_name", "check_unique_key", "describe_task", "isotime", "job_options", "json_safe",
    "group_status", "nested_deeper_than", "queued_job", "safe_repr", "wait_timeout",
]
