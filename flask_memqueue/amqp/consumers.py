"""Consuming: ``MEMQUEUE_AMQP_THREADS`` guarded threads per app, and what each does with a delivery.

Each thread has its own connection and channel (pika's rule) and holds at
most ``MEMQUEUE_AMQP_PREFETCH`` unacknowledged messages. A message is
acknowledged after its handler returned, which ran in a fresh app context;
a process that dies before that leaves it unacknowledged, and the broker
delivers it again. A handler that raises is retried per its policy through
a delay queue per delay (``<queue>.retry.<ms>ms``: a queue-wide TTL, then
dead-lettered back to ``<queue>``), so a waiting retry never blocks the
messages behind it; after the last attempt the message goes to
``<queue>.dead`` with the error in its headers. A lost connection is
retried with the consumer's backoff, and the outage logged once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from ..consumer import backoff_delay
from ..exceptions import ConfigurationError, one_line
from .dead import death_headers
from .wire import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    QUEUE_HEADER,
    TRACEBACK_LIMIT,
    copy_properties,
    decode,
    int_header,
)

if TYPE_CHECKING:
    from ..task import Task
    from .transport import AmqpTransport

logger = logging.getLogger("flask_memqueue")

#: Seconds a consumer thread waits for the broker before it looks at its stop flag again
#: (a stop request also wakes it at once).
POLL = 1.0


class AmqpConsumer:
    """One consumer thread of an app: its own connection, every handler's queue, a guarded loop."""

    def __init__(self, state: AmqpTransport, index: int) -> None:
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
        return self.state.should_consume() and self._ident == threading.get_ident()

    def run(self) -> None:
        """The thread's body: connect, consume until stopped; on a lost broker, back off and reconnect."""
        with self._start_lock:  # the starter records our ident under this lock
            if self._ident != threading.get_ident():
                return
        state = self.state
        errors = state.errors
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
                        state.stopping.wait(min(0.1, deadline - time.monotonic()))
                except ConfigurationError as exc:  # a handler registered later clashes: say so, wait, look again
                    logger.error("%s cannot consume: %s", self.name, exc)
                    state.stopping.wait(backoff_delay(10**6))
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
        connection = state.connect()
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
        attempts = int_header(headers.get(ATTEMPTS_HEADER)) + 1
        try:
            message = decode(props.content_type, body)
        except ValueError as exc:  # it will never parse: no retry
            self._dead_letter(channel, name, props, headers, body, attempts - 1, str(exc), None)
            channel.basic_ack(delivery_tag=method.delivery_tag)
            return
        tracing = self.state.tracing()
        if tracing is None:
            error = self._call(task, message, name)
        else:  # a span, the child of the publisher's (flask_memqueue.otel)
            with tracing.message_span(name, props.message_id, task.name, attempts, headers) as span:
                error = self._call(task, message, name)
                tracing.message_outcome(span, error, error is not None and attempts <= task.retries)
        if error is None:
            channel.basic_ack(delivery_tag=method.delivery_tag)
            self.handled += 1
            return
        self.failed += 1
        reason = one_line(error)
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

    def _call(self, task: Task[..., Any], message: Any, name: str) -> Exception | None:
        """Call the handler on ``message`` in a fresh app context; the Exception it raised, or None."""
        app = self.state.host.app
        ctx = app.app_context()
        ctx.push()
        error: Exception | None = None
        try:
            task.func(message)
        except Exception as exc:
            error = exc
        finally:
            try:
                ctx.pop(error)
            except Exception:
                logger.exception("a teardown_appcontext handler failed after a message of queue %r", name)
        return error

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
                              properties=copy_properties(props, headers), mandatory=True)

    def _dead_letter(
        self, channel: Any, name: str, props: Any, headers: dict[str, Any], body: bytes,
        attempts: int, reason: str, tb: str | None,
    ) -> None:
        headers[ATTEMPTS_HEADER] = attempts
        headers[ERROR_HEADER] = reason
        headers[QUEUE_HEADER] = name
        if tb is not None:
            headers["memqueue-traceback"] = tb[-TRACEBACK_LIMIT:]
        headers.update(death_headers(secrets.token_hex(8)))  # its id in the dead-letter queue (.dead)
        channel.basic_publish(exchange="", routing_key=name + ".dead", body=body,
                              properties=copy_properties(props, headers), mandatory=True)
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

