"""One app's RabbitMQ side in one process: the transport of its messages (``MEMQUEUE_AMQP_URL``).

:class:`AmqpTransport` is the second implementation of
:class:`~flask_memqueue.runtime.transport.Transport`: it publishes through a
:class:`~.publishers.PublisherPool`, runs ``MEMQUEUE_AMQP_THREADS``
:class:`~.consumers.AmqpConsumer` threads, and says how it fares for
``/stats``, ``/threads``, ``/health`` and the dashboard. Made by
``init_app``; reset in a forked child (which never touches its parent's
sockets); stopped by the queue's shutdown.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol

from ..consumer import backoff_delay
from ..exceptions import BrokerUnavailable, ConfigurationError, QueueClosed, one_line
from ..otel import tracing_of
from ..storage.base import redact_url
from .consumers import AmqpConsumer
from .dead import DeadLetters
from .publishers import PublisherPool, PublishFailed
from .wire import (
    TOPIC_HEADER,
    URL_KEY,
    Published,
    check_queue_name,
    encode,
    import_pika,
    properties,
    queue_name,
    url_secrets,
    with_defaults,
)

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..job import Job
    from ..otel import Tracing
    from ..registry import Registry
    from ..task import Task

logger = logging.getLogger("flask_memqueue")

_TRANSPORTS: weakref.WeakSet[AmqpTransport] = weakref.WeakSet()


class AmqpHost(Protocol):
    """What the AMQP side needs of its app's queue (:class:`~flask_memqueue.state.AppQueue` is one)."""

    app: Flask
    config: Config
    registry: Registry

    @property
    def closed(self) -> bool: ...

    #: A ``flask memqueue worker`` process: it consumes whatever ``MEMQUEUE_CONSUMER`` says.
    @property
    def worker(self) -> bool: ...


def routes(registry: Registry, prefix: str) -> dict[str, Task[..., Any]]:
    """Queue name -> handler, for every handler registered; two handlers on one queue is an error."""
    found: dict[str, Task[..., Any]] = {}
    for task in registry.handlers.values():
        name = check_queue_name(queue_name(task, prefix), f"the queue of handler {task.name!r}")
        other = found.get(name)
        if other is not None:
            raise ConfigurationError(
                f"handlers {other.name!r} and {task.name!r} would both consume the RabbitMQ queue {name!r};"
                " give one of them another queue with @mq.handler(topic, amqp_queue='...')"
            )
        found[name] = task
    return found


class AmqpTransport:
    """One app's RabbitMQ side in one process: publisher pool, consumer threads, counters."""

    #: Other processes (workers, other languages) consume what it publishes.
    shared = True

    def __init__(self, host: AmqpHost) -> None:
        self.host = host
        self._tracing: Tracing | None = None
        self._tracing_seen = -1
        config = host.config
        url = config.amqp_url
        assert url is not None
        #: The broker's URL as people may see it (password replaced by ``***``).
        self.url = redact_url(url)
        self._secrets = url_secrets(url)
        pika = import_pika()
        #: pika's exceptions (what a publish or a consumer catches).
        self.errors = pika.exceptions
        try:
            self._params = pika.URLParameters(with_defaults(url))
        except Exception as exc:  # pika says ValueError/TypeError for a bad query option
            raise ConfigurationError(
                f"{URL_KEY} = {self.url!r} is not a URL pika can use: {self.scrub(exc)}"
            ) from None
        self.prefix = config.amqp_queue_prefix
        self.routes()  # a clash between two handlers' queues fails init_app, naming both
        self._fresh_process()
        _TRANSPORTS.add(self)

    def _fresh_process(self) -> None:
        """Everything that belongs to one process (again in a forked child: the parent's
        connections are dropped unused, and closing them is left to the parent)."""
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._pool = PublisherPool(self.connect, self.errors)
        self._ids = itertools.count(1)
        self._token = secrets.token_hex(4)
        #: The consumer threads (their loops), by index.
        self.consumers: list[AmqpConsumer] = []
        #: Set by :meth:`stop`: the consumers end, publishing connections are not kept.
        self.stopping = threading.Event()
        #: True while the consumers cannot reach the broker (logged once per outage).
        self.outage: str | None = None
        #: Messages published (confirmed) by this process.
        self.published = 0
        #: Why the last publish failed, if it did.
        self.publish_error: str | None = None

    def routes(self) -> dict[str, Task[..., Any]]:
        """Queue name -> handler, for every handler registered (see :func:`routes`)."""
        return routes(self.host.registry, self.prefix)

    def scrub(self, exc: BaseException | str) -> str:
        """An error's text with the URL's secrets replaced (pika's messages may echo parameters)."""
        text = exc if isinstance(exc, str) else one_line(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def connect(self) -> Any:
        """A new blocking connection to the broker."""
        import pika

        return pika.BlockingConnection(self._params)

    # -- publishing --------------------------------------------------------------
    def publish(self, task: Task[..., Any], message: Any) -> Published:
        """Publish ``message`` to the queue of handler ``task``; return once the broker confirmed it.

        :raises BrokerUnavailable: the broker cannot be reached, or refused the message.
        :raises TypeError: the message is not a JSON value.
        :raises QueueClosed: the app's queue was shut down.
        """
        if self.host.closed:
            raise QueueClosed(f"the queue of app {self.host.app.name!r} was shut down; it takes no more messages")
        if self.pid != os.getpid():  # a fork the hook did not see (it always runs where fork() does)
            self._fresh_process()
        name = queue_name(task, self.prefix)
        body = encode(message)
        message_id = f"{self._token}-{next(self._ids)}"
        headers = {TOPIC_HEADER: task.topic} if task.topic is not None else None
        tracing = self.tracing()
        if tracing is not None:  # the trace goes on in the handler's process (flask_memqueue.otel)
            headers = {**(headers or {}), **tracing.message_headers()} or None
        try:
            self._pool.publish(name, body, properties(message_id, headers))
        except PublishFailed as failed:
            reason = self.scrub(failed.cause)
            self.publish_error = reason
            raise BrokerUnavailable(f"RabbitMQ at {self.url} ({URL_KEY}): {failed.what}: {reason}") from None
        self.published += 1
        if self.publish_error is not None:
            self.publish_error = None
        return Published(message_id, task.topic, name)

    def tracing(self) -> Tracing | None:
        """The app's OpenTelemetry hook, if installed (looked up again when the hooks change)."""
        hooks = getattr(self.host, "hooks", None)
        if hooks is None:
            return None
        count = len(hooks)
        if self._tracing_seen != count:
            self._tracing, self._tracing_seen = tracing_of(hooks), count
        return self._tracing

    def captured(self, task: Task[..., Any], job: Job) -> Published:
        """The receipt of a message the ``memqueue_captured`` fixture recorded (nothing was sent)."""
        return Published(job.id, task.topic, queue_name(task, self.prefix), status="captured")

    # -- consuming ---------------------------------------------------------------
    def start(self) -> None:
        """Start the consumer threads that do not run (idempotent, thread-safe).

        Called where the queue starts its store consumer (first request, first
        enqueue, ``MEMQUEUE_AUTOSTART``), so the reloader's watcher and CLI
        commands never consume. No threads without handlers, in an
        enqueue-only process (``MEMQUEUE_CONSUMER = False``, unless it is a
        ``flask memqueue worker``), in eager mode or after shutdown.
        """
        host = self.host
        config = host.config
        if host.closed or not (config.consumer or host.worker) or config.eager or self.stopping.is_set():
            return
        if self.pid != os.getpid():
            self._fresh_process()
        if not host.registry.handlers:
            return
        with self._lock:
            while len(self.consumers) < config.amqp_threads:
                self.consumers.append(AmqpConsumer(self, len(self.consumers) + 1))
            consumers = list(self.consumers)
        for consumer in consumers:
            consumer.ensure_started()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the consumers after the message each holds, close every connection.

        A message taken but not handled yet goes back to the broker with
        the connection (unacknowledged). Returns False if a consumer was
        still handling a message when ``timeout`` ran out.
        """
        self.stopping.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for consumer in list(self.consumers):
            consumer.wake()
        stopped = True
        for consumer in list(self.consumers):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            stopped = consumer.join(left) and stopped
        self._pool.close()
        return stopped

    def should_consume(self) -> bool:
        """False once the transport stops or the app's queue closed (the consumers' loops end)."""
        return not self.stopping.is_set() and not self.host.closed

    def consumer_exited(self, consumer: AmqpConsumer, crashed: bool) -> None:
        """A consumer thread ended; a crash (a bug, ``SystemExit`` in a handler) starts its successor."""
        if crashed and self.should_consume() and self.pid == os.getpid():
            consumer.ensure_started()

    def broker_failed(self, exc: BaseException) -> None:
        """A consumer lost the broker: the first one of an outage logs it."""
        reason = self.scrub(exc)
        with self._lock:
            first = self.outage is None
            self.outage = reason
        if first:
            logger.error(
                "RabbitMQ at %s (%s) cannot be reached by the consumers of %r: %s. They reconnect with backoff"
                " (at most every %.3g s) and log again when it works",
                self.url, URL_KEY, self.host.app.name, reason, backoff_delay(10**6),
            )

    def broker_works(self) -> None:
        with self._lock:
            was, self.outage = self.outage, None
        if was is not None:
            logger.warning("RabbitMQ at %s works again for the consumers of %r (was: %s)",
                           self.url, self.host.app.name, was)

    # -- introspection -----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """What ``/stats``, ``/threads``, ``/health`` and the dashboard show: never a password."""
        consumers = [c.info() for c in list(self.consumers)]
        try:
            queues = sorted(self.routes())
        except ConfigurationError:  # a clash registered after init_app: the consumers log it
            queues = []
        return {
            "url": self.url,
            "queues": queues,
            "consumers": consumers,
            "connected": sum(1 for c in consumers if c["connected"]),
            "outage": self.outage,
            "published": self.published,
            "publish_error": self.publish_error,
            "publisher_connections": len(self._pool),
        }

    def health(self) -> str | None:
        """Why ``/health`` answers 503: the consumers cannot reach the broker."""
        if self.outage is None:
            return None
        return f"RabbitMQ ({self.url}) cannot be reached by the consumers: {self.outage}"

    def summary(self) -> str:
        return f"RabbitMQ {self.url} for the handlers' messages"

    def dead_letters(self) -> DeadLetters:
        """The handlers' dead-letter queues (:mod:`.dead`): list, show, requeue."""
        return DeadLetters(self)


def _after_fork_in_child() -> None:
    """A forked child starts with no connection and no consumer thread of its parent."""
    for transport in list(_TRANSPORTS):
        transport._fresh_process()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
