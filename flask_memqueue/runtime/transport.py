"""How ``produce()`` sends a message to its handler: the seam between the store and a broker.

Two implementations of one small interface, :class:`Transport`, chosen once
at ``init_app`` by :func:`open_transport`:

- :class:`StoreTransport` (no ``MEMQUEUE_AMQP_URL``): a message is a job of
  its handler's task, queued in the app's store like any other;
- :class:`~flask_memqueue.amqp.AmqpTransport` (``MEMQUEUE_AMQP_URL``): the
  message is published to RabbitMQ and consumed by the transport's own
  threads (:mod:`flask_memqueue.amqp`).

The routing rule, "the chosen transport, unless the app is in eager mode"
(which runs a message inline as a job), is
:meth:`AppQueue.route <flask_memqueue.state.AppQueue.route>`. Nothing else
in the package asks which transport an app has: the routes, the CLI and the
pytest plugin ask the transport itself (:meth:`Transport.info`,
:meth:`Transport.health`, :meth:`Transport.summary`, :meth:`Transport.captured`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..amqp import AmqpHost, Published
    from ..amqp.dead import DeadLetters
    from ..job import Job
    from ..options import JobOptions
    from ..task import Task


class Transport(Protocol):
    """What an app's queue needs of the way its messages travel."""

    @property
    def shared(self) -> bool:
        """True if another process can take what this transport carries (a worker then makes sense)."""

    def publish(self, task: Task[..., Any], message: Any) -> Job | Published:
        """Send ``message`` to the handler ``task``: a job in the store, or a broker's receipt.

        :raises QueueClosed: the app's queue was shut down.
        """

    def captured(self, task: Task[..., Any], job: Job) -> Job | Published:
        """What :meth:`publish` returns for a message the ``memqueue_captured`` fixture recorded as ``job``."""

    def start(self) -> None:
        """Start the transport's own consumers, if it has any (idempotent, thread-safe)."""

    def stop(self, timeout: float | None) -> bool:
        """Stop them after the message each holds; False if one was still busy when ``timeout`` ran out."""

    def info(self) -> dict[str, Any] | None:
        """What ``/stats``, ``/threads``, ``/health`` and the dashboard show under ``amqp``
        (None: the messages are jobs of the store). Never a password."""

    def health(self) -> str | None:
        """Why the transport cannot carry messages now (``/health`` answers 503 with it), else None."""

    def summary(self) -> str | None:
        """One line for the worker's banner: where messages go, if not to the store."""

    def dead_letters(self) -> DeadLetters | None:
        """The broker's dead-letter queues of the handlers (None: a message that failed for good
        is a failed job of the store, found and retried as jobs are)."""


class Enqueues(Protocol):
    """What the store transport needs of the app's queue: its enqueue (the front's, looked up per
    message, so that the ``memqueue_captured`` fixture's replacement is honoured)."""

    def enqueue(self, task: Task[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                options: JobOptions | None = None) -> Job: ...

    @property
    def storage_shared(self) -> bool: ...


class StoreTransport:
    """Messages as jobs of their handler's task, in the app's store (the default)."""

    def __init__(self, queue: Enqueues) -> None:
        self.queue = queue

    @property
    def shared(self) -> bool:
        return self.queue.storage_shared

    def publish(self, task: Task[..., Any], message: Any) -> Job:
        return self.queue.enqueue(task, (message,), None)

    def captured(self, task: Task[..., Any], job: Job) -> Job:
        return job

    def start(self) -> None:
        """The store's consumers are the app's pools: nothing of its own to start."""

    def stop(self, timeout: float | None) -> bool:
        return True

    def info(self) -> None:
        return None

    def health(self) -> None:
        return None

    def summary(self) -> None:
        return None

    def dead_letters(self) -> None:
        return None


def open_transport(queue: Enqueues, host: AmqpHost) -> Transport:
    """The transport ``MEMQUEUE_AMQP_URL`` chooses (pika is imported only when a URL is set).

    :raises ConfigurationError: the URL cannot be used, or pika is missing (the message says how to fix it).
    """
    if host.config.amqp_url is None:
        return StoreTransport(queue)
    from ..amqp import AmqpTransport

    return AmqpTransport(host)
