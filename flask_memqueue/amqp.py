"""Messages over RabbitMQ: ``produce()`` publishes, ``@mq.handler`` consumes (``MEMQUEUE_AMQP_URL``).

With ``MEMQUEUE_AMQP_URL`` set, an app's messages leave the job store and go
through a RabbitMQ broker, so they cross process, host and language
boundaries; tasks keep using the store. Everything an app keeps for that
lives in one :class:`AmqpState`, ``queue.amqp`` on the app's
:class:`~flask_memqueue.state.AppQueue`.

Publishing. pika is not thread-safe, so a connection is only ever used by
one thread at a time: a publishing thread takes an idle connection from a
small pool (or opens one), publishes, and puts it back. A server that
starts a thread per request (Werkzeug's) thus reuses connections instead of
opening one per request. Every channel has publisher confirms on and every
publish is ``mandatory``, so ``produce()`` returns only once the broker has
the message in its queue, and raises :class:`~flask_memqueue.exceptions.BrokerUnavailable`
otherwise. Messages are persistent; queues are durable.

Consuming. ``MEMQUEUE_AMQP_THREADS`` guarded threads per app, each with its
own connection and channel (pika's rule), each holding at most
``MEMQUEUE_AMQP_PREFETCH`` unacknowledged messages. A message is
acknowledged after its handler returned, which ran in a fresh app context;
a process that dies before that leaves it unacknowledged, and the broker
delivers it again. A handler that raises is retried per its policy
(``retries``, ``retry_delay``, ``retry_backoff``) through a delay queue
per delay (``<queue>.retry.<ms>ms``: a queue-wide TTL, then dead-lettered
back to ``<queue>``), so a waiting retry never blocks the messages behind
it; the attempts are counted in the ``memqueue-attempts`` header. After
the last attempt the message goes to ``<queue>.dead`` with the error in
the ``memqueue-error`` header. A lost connection is retried with the
consumer's backoff, and the outage logged once.

The wire format is the message itself as JSON, no envelope: any AMQP
client can publish to a handler's queue, or read what ``produce()`` sent.
pika is imported only when a URL is set, so the package needs it only then.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from .consumer import _one_line, backoff_delay
from .exceptions import BrokerUnavailable, ConfigurationError, QueueClosed
from .extras import install_hint
from .storage.base import redact_url

if TYPE_CHECKING:
    from flask import Flask

    from .config import Config
    from .registry import Registry, Task

logger = logging.getLogger("flask_memqueue")

#: The key whose URL this module connects to (error messages name it).
URL_KEY = "MEMQUEUE_AMQP_URL"
#: ``content_type`` of what ``produce()`` publishes; a message without one is read as JSON too.
CONTENT_TYPE = "application/json"
#: Header: the topic the message was produced for (absent for the default topic).
TOPIC_HEADER = "memqueue-topic"
#: Header: how many times a handler was tried on this message (absent: never).
ATTEMPTS_HEADER = "memqueue-attempts"
#: Header of a dead-lettered message: the last error, on one line.
ERROR_HEADER = "memqueue-error"
#: Header of a dead-lettered message: the queue it was consumed from.
QUEUE_HEADER = "memqueue-queue"
#: Characters of a traceback kept in the ``memqueue-traceback`` header of a dead letter
#: (a header must fit into one AMQP frame).
TRACEBACK_LIMIT = 4000
#: Queue names are AMQP short strings: 255 bytes at most.
MAX_QUEUE_NAME = 255
#: Idle publisher connections kept per app (more are closed when handed back).
POOL_SIZE = 8
#: A pooled connection idle longer than this is checked (heartbeats, a broker's close) before reuse.
IDLE_CHECK = 5.0
#: Seconds a consumer thread waits for the broker before it looks at its stop flag again
#: (a stop request also wakes it at once).
POLL = 1.0
#: Defaults added to the URL's own query options unless it sets them: a publish never
#: blocks for ever on a broker that stopped reading (a memory or disk alarm).
URL_DEFAULTS = {"blocked_connection_timeout": "30", "socket_timeout": "5"}

_STATES: weakref.WeakSet[AmqpState] = weakref.WeakSet()


class AmqpHost(Protocol):
    """What the AMQP side needs of its app's queue (:class:`~flask_memqueue.state.AppQueue` is one)."""

    app: Flask
    config: Config
    registry: Registry
    closed: bool
    #: A ``flask memqueue worker`` process: it consumes whatever ``MEMQUEUE_CONSUMER`` says.
    worker: bool


@dataclass(frozen=True)
class Published:
    """What ``produce()`` returns when the message went to RabbitMQ: the broker has it.

    There is no job record to look at later (the message lives in the broker
    until a consumer acknowledges it), so this says where it went.
    """

    #: The message's ``message_id`` property.
    id: str
    #: The topic it was produced for (None: the default handler's).
    topic: str | None
    #: The queue it was published to.
    queue: str
    #: ``"published"``: the broker confirmed it (``/produce`` answers this status);
    #: ``"captured"`` under the ``memqueue_captured`` fixture, which sends nothing.
    status: str = "published"


def queue_name(task: Task[..., Any], prefix: str) -> str:
    """The queue a handler consumes: its ``amqp_queue``, else the prefix and its topic."""
    explicit: str | None = getattr(task, "amqp_queue", None)
    if explicit is not None:
        return explicit
    return prefix + (task.topic if task.topic is not None else "default")


def check_queue_name(name: object, what: str) -> str:
    """``name`` if RabbitMQ takes it as the name of a queue we declare, else a ConfigurationError saying why."""
    if not isinstance(name, str) or not name or name != name.strip():
        raise ConfigurationError(f"{what} must be a non-empty queue name without spaces around it, not {name!r}")
    if len(name.encode()) > MAX_QUEUE_NAME - len(".retry.00000000000ms"):
        raise ConfigurationError(f"{what} is too long for a RabbitMQ queue name (with its retry suffix): {name!r}")
    if name.startswith("amq."):
        raise ConfigurationError(f"{what}: names starting with 'amq.' are reserved by RabbitMQ, not {name!r}")
    return name


def _pika() -> Any:
    try:
        import pika
    except ImportError:
        raise ConfigurationError(
            f"{URL_KEY} is set, but pika is not installed: {install_hint('amqp')}"
        ) from None
    return pika


class AmqpState:
    """One app's RabbitMQ side in one process: publisher pool, consumer threads, counters.

    Made by ``init_app`` when ``MEMQUEUE_AMQP_URL`` is set; reset in a forked
    child (which never touches its parent's sockets), stopped by the queue's
    shutdown.
    """

    def __init__(self, host: AmqpHost) -> None:
        self.host = host
        config = host.config
        url = config.amqp_url
        assert url is not None
        #: The broker's URL as people may see it (password replaced by ``***``).
        self.url = redact_url(url)
        self._secrets = _url_secrets(url)
        pika = _pika()
        self._exceptions = pika.exceptions
        try:
            self._params = pika.URLParameters(_with_defaults(url))
        except Exception as exc:  # pika says ValueError/TypeError for a bad query option
            raise ConfigurationError(
                f"{URL_KEY} = {self.url!r} is not a URL pika can use: {self._scrub(exc)}"
            ) from None
        self.prefix = config.amqp_queue_prefix
        self.routes()  # a clash between two handlers' queues fails init_app, naming both
        self._fresh_process()
        _STATES.add(self)

    def _fresh_process(self) -> None:
        """Everything that belongs to one process (again in a forked child: the parent's
        connections are dropped unused, and closing them is left to the parent)."""
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._pool: list[_Publisher] = []
        self._publishers: set[_Publisher] = set()  # every open one, idle or in use
        self._ids = itertools.count(1)
        self._token = secrets.token_hex(4)
        self._declared: set[str] = set()  # queues declared by this process (a declare costs a round trip)
        #: The consumer threads (their loops), by index.
        self.consumers: list[AmqpConsumer] = []
        self._stop = threading.Event()
        #: True while the consumers cannot reach the broker (logged once per outage).
        self.outage: str | None = None
        #: Messages published (confirmed) by this process.
        self.published = 0
        #: Why the last publish failed, if it did.
        self.publish_error: str | None = None

    # -- naming ------------------------------------------------------------------
    def routes(self) -> dict[str, Task[..., Any]]:
        """Queue name -> handler, for every handler registered; two handlers on one queue is an error."""
        found: dict[str, Task[..., Any]] = {}
        for task in self.host.registry.handlers.values():
            name = check_queue_name(queue_name(task, self.prefix), f"the queue of handler {task.name!r}")
            other = found.get(name)
            if other is not None:
                raise ConfigurationError(
                    f"handlers {other.name!r} and {task.name!r} would both consume the RabbitMQ queue {name!r};"
                    " give one of them another queue with @mq.handler(topic, amqp_queue='...')"
                )
            found[name] = task
        return found

    def _scrub(self, exc: BaseException | str) -> str:
        """An error's text with the URL's secrets replaced (pika's messages may echo parameters)."""
        text = exc if isinstance(exc, str) else _one_line(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _connect(self) -> Any:
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
        body = _encode(message)
        message_id = f"{self._token}-{next(self._ids)}"
        headers = {TOPIC_HEADER: task.topic} if task.topic is not None else None
        props = _properties(message_id, headers)
        errors = self._exceptions
        for attempt in (1, 2):
            publisher = self._take()
            reused = publisher is not None
            try:
                if publisher is None:
                    publisher = _Publisher(self._connect())
                    with self._lock:
                        self._publishers.add(publisher)
                publisher.publish(name, body, props, self._declared)
            except errors.UnroutableError as exc:
                self._give_back(publisher)
                if attempt == 1:  # the queue was deleted since this process declared it: declare it again
                    self._declared.discard(name)
                    continue
                raise self._unavailable(f"the broker did not route the message to queue {name!r}", exc) from None
            except errors.NackError as exc:
                self._give_back(publisher)
                raise self._unavailable(f"the broker did not take the message for queue {name!r}", exc) from None
            except errors.ChannelClosedByBroker as exc:  # e.g. a queue declared elsewhere with other arguments
                self._discard(publisher)
                raise self._unavailable(f"the broker refused to publish to queue {name!r}", exc) from None
            except (errors.AMQPError, OSError) as exc:
                self._discard(publisher)
                if reused and attempt == 1:  # a pooled connection the broker closed meanwhile: once more, anew
                    continue
                raise self._unavailable("the broker cannot be reached", exc) from None
            self._give_back(publisher)
            self.published += 1
            if self.publish_error is not None:
                self.publish_error = None
            return Published(message_id, task.topic, name)
        raise AssertionError("unreachable")  # pragma: no cover

    def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailable:
        reason = self._scrub(exc)
        self.publish_error = reason
        return BrokerUnavailable(f"RabbitMQ at {self.url} ({URL_KEY}): {what}: {reason}")

    def _take(self) -> _Publisher | None:
        with self._lock:
            while self._pool:
                publisher = self._pool.pop()
                if publisher.usable():
                    return publisher
                self._publishers.discard(publisher)
                publisher.close()
        return None

    def _give_back(self, publisher: _Publisher | None) -> None:
        if publisher is None:
            return
        with self._lock:
            if publisher.pid == os.getpid() and len(self._pool) < POOL_SIZE and not self._stop.is_set():
                publisher.idle_since = time.monotonic()
                self._pool.append(publisher)
                return
            self._publishers.discard(publisher)
        publisher.close()

    def _discard(self, publisher: _Publisher | None) -> None:
        if publisher is None:
            return
        with self._lock:
            self._publishers.discard(publisher)
        publisher.close()

    # -- consuming ---------------------------------------------------------------
    def ensure_consumers(self) -> None:
        """Start the consumer threads that do not run (idempotent, thread-safe).

        Called where the queue starts its store consumer (first request, first
        enqueue, ``MEMQUEUE_AUTOSTART``), so the reloader's watcher and CLI
        commands never consume. No threads without handlers, in an
        enqueue-only process (``MEMQUEUE_CONSUMER = False``, unless it is a
        ``flask memqueue worker``), in eager mode or after shutdown.
        """
        config = self.host.config
        if self.host.closed or not (config.consumer or self.host.worker) or config.eager or self._stop.is_set():
            return
        if self.pid != os.getpid():
            self._fresh_process()
        if not self.host.registry.handlers:
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
        self._stop.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for consumer in list(self.consumers):
            consumer.wake()
        stopped = True
        for consumer in list(self.consumers):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            stopped = consumer.join(left) and stopped
        with self._lock:
            publishers, self._publishers, self._pool = list(self._publishers), set(), []
        for publisher in publishers:  # idle ones; one in use is closed by its thread's give_back
            publisher.close(wait=0.5)
        return stopped

    def consumer_exited(self, consumer: AmqpConsumer, crashed: bool) -> None:
        """A consumer thread ended; a crash (a bug, ``SystemExit`` in a handler) starts its successor."""
        if crashed and not self._stop.is_set() and not self.host.closed and self.pid == os.getpid():
            consumer.ensure_started()

    def broker_failed(self, exc: BaseException) -> None:
        """A consumer lost the broker: the first one of an outage logs it."""
        reason = self._scrub(exc)
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
            "publisher_connections": len(self._publishers),
        }


class _Publisher:
    """One publishing connection and its confirmed channel, used by one thread at a time."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self.channel.confirm_delivery()
        self.pid = os.getpid()
        self.idle_since = time.monotonic()
        # Serialises use against close() from the shutting-down thread (never contended otherwise).
        self.lock = threading.Lock()

    def publish(self, queue: str, body: bytes, props: Any, declared: set[str]) -> None:
        with self.lock:
            channel = self.channel
            if queue not in declared:
                channel.queue_declare(queue=queue, durable=True)
                declared.add(queue)
            channel.basic_publish(exchange="", routing_key=queue, body=body, properties=props, mandatory=True)

    def usable(self) -> bool:
        """Still open; after a long idle spell, after reading what the broker sent meanwhile."""
        if self.pid != os.getpid():
            return False
        try:
            if time.monotonic() - self.idle_since > IDLE_CHECK:
                self.connection.process_data_events(0)
            return bool(self.connection.is_open and self.channel.is_open)
        except Exception:
            return False

    def close(self, wait: float | None = None) -> None:
        if self.pid != os.getpid():
            return  # the parent's socket: never touched here
        if not self.lock.acquire(timeout=-1 if wait is None else wait):
            return  # in use by a thread right now: its give_back closes it
        try:
            if self.connection.is_open:
                self.connection.close()
        except Exception:  # already gone: nothing to close cleanly
            pass
        finally:
            self.lock.release()


class AmqpConsumer:
    """One consumer thread of an app: its own connection, every handler's queue, a guarded loop."""

    def __init__(self, state: AmqpState, index: int) -> None:
        self.state = state
        self.index = index
        #: The thread's name: the store consumer's, with ``:amqp-<n>``.
        self.name = f"memqueue-consumer[{state.host.app.name}]:amqp-{index}"
        self._thread: threading.Thread | None = None
        self._ident: int | None = None
        self._start_lock = threading.Lock()
        self._connection: Any = None
        self.connected = False
        #: Messages whose handler returned (acknowledged).
        self.handled = 0
        #: Handler attempts that raised (retried or dead-lettered).
        self.failed = 0
        #: Messages sent to their delay queue for a retry.
        self.retried = 0
        #: Messages sent to ``<queue>.dead``.
        self.dead_lettered = 0
        #: Connections made (1 + reconnects).
        self.connections = 0
        self.failures = 0
        self._delay_queues: set[str] = set()

    # -- the thread ----------------------------------------------------------------
    def ensure_started(self) -> None:
        with self._start_lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                return
            thread = threading.Thread(target=self.run, name=self.name, daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                logger.error("cannot start %s: %s", self.name, exc)
                return
            self._thread = thread
            self._ident = thread.ident

    def wake(self) -> None:
        """End the thread's wait for the broker at once (the one thread-safe call of pika's connection)."""
        connection = self._connection
        if connection is not None:
            try:
                connection.add_callback_threadsafe(lambda: None)
            except Exception:  # closed meanwhile: its loop sees the stop flag anyway
                pass

    def join(self, timeout: float | None) -> bool:
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _should_run(self) -> bool:
        state = self.state
        return not state._stop.is_set() and not state.host.closed and self._ident == threading.get_ident()

    def run(self) -> None:
        """The thread's body: connect, consume until stopped; on a lost broker, back off and reconnect."""
        with self._start_lock:  # the starter records our ident under this lock
            if self._ident != threading.get_ident():
                return
        state = self.state
        errors = state._exceptions
        crashed = False
        try:
            while self._should_run():
                try:
                    self._consume()
                except (errors.AMQPError, OSError) as exc:
                    self.connected = False
                    if not self._should_run():
                        break
                    self.failures += 1
                    state.broker_failed(exc)
                    deadline = time.monotonic() + backoff_delay(self.failures)
                    while self._should_run() and time.monotonic() < deadline:
                        state._stop.wait(min(0.1, deadline - time.monotonic()))
                except ConfigurationError as exc:  # a handler registered later clashes: say so, wait, look again
                    logger.error("%s cannot consume: %s", self.name, exc)
                    state._stop.wait(backoff_delay(10**6))
        except BaseException:
            crashed = True
            logger.critical("%s stopped; a new one is starting", self.name, exc_info=True)
        finally:
            self.connected = False
            self._close()
            state.consumer_exited(self, crashed)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()  # what we took and did not acknowledge goes back to the queue
            except Exception:
                pass

    def _consume(self) -> None:
        state = self.state
        routes = state.routes()
        connection = state._connect()
        self._connection = connection
        try:
            channel = connection.channel()
            channel.confirm_delivery()  # retries and dead letters are confirmed before the ack
            channel.basic_qos(prefetch_count=state.host.config.amqp_prefetch)
            for name, task in routes.items():
                channel.queue_declare(queue=name, durable=True)
                channel.queue_declare(queue=name + ".dead", durable=True)
                channel.basic_consume(queue=name, on_message_callback=self._callback(name, task))
            self.connections += 1
            self.connected = True
            if self.failures:
                self.failures = 0
            state.broker_works()
            while self._should_run():
                connection.process_data_events(time_limit=POLL)
        finally:
            self.connected = False
            self._close()

    # -- one message ---------------------------------------------------------------
    def _callback(self, name: str, task: Task[..., Any]) -> Any:
        def on_message(channel: Any, method: Any, props: Any, body: bytes) -> None:
            self.handle(channel, method, props, body, name, task)

        return on_message

    def handle(self, channel: Any, method: Any, props: Any, body: bytes, name: str, task: Task[..., Any]) -> None:
        """Run the handler on one delivery in a fresh app context; then ack, retry or dead-letter.

        Only an ``Exception`` from the handler counts as a failure. Anything
        else (``SystemExit``, ``KeyboardInterrupt``) ends the thread without
        an ack, so the broker delivers the message again.
        """
        headers = dict(props.headers or {})
        attempts = _int_header(headers.get(ATTEMPTS_HEADER)) + 1
        try:
            message = _decode(props.content_type, body)
        except ValueError as exc:  # it will never parse: no retry
            self._dead_letter(channel, name, props, headers, body, attempts - 1, str(exc), None)
            channel.basic_ack(delivery_tag=method.delivery_tag)
            return
        app = self.state.host.app
        ctx = app.app_context()
        ctx.push()
        error: BaseException | None = None
        try:
            task.func(message)
        except Exception as exc:
            error = exc
        finally:
            try:
                ctx.pop(error)
            except Exception:
                logger.exception("a teardown_appcontext handler failed after a message of queue %r", name)
        if error is None:
            channel.basic_ack(delivery_tag=method.delivery_tag)
            self.handled += 1
            return
        self.failed += 1
        reason = _one_line(error)
        if attempts <= task.retries:
            delay = task.retry_in(attempts)
            logger.warning(
                "handler %s failed on message %s of queue %r (attempt %d of %d), retrying in %.3g s: %s",
                task.name, props.message_id, name, attempts, task.retries + 1, delay, reason,
            )
            headers[ATTEMPTS_HEADER] = attempts
            self._retry(channel, name, props, headers, body, delay)
            self.retried += 1
        else:
            logger.error(
                "handler %s failed on message %s of queue %r after %d attempt(s); it goes to %r: %s",
                task.name, props.message_id, name, attempts, name + ".dead", reason,
                exc_info=error,
            )
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            self._dead_letter(channel, name, props, headers, body, attempts, reason, tb)
        channel.basic_ack(delivery_tag=method.delivery_tag)

    def _retry(self, channel: Any, name: str, props: Any, headers: dict[str, Any], body: bytes, delay: float) -> None:
        """Send a copy to the delay queue for ``delay`` (or straight back to the queue's tail for 0)."""
        ms = round(delay * 1000)
        target = name
        if ms > 0:
            target = f"{name}.retry.{ms}ms"
            if target not in self._delay_queues:
                channel.queue_declare(queue=target, durable=True, arguments={
                    "x-message-ttl": ms, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": name,
                })
                self._delay_queues.add(target)
        channel.basic_publish(exchange="", routing_key=target, body=body,
                              properties=_copy(props, headers), mandatory=True)

    def _dead_letter(
        self, channel: Any, name: str, props: Any, headers: dict[str, Any], body: bytes,
        attempts: int, reason: str, tb: str | None,
    ) -> None:
        headers[ATTEMPTS_HEADER] = attempts
        headers[ERROR_HEADER] = reason
        headers[QUEUE_HEADER] = name
        if tb is not None:
            headers["memqueue-traceback"] = tb[-TRACEBACK_LIMIT:]
        channel.basic_publish(exchange="", routing_key=name + ".dead", body=body,
                              properties=_copy(props, headers), mandatory=True)
        self.dead_lettered += 1

    def info(self) -> dict[str, Any]:
        thread = self._thread
        return {
            "name": self.name,
            "ident": thread.ident if thread is not None and thread.is_alive() else None,
            "alive": self.alive,
            "connected": self.connected,
            "connections": self.connections,
            "handled": self.handled,
            "failed": self.failed,
            "retried": self.retried,
            "dead_lettered": self.dead_lettered,
        }


# -- the wire format -------------------------------------------------------------------
def _encode(message: Any) -> bytes:
    try:
        return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a message sent over RabbitMQ must be a JSON value: {exc}") from None


def _decode(content_type: str | None, body: bytes) -> Any:
    """The message in a body: JSON, whether ``content_type`` says ``application/json`` or nothing.

    :raises ValueError: another content type, or a body that is not UTF-8 JSON.
    """
    if content_type:
        mimetype = content_type.partition(";")[0].strip().lower()
        if mimetype != CONTENT_TYPE and not mimetype.endswith("+json"):
            raise ValueError(f"content_type {content_type!r} is not JSON; send application/json (or none)")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"the body is not UTF-8 JSON: {exc}") from None


def _properties(message_id: str, headers: dict[str, Any] | None) -> Any:
    import pika

    return pika.BasicProperties(
        content_type=CONTENT_TYPE, delivery_mode=2, message_id=message_id, timestamp=int(time.time()),
        app_id="flask-memqueue", headers=headers,
    )


def _copy(props: Any, headers: dict[str, Any]) -> Any:
    """The delivery's properties with ``headers``, persistent (what a retry or dead letter carries)."""
    import pika

    return pika.BasicProperties(
        content_type=props.content_type, content_encoding=props.content_encoding, headers=headers,
        delivery_mode=2, correlation_id=props.correlation_id, reply_to=props.reply_to,
        message_id=props.message_id, timestamp=props.timestamp, type=props.type, app_id=props.app_id,
    )


def _int_header(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, (str, bytes)) and value.isdigit():
        return int(value)
    return 0


def _with_defaults(url: str) -> str:
    """``url`` with :data:`URL_DEFAULTS` for the query options it does not set itself."""
    head, _, fragment = url.partition("#")
    base, qmark, query = head.partition("?")
    given = {item.partition("=")[0] for item in query.split("&") if item}
    extra = [f"{k}={v}" for k, v in URL_DEFAULTS.items() if k not in given]
    if not extra:
        return url
    return base + "?" + "&".join([*(item for item in query.split("&") if item), *extra])


def _url_secrets(url: str) -> list[str]:
    """The password in ``url``, as written and decoded (what must never be shown)."""
    rest = url.partition("://")[2]
    at = rest.rfind("@")
    if at < 0:
        return []
    _, colon, password = rest[:at].partition(":")
    if not colon or not password:
        return []
    return sorted({password, unquote(password)}, key=len, reverse=True)


def _after_fork_in_child() -> None:
    """A forked child starts with no connection and no consumer thread of its parent."""
    for state in list(_STATES):
        state._fresh_process()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
