"""One tree of exceptions, so ``except MemQueueError`` catches everything we raise.

The exceptions of one store live with its backend (``JournalError``,
``RedisUnavailable``, ``PostgresUnavailable``, ``SchemaError``...); they are
importable from here too, loaded on first use by
:func:`flask_memqueue.storage.backend_exception` without importing the
store's driver.
"""

from __future__ import annotations

import importlib
from typing import Any


class MemQueueError(Exception):
    """Base class of every error flask-memqueue raises on purpose."""


class ConfigurationError(MemQueueError, ValueError):
    """A ``MEMQUEUE_*`` config key has a value that cannot work.

    Raised by :meth:`MemQueue.init_app`, so a typo fails at start-up, not at
    the first enqueue in production.
    """


class LimitError(ConfigurationError):
    """A rate or concurrency limit of a task (``@mq.task(concurrency=..., rate_limit=...)``)
    that cannot work; the message names the task and the value.

    .. versionadded:: 1.2
    """


class ScheduleError(ConfigurationError):
    """A periodic task's schedule cannot work: an invalid cron expression, a zero
    or negative interval, an unknown time zone, or a cron expression without the
    ``cron`` extra installed.

    Raised by ``@mq.periodic(...)`` (or by :meth:`MemQueue.init_app` for what
    depends on the app, like ``MEMQUEUE_TIMEZONE``), naming the task, so a
    schedule that could never run fails at import, not silently at run time.
    """


class QueueFull(MemQueueError):
    """The queue holds ``MEMQUEUE_MAXSIZE`` waiting jobs already.

    The job was not queued. Retry later, or raise the limit; the HTTP route
    answers 503 with ``Retry-After``.
    """


class QueueClosed(MemQueueError, RuntimeError):
    """:meth:`MemQueue.shutdown` ran for this app; it takes no more jobs."""


class UnknownTaskError(MemQueueError, LookupError):
    """No task is registered under that name."""


class UnknownTopicError(MemQueueError, LookupError):
    """No message handler is registered for that topic."""


class UnknownQueueError(MemQueueError, LookupError):
    """A job was sent to a queue that no process declares (``MEMQUEUE_QUEUES``):
    nobody would ever run it."""


class TimeLimitExceeded(BaseException):  # noqa: N818 - the name the issue and Dramatiq use
    """Raised inside a running job's thread when its time limit (``time_limit=``,
    ``MEMQUEUE_TIME_LIMIT``) has passed: an asynchronous exception, delivered at
    the next Python bytecode the thread runs.

    A :class:`BaseException`, not an :class:`Exception` (as Dramatiq's), so
    ``except Exception`` in job code does not swallow it; for the same reason it
    is outside the :class:`MemQueueError` tree. It cannot interrupt a blocking
    call in C (``time.sleep``, a socket read, a lock wait) until that call
    returns to Python: a job that keeps running past ``MEMQUEUE_GRACE_PERIOD``
    is abandoned (see :doc:`/limits`).
    """


class JobAborted(TimeLimitExceeded):
    """Raised inside a running job's thread when an abort was asked
    (``job.abort()``, ``mq.abort(id)``, ``POST <prefix>/jobs/<id>/abort``) and
    the job did not stop by itself within ``MEMQUEUE_GRACE_PERIOD``.

    A subclass of :class:`TimeLimitExceeded`: the same asynchronous exception,
    so code that cleans up on one cleans up on both. The job ends ``aborted``.
    """


class IsolationError(MemQueueError):
    """An isolated job (``@mq.task(isolated=True)``) could not be run in a child process:
    the app could not be rebuilt there (the message says what to make importable, or to set
    ``MEMQUEUE_ISOLATION_APP``), or its arguments or result are not JSON. The job fails with it
    (its task's retries apply)."""


class ChildProcessDied(IsolationError):
    """The child process running an isolated job died before it answered: killed by a
    signal (``SIGKILL``, ``SIGSEGV``: the message names it), or out of memory. The job
    fails with it; the consumer and the process that runs it live on."""


class IsolatedJobError(MemQueueError):
    """What an isolated job raised in its child process, as the parent sees it.

    The parent raises a subclass named after the child's exception (a job's error reads
    ``ValueError: boom``, as it would in a thread); ``child_type`` is its qualified name
    and ``child_traceback`` the traceback in the child (also a note of the exception).
    """

    #: The module and name of the exception class in the child (``"builtins.ValueError"``).
    child_type: str = ""
    #: The traceback as the child formatted it.
    child_traceback: str = ""


class JobFailed(MemQueueError):
    """Raised by :meth:`Job.wait` when the job failed or was cancelled.

    ``job`` is the failed :class:`~flask_memqueue.Job`; its ``error`` and
    ``traceback`` say why.
    """

    def __init__(self, job: Any) -> None:
        self.job = job
        super().__init__(f"job {job.id} ({job.name}) {job.status}: {job.error}")


class DependencyError(MemQueueError, ValueError):
    """A workflow or ``depends_on=`` names a job it cannot wait on: one this app's queue
    does not hold (it never existed here, or finished long enough ago to be forgotten),
    or a job of another app. Nothing of the workflow was queued."""


class WorkflowsUnsupported(MemQueueError, NotImplementedError):
    """The app's store cannot hold workflows (chains, groups, chords, ``depends_on=``):
    it does not declare ``capabilities.workflows``."""


class StorageError(MemQueueError):
    """The store cannot be reached, read or written (a disk, a file, a server).

    Nothing was changed by the call that raised it; the routes answer 503
    with ``Retry-After``, and the consumer backs off and tries again.
    """


class StorageRefused(StorageError):
    """The store answers but refuses this app: its configuration is wrong (a refused
    password or user name, no password for a server that needs one), and waiting
    will not change that.

    Still a :class:`StorageError` (the routes answer 503); ``flask memqueue
    worker`` says so once and exits with an error instead of retrying as it
    does through an outage.
    """


class BrokerError(MemQueueError):
    """Base class of the errors of a message broker (RabbitMQ, ``MEMQUEUE_AMQP_URL``).

    A broker is no store: what it refuses is a message, never a job record.

    .. versionadded:: 1.1
    """


class BrokerUnavailable(BrokerError, StorageError):
    """RabbitMQ (``MEMQUEUE_AMQP_URL``) cannot be reached, or did not confirm a message.

    Raised by ``produce()``: the message was not published (the routes
    answer 503 with ``Retry-After``). The text names the URL with its
    password replaced by ``***``.

    .. versionchanged:: 1.1
        Also a :class:`BrokerError`. It stays a :class:`StorageError` so
        that code written for 1.0 (``except StorageError`` around
        ``produce()``) keeps catching an outage of the broker.
    """


class DeadLetterNotFound(BrokerError, LookupError):
    """No such dead letter: the queue is no handler's of this app, or the dead letter is not
    (or no longer) in its ``<queue>.dead`` (HTTP 404; ``flask memqueue dead`` says so).

    .. versionadded:: 1.2
    """


class MemQueueWarning(UserWarning):
    """Base class of the warnings flask-memqueue gives (filter them all with it)."""


class MemQueueConfigWarning(MemQueueWarning):
    """A ``MEMQUEUE_*`` key on ``app.config`` changed after ``init_app`` read it.

    The keys are read once, in ``init_app``; a later change does nothing.
    Given at the app's first enqueue, naming the key.
    """


class MainModuleTaskWarning(MemQueueWarning):
    """A task was registered from a script run as ``__main__``.

    Its default name (``__main__.func``) means nothing to another process: a
    worker (``flask memqueue worker``) reading it from the journal cannot
    import it. Give the task a ``name=``, or move it into an importable module.
    """


def one_line(exc: BaseException) -> str:
    """``exc`` as one line of a log or an error: its type and the first line of its
    message, cut to 500 characters (a server's error can be a page long)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if len(first) > 500:
        first = first[:500] + "…"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def __getattr__(name: str) -> Any:
    """The exceptions that live with their store (``JournalError``, ``PostgresUnavailable``...).

    A re-export resolved on first use, by name: this module stays at the bottom
    of the import graph (it imports nothing of the package), and the store's
    driver is not imported (its exceptions module does not import it).
    """
    storage = importlib.import_module(".storage", __package__)
    return storage.backend_exception(name, __name__)
