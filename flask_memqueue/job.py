"""The job record: plain data, no threads and no I/O of its own.

A queued job is the thing that exists in the largest numbers, so it holds only
what it needs while it waits (its ids, its task, its arguments, one
timestamp). Everything that only a started job has (timestamps, result,
error, progress, a waiter's event) lives on a small :class:`_Outcome` made
when the job starts. That keeps a backlog of 100,000 jobs in a few dozen MB.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
from typing import TYPE_CHECKING, Any

from .exceptions import JobFailed

if TYPE_CHECKING:
    from .registry import Task
    from .state import AppQueue


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
    """What a job gains once it is scheduled, started or finished."""

    __slots__ = (
        "started_at",
        "finished_at",
        "result",
        "error",
        "traceback",
        "progress",
        "message",
        "eta",
    )

    def __init__(self) -> None:
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.result: Any = None
        self.error: str | None = None
        self.traceback: str | None = None
        self.progress: float | None = None
        self.message: str | None = None
        self.eta: float | None = None


_NO_OUTCOME = _Outcome()  # read-only stand-in for a job that has none yet


class Job:
    """One call of a task (or one message for a handler), and what became of it.

    Jobs are made by :meth:`MemQueue.enqueue` and friends, never by hand.
    Their fields are written by the consumer thread; read them freely, and
    call :meth:`wait` to block until the job is done.
    """

    __slots__ = ("_id", "_queue", "task", "args", "kwargs", "status", "enqueued_at", "attempts", "_out")

    def __init__(
        self,
        queue: AppQueue,
        id: int | str,
        task: Task[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        enqueued_at: float,
        status: JobStatus = JobStatus.QUEUED,
    ) -> None:
        self._id = id
        self._queue = queue
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
        #: How many times the job has been started (retries included).
        self.attempts = 0
        self._out: _Outcome | None = None

    # -- identity --------------------------------------------------------
    @property
    def id(self) -> str:
        """A string unique across apps and processes: ``"<queue token>-<number>"``."""
        i = self._id
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
    def result(self) -> Any:
        """What the task returned, once it succeeded."""
        return (self._out or _NO_OUTCOME).result

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
        """Unix time a scheduled job (or a retry) becomes due."""
        return (self._out or _NO_OUTCOME).eta

    @property
    def finished(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.status in _FINISHED

    # -- behaviour -------------------------------------------------------
    def set_progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far a running job is (0..1), with an optional message.

        Call it as ``current_job.set_progress(0.5, "half way")`` from inside
        the job. Values are clamped to 0..1.
        """
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            raise TypeError(f"progress must be a number between 0 and 1, not {fraction!r}") from None
        if value != value:  # NaN
            raise ValueError("progress must be a number between 0 and 1, not NaN")
        out = self._outcome()
        out.progress = min(1.0, max(0.0, value))
        out.message = None if message is None else str(message)

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the job finishes and return its result.

        :raises JobFailed: the job failed or was cancelled.
        :raises TimeoutError: it did not finish within ``timeout`` seconds.
        """
        if not self.finished:
            event = self._queue._waiter(self)
            if event is not None and not event.wait(timeout):
                raise TimeoutError(f"job {self.id} ({self.name}) did not finish within {timeout} s")
            if not self.finished:
                # The waiter fired for the job, but another object ran it: with a
                # journal, get_job() makes a new object per read and the consumer
                # (here or in another process) runs its own. Read the outcome.
                self._queue.storage.refresh(self)
        if self.status is JobStatus.SUCCEEDED:
            return self.result
        raise JobFailed(self)

    def _reset_for_requeue(self) -> None:
        """Forget the last run, so a retried job starts as if new (status QUEUED).

        Shared by every store's ``requeue``; the caller holds its lock.
        """
        self.status = JobStatus.QUEUED
        self.attempts = 0
        out = self._out
        if out is not None:
            out.error = out.traceback = out.result = out.finished_at = out.started_at = None
            out.progress = out.message = out.eta = None

    def cancel(self) -> bool:
        """Cancel the job if it is still waiting. True if it was; False if it
        is running or finished already (a running job cannot be interrupted)."""
        return self._queue.cancel(self)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of everything known about the job.

        Arguments and results that JSON cannot hold are shown by their
        ``repr``, cut to :data:`REPR_LIMIT` characters.
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
            "status": self.status.value,
            "args": json_safe(list(self.args)),
            "kwargs": json_safe(self.kwargs or {}),
            "result": json_safe(out.result),
            "error": out.error,
            "traceback": out.traceback,
            "attempts": self.attempts,
            "retries": self.task.retries,
            "progress": out.progress,
            "progress_message": out.message,
            "enqueued_at": isotime(self.enqueued_at),
            "eta": isotime(out.eta),
            "started_at": isotime(started),
            "finished_at": isotime(finished),
            "duration": None if duration is None else round(duration, 6),
        }

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name} {self.status.value}>"


def _now() -> float:
    import time

    return time.time()


def isotime(ts: float | None) -> str | None:
    """A Unix time as an ISO 8601 string in UTC, or None."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).isoformat()


def json_safe(value: Any, limit: int = REPR_LIMIT) -> Any:
    """``value`` if JSON can hold it (and it is short enough), else a cut repr.

    The dashboard and ``/jobs`` show arguments of any type; this keeps them
    from failing on a ``datetime`` or a 10 MB string.
    """
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = None
    if text is not None and len(text) <= limit:
        return value
    shown = text if text is not None else repr(value)
    if len(shown) > limit:
        shown = shown[:limit] + f"… ({len(shown) - limit} more characters)"
    return shown
