"""Publishing: one connection per publishing thread at a time, pooled.

pika is not thread-safe, so a connection is only ever used by one thread at
a time: a publishing thread takes an idle connection from a small pool (or
opens one), publishes, and puts it back. A server that starts a thread per
request (Werkzeug's) thus reuses connections instead of opening one per
request. Every channel has publisher confirms on and every publish is
``mandatory``, so a publish returns only once the broker has the message
in its queue.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

#: Idle publisher connections kept per app (more are closed when handed back).
POOL_SIZE = 8
#: A pooled connection idle longer than this is checked (heartbeats, a broker's close) before reuse.
IDLE_CHECK = 5.0


class PublishFailed(Exception):
    """A publish the broker refused or could not take: ``what`` says which, ``cause`` is pika's error."""

    def __init__(self, what: str, cause: BaseException) -> None:
        super().__init__(what)
        self.what = what
        self.cause = cause


class Publisher:
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


class PublisherPool:
    """The publishing connections of one app in one process (a new pool in a forked child)."""

    def __init__(self, connect: Callable[[], Any], errors: Any) -> None:
        self._connect = connect
        self._errors = errors  # pika.exceptions
        self._lock = threading.Lock()
        self._idle: list[Publisher] = []
        self._open: set[Publisher] = set()  # every open one, idle or in use
        self._declared: set[str] = set()  # queues declared by this process (a declare costs a round trip)
        self._closing = False

    def __len__(self) -> int:
        """Open connections, idle or in use."""
        return len(self._open)

    def publish(self, queue: str, body: bytes, props: Any) -> None:
        """Publish on a pooled connection (a new one if none is idle); once more on a fresh
        connection if a pooled one turns out closed, or if the queue was deleted meanwhile.

        :raises PublishFailed: the broker cannot be reached, or did not take the message.
        """
        errors = self._errors
        for attempt in (1, 2):
            publisher = self._take()
            reused = publisher is not None
            try:
                if publisher is None:
                    publisher = Publisher(self._connect())
                    with self._lock:
                        self._open.add(publisher)
                publisher.publish(queue, body, props, self._declared)
            except errors.UnroutableError as exc:
                self._give_back(publisher)
                if attempt == 1:  # the queue was deleted since this process declared it: declare it again
                    self._declared.discard(queue)
                    continue
                raise PublishFailed(f"the broker did not route the message to queue {queue!r}", exc) from None
            except errors.NackError as exc:
                self._give_back(publisher)
                raise PublishFailed(f"the broker did not take the message for queue {queue!r}", exc) from None
            except errors.ChannelClosedByBroker as exc:  # e.g. a queue declared elsewhere with other arguments
                self._discard(publisher)
                raise PublishFailed(f"the broker refused to publish to queue {queue!r}", exc) from None
            except (errors.AMQPError, OSError) as exc:
                self._discard(publisher)
                if reused and attempt == 1:  # a pooled connection the broker closed meanwhile: once more, anew
                    continue
                raise PublishFailed("the broker cannot be reached", exc) from None
            self._give_back(publisher)
            return
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(self) -> Publisher | None:
        with self._lock:
            while self._idle:
                publisher = self._idle.pop()
                if publisher.usable():
                    return publisher
                self._open.discard(publisher)
                publisher.close()
        return None

    def _give_back(self, publisher: Publisher | None) -> None:
        if publisher is None:
            return
        with self._lock:
            if publisher.pid == os.getpid() and len(self._idle) < POOL_SIZE and not self._closing:
                publisher.idle_since = time.monotonic()
                self._idle.append(publisher)
                return
            self._open.discard(publisher)
        publisher.close()

    def _discard(self, publisher: Publisher | None) -> None:
        if publisher is None:
            return
        with self._lock:
            self._open.discard(publisher)
        publisher.close()

    def close(self) -> None:
        """Close every idle connection; one in use is closed by its thread as it hands it back."""
        with self._lock:
            self._closing = True
            publishers, self._open, self._idle = list(self._open), set(), []
        for publisher in publishers:
            publisher.close(wait=0.5)
