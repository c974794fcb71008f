"""The job record: plain data, no threads and no I/O of its own.

A queued job is the thing that exists in the largest numbers, so it holds only
what it needs while it waits (its ids, its task, its arguments, one
timestamp). Everything that only a started job has (timestamps, result,
error, progress, a waiter's event) lives on a small :class:`_Outcome` made
when the job starts. That keeps a backlog of 100,000 jobs in a few dozen MB.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import reprlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol

from .exceptions import JobFailed

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    #: What the job's task returns. Defaults to Any, so a bare ``Job`` in an
    #: annotation means ``Job[Any]`` (mypy and pyright read PEP 696 defaults).
    R = TypeVar("R", default=Any)
else:
    from typing import TypeVar

    R = TypeVar("R")  # the runtime needs no default: it is erased


class TaskLike(Protocol):
    """What a job needs of its task (:class:`~flask_memqueue.registry.Task` is one).

    A protocol, so that this module (the bottom of the import graph, with the
    exceptions) depends on no other.
    """

    name: str
    topic: str | None
    retries: int
    func: Callable[..., Any]
    #: True for the stand-in of a task name this process does not know.
    missing: bool

    def retry_in(self, attempt: int) -> float: ...


class JobHost(Protocol):
    """What a job is bound to: the queue of one app in one process."""

    token: str

    def job_waiter(self, job: Job[Any]) -> threading.Event | None: ...

    def cancel(self, job: Job[Any]) -> bool: ...


class JobStatus(str, enum.Enum):
    """Where a job is in its life. A ``str``, so it compares to plain strings."""

    QUEUED = "queued"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for the three final states."""
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
_WAITING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED})

#: How much of an argument or result ``to_dict`` shows at most, in characters.
REPR_LIMIT = 2000


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


_NO_OUTCOME = _Outcome()  # read-only stand-in for a job that has none yet


#: The queue every job waits in unless its task or its call names another.
DEFAULT_QUEUE = "default"


class _Keep:
    """The default of JobOptions.replace() for a field that may be set to None."""


_KEEP = _Keep()


@dataclasses.dataclass(frozen=True, slots=True)
class JobOptions:
    """How a job is queued, apart from its call: its queue, priority, unique key and tick.

    Immutable and shared: every job of a task enqueued without options holds
    its task's one :class:`JobOptions` (:func:`job_options` hands out one
    object per ``(queue, priority)``), so a queued job pays one reference for
    all four, not four slots. A job with a unique key or a tick (rare: one
    per call that asks, one per periodic tick) has its own.
    """

    #: The named queue the job waits in.
    queue: str = DEFAULT_QUEUE
    #: -100..100: within its queue a higher priority runs first.
    priority: int = 0
    #: ``task.options(unique_key=...)``: while the job waits or runs, an enqueue
    #: with the same key returns it instead of queueing another.
    unique_key: str | None = None
    #: For a job a periodic task's schedule made: the Unix time of its tick.
    tick: float | None = None

    def replace(
        self,
        *,
        queue: str | None = None,
        priority: int | None = None,
        unique_key: str | None | _Keep = _KEEP,
        tick: float | None | _Keep = _KEEP,
    ) -> JobOptions:
        """These options with the given fields changed (the shared object when there is one)."""
        return job_options(
            self.queue if queue is None else queue,
            self.priority if priority is None else priority,
            self.unique_key if isinstance(unique_key, _Keep) else unique_key,
            self.tick if isinstance(tick, _Keep) else tick,
        )


_SHARED_OPTIONS: dict[tuple[str, int], JobOptions] = {}
#: At most this many shared options objects (queue names come from stored
#: records too, so the cache is bounded; past it, options are made per job).
_SHARED_MAX = 4096


def job_options(
    queue: str = DEFAULT_QUEUE, priority: int = 0, unique_key: str | None = None, tick: float | None = None
) -> JobOptions:
    """The :class:`JobOptions` for these values: one shared object per
    ``(queue, priority)`` when there is no unique key and no tick."""
    if unique_key is not None or tick is not None:
        return JobOptions(queue, priority, unique_key, tick)
    key = (queue, priority)
    options = _SHARED_OPTIONS.get(key)
    if options is None:
        options = JobOptions(queue, priority)
        if len(_SHARED_OPTIONS) < _SHARED_MAX:
            _SHARED_OPTIONS[key] = options
    return options


DEFAULT_OPTIONS = job_options()


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
    def finished(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
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
        :raises TimeoutError: it did not finish within ``timeout`` seconds.
        """
        if not self.finished:
            event = self._queue.job_waiter(self)
            if event is not None and not event.wait(timeout):
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

    def mark_cancelled(self, now: float, reason: str = "cancelled") -> None:
        """Cancelled while it waited (by a user, or because its queue shut down)."""
        out = self._outcome()
        out.finished_at = now
        out.error = reason
        out.eta = None
        self.status = JobStatus.CANCELLED

    def reset_for_requeue(self, now: float) -> None:
        """Forget the last run, so a retried job starts as if new (status QUEUED),
        due at ``now``: its :attr:`eta` is when it was requeued, and it takes its
        place among the waiting jobs of its priority by that time."""
        self.status = JobStatus.QUEUED
        out = self._outcome()
        out.error = out.traceback = out.result = out.finished_at = out.started_at = None
        out.progress = out.message = None
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
        is running or finished already (a running job cannot be interrupted)."""
        return self._queue.cancel(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of everything known about the job.

        Arguments and results that JSON cannot hold are shown by their
        ``repr``, cut to :data:`REPR_LIMIT` characters (see :func:`json_safe`);
        a number is never NaN or infinite. It does not raise.
        """
        out = self._out or _NO_OUTCOME
        started, finished = out.started_at, out.finished_at
        duration = None
        if started is not None:
            duration = (finished if finished is not None else _now()) - started
        return {
            "id": self.id,
            "task": self.name,
            "topic": self.topic,
            "queue": self.queue,
            "priority": self.priority,
            "unique_key": self.unique_key,
            "tick": isotime(self.tick),
            "status": self.status.value,
            "args": json_safe(list(self.args)),
            "kwargs": json_safe(self.kwargs or {}),
            "result": json_safe(out.result),
            "error": out.error,
            "traceback": out.traceback,
            "attempts": self.attempts,
            "retries": self.task.retries,
            "progress": _finite(out.progress),
            "progress_message": out.message,
            "enqueued_at": isotime(self.enqueued_at),
            "eta": isotime(out.eta),
            "started_at": isotime(started),
            "finished_at": isotime(finished),
            "duration": _finite(None if duration is None else round(duration, 6)),
        }

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


#: Priorities run from this low...
MIN_PRIORITY = -100
#: ...to this high (as in Django's task framework); higher runs first.
MAX_PRIORITY = 100
_QUEUE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-:")
QUEUE_NAME_MAX = 64


def check_queue_name(name: object, where: str = "queue") -> str:
    """``name`` if it can name a queue, else a ValueError naming ``where`` and the value.

    Queue names appear in URLs (``/jobs?queue=``), log lines, SQL rows and
    Redis keys, so they are kept to letters, digits and ``_ . - :``.
    """
    if not isinstance(name, str) or not name or len(name) > QUEUE_NAME_MAX or not _QUEUE_NAME_CHARS.issuperset(name):
        raise ValueError(
            f"{where}: a queue name is 1 to {QUEUE_NAME_MAX} letters, digits or '_', '.', '-', ':',"
            f" not {safe_repr(name, 80)}"
        )
    return name


#: A unique key is at most this many characters (it is stored and shown with every job).
UNIQUE_KEY_MAX = 255


def check_unique_key(key: object, where: str = "unique_key") -> str:
    """``key`` if it can be a job's unique key (a non-empty string of at most 255
    characters), else a ValueError naming ``where`` and the value."""
    if not isinstance(key, str) or not key or len(key) > UNIQUE_KEY_MAX:
        raise ValueError(
            f"{where} must be a non-empty string of at most {UNIQUE_KEY_MAX} characters, like"
            f" 'report:42' (prefix it with the task's name by convention), not {safe_repr(key, 80)}"
        )
    return key


def check_priority(value: object, where: str = "priority") -> int:
    """``value`` if it is a priority (an int from -100 to 100), else a ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(
            f"{where} must be an int from {MIN_PRIORITY} to {MAX_PRIORITY} (higher runs first),"
            f" not {safe_repr(value, 80)}"
        )
    return value


def _finite(number: float | None) -> float | None:
    """``number``, or None for NaN and infinities (JSON has no such numbers)."""
    if number is None or math.isfinite(number):
        return number
    return None


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


def isotime(ts: float | None) -> str | None:
    """A Unix time as an ISO 8601 string in UTC, or None.

    None also for a time no ``datetime`` can hold (``enqueue_in(1e20, ...)``):
    a job's page must show, not fail on, an ETA a caller got wrong.
    """
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


#: How deep arrays and objects may nest in what :func:`json_safe` passes on
#: as JSON (and what the routes accept). Deeper data is shown as text: every
#: JSON encoder and decoder in the chain (Python's, Flask's, a browser's)
#: recurses, and one job must never make them fail.
MAX_JSON_DEPTH = 100


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True if lists, tuples and dicts in ``value`` nest more than ``limit`` levels deep.

    Iterative, so it works on data too deep for anything recursive, and it
    stops at the first container below ``limit``.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return False


def safe_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters; never raises.

    A user's ``__repr__`` may raise, and a deeply nested value makes
    ``repr`` itself raise ``RecursionError``: then a shallower
    :mod:`reprlib` view, and as a last resort the type's name.
    """
    try:
        shown = repr(value)
    except Exception:
        try:
            shown = _SHALLOW.repr(value)
        except Exception:
            shown = f"<{type(value).__name__} object: its repr() failed>"
    if len(shown) > limit:
        shown = shown[:limit] + f"… ({len(shown) - limit} more characters)"
    return shown


_SHALLOW = reprlib.Repr()
_SHALLOW.maxlevel = 10
_SHALLOW.maxstring = _SHALLOW.maxother = REPR_LIMIT // 4


def json_safe(value: Any, limit: int = REPR_LIMIT) -> Any:
    """``value`` as plain JSON data if it is JSON (and short enough), else a cut repr.

    The dashboard and ``/jobs`` show arguments of any type; this keeps them
    from failing on a ``datetime``, a 10 MB string, a list nested 5,000
    deep, a ``__repr__`` that raises or a NaN (which ``JSON.parse`` refuses).
    It never raises. What it returns is what ``json.loads`` made of the
    text, so encoding it again cannot fail whatever the value's own
    methods do; keys are dumped as Flask's ``jsonify`` dumps them (sorted),
    so a dict mixing ``int`` and ``str`` keys is shown as text too.
    """
    try:
        text: str | None = json.dumps(value, allow_nan=False, sort_keys=True)
    except Exception:  # TypeError, ValueError (NaN, a cycle), RecursionError, a raising method
        text = None
    if text is not None and len(text) <= limit:
        deep = text.count("[") + text.count("{") > MAX_JSON_DEPTH
        try:
            data = json.loads(text)
            if not (deep and nested_deeper_than(data, MAX_JSON_DEPTH)):
                return data
        except RecursionError:
            pass
    shown = text if text is not None else safe_repr(value, limit)
    if len(shown) > limit:
        shown = shown[:limit] + f"… ({len(shown) - limit} more characters)"
    return shown
