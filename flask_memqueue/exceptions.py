"""One tree of exceptions, so ``except MemQueueError`` catches everything we raise."""

from __future__ import annotations

from typing import Any


class MemQueueError(Exception):
    """Base class of every error flask-memqueue raises on purpose."""


class ConfigurationError(MemQueueError, ValueError):
    """A ``MEMQUEUE_*`` config key has a value that cannot work.

    Raised by :meth:`MemQueue.init_app`, so a typo fails at start-up, not at
    the first enqueue in production.
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


class JobFailed(MemQueueError):
    """Raised by :meth:`Job.wait` when the job failed or was cancelled.

    ``job`` is the failed :class:`~flask_memqueue.Job`; its ``error`` and
    ``traceback`` say why.
    """

    def __init__(self, job: Any) -> None:
        self.job = job
        super().__init__(f"job {job.id} ({job.name}) {job.status}: {job.error}")


class StorageError(MemQueueError):
    """The store cannot be reached, read or written (a disk, a file, a server).

    Nothing was changed by the call that raised it; the routes answer 503
    with ``Retry-After``, and the consumer backs off and tries again.
    """


class JournalError(StorageError):
    """The journal file cannot be opened, read or written."""


class BrokerUnavailable(StorageError):
    """RabbitMQ (``MEMQUEUE_AMQP_URL``) cannot be reached, or did not confirm a message.

    Raised by ``produce()``: the message was not published (the routes
    answer 503 with ``Retry-After``). The text names the URL with its
    password replaced by ``***``.
    """


class RedisUnavailable(StorageError):
    """The Redis server cannot be reached or refuses this client (down, unreachable,
    wrong password, TLS handshake failed, no answer in time).

    The message names the server's URL with its password replaced by ``***``,
    and says which of those it was. Nothing the failing call asked for was
    done, except that an enqueue whose answer was lost may still have been
    queued (the command reached Redis, the reply did not come back).
    """


class PostgresUnavailable(StorageError):
    """The PostgreSQL server cannot be reached or refuses this client (down,
    unreachable, wrong password, no answer in time, connection cut).

    The message names the database's URL with its password replaced by ``***``
    and says which it was. A write whose answer was lost may have been done
    (the statement reached the server, the reply did not come back): every
    write of the store is written so that doing it twice changes nothing more.
    """


class SchemaError(StorageError):
    """The database has no memqueue schema, or an older one than this version needs.

    A production app never creates tables by itself: run ``flask memqueue db
    upgrade`` (or paste ``flask memqueue db sql`` into a migration). An app with
    ``app.debug`` or ``app.testing`` set creates them on first use.
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
