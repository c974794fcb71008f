"""Dead letters: list, show and requeue what a handler gave up on (``<queue>.dead``).

A message whose handler failed for good (its last retry raised, or its body
never parses) is published to ``<queue>.dead`` with the error in its headers
(:mod:`.consumers`). :class:`DeadLetters` lets an operator look at those and
send them back, from ``flask memqueue dead ...``, ``/memqueue/dead/...`` and
the dashboard.

How a dead letter is named. The consumer gives each one a random id in the
``memqueue-dead-id`` header as it dead-letters it; the id is unique per
dead-lettering (the ``message_id`` is not: a message requeued and dead again
would share it with its earlier copy, and another service may set none). A
dead letter put there by an older version or by another tool has no such
header: its ``message_id`` names it then, else a digest of its body and
headers (stable: the broker never changes a message it holds).

How listing works, and what it costs. RabbitMQ's classic queues cannot be
read without taking messages, so a listing takes them with ``basic.get``
(no auto-ack), up to the limit asked for, then gives them all back
unacknowledged by closing its channel: the broker puts each back where it
was. Nothing is consumed; each listed message crosses the network once and
comes back marked ``redelivered``. A listing (and ``show``, which reads
until it finds its id) holds the messages it read for the moment it takes,
so two operators listing at the very same time each see part of the queue.

Requeue is at least once. The message is published back to its queue
(persistent, ``mandatory``, with publisher confirms) and only then is its
dead letter acknowledged: a crash or a lost connection between the two
leaves the dead letter in place and the copy in the queue, so the message
can be handled twice; never is it lost. The copy carries the body and
properties as they were, without the error headers and with its attempts
reset (the handler gets its full retries again), and a
``memqueue-requeued`` header counting the requeues.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import BrokerUnavailable, DeadLetterNotFound
from .wire import ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER, URL_KEY, copy_properties, int_header

if TYPE_CHECKING:
    from .transport import AmqpTransport

#: Header: the dead letter's own id, set as it is dead-lettered (see the module's docstring).
DEAD_ID_HEADER = "memqueue-dead-id"
#: Header: when it was dead-lettered (Unix time, seconds).
DEAD_AT_HEADER = "memqueue-dead-at"
#: Header: the traceback of the last failure (its last characters).
TRACEBACK_HEADER = "memqueue-traceback"
#: Header of a requeued message: how many times it was requeued from its dead-letter queue.
REQUEUED_HEADER = "memqueue-requeued"
#: Headers a requeued copy goes without (what belonged to its death).
_DEATH_HEADERS = (ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER, DEAD_ID_HEADER, DEAD_AT_HEADER, TRACEBACK_HEADER)
#: Dead letters one listing returns at most.
MAX_LIST = 1000
#: Characters of a body a listing shows (``show`` gives it whole).
PREVIEW = 200


def dead_queue(name: str) -> str:
    """The dead-letter queue of the handler's queue ``name``."""
    return name + ".dead"


def dead_letter_id(props: Any, body: bytes) -> str:
    """The id of a dead letter: its ``memqueue-dead-id``, else its ``message_id``, else a digest."""
    headers = props.headers or {}
    given = headers.get(DEAD_ID_HEADER)
    if isinstance(given, bytes):
        given = given.decode("utf-8", "replace")
    if isinstance(given, str) and given:
        return given
    if props.message_id:
        return str(props.message_id)
    digest = hashlib.sha256(body)
    digest.update(json.dumps(headers, sort_keys=True, default=str).encode())
    return "sha256-" + digest.hexdigest()[:24]


def _text(value: Any) -> Any:
    """A header's value as JSON can show it (pika gives bytes for AMQP long strings at times)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class DeadLetter:
    """One message in a dead-letter queue, as read (the broker still holds it)."""

    #: Its id (see the module's docstring): what ``show`` and ``requeue`` take.
    id: str
    #: The handler's queue it died in.
    queue: str
    #: Its ``message_id`` property (None if the publisher set none).
    message_id: str | None
    #: The last error (``memqueue-error``), on one line.
    error: str | None
    #: Handler attempts made before it was dead-lettered.
    attempts: int
    #: When it was published (Unix seconds), if the publisher said.
    published_at: int | None
    #: When it was dead-lettered (Unix seconds), if known.
    dead_at: int | None
    #: Its ``content_type`` property.
    content_type: str | None
    #: The body, as bytes.
    body: bytes
    #: Every header, JSON-safe.
    headers: dict[str, Any]

    def body_text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def to_dict(self, full: bool = False) -> dict[str, Any]:
        """What the routes answer: a preview of the body in a listing, everything with ``full``."""
        text = self.body_text()
        out: dict[str, Any] = {
            "id": self.id, "queue": self.queue, "message_id": self.message_id, "error": self.error,
            "attempts": self.attempts, "published_at": self.published_at, "dead_at": self.dead_at,
            "content_type": self.content_type, "size": len(self.body),
        }
        if full:
            out["body"] = text
            try:
                out["message"] = json.loads(text)
            except ValueError:
                out["message"] = None
            out["headers"] = self.headers
            out["traceback"] = self.headers.get(TRACEBACK_HEADER)
        else:
            out["preview"] = text if len(text) <= PREVIEW else text[:PREVIEW] + "…"
        return out


def _letter(queue: str, props: Any, body: bytes) -> DeadLetter:
    headers = {str(k): _text(v) for k, v in (props.headers or {}).items()}
    error = headers.get(ERROR_HEADER)
    dead_at = headers.get(DEAD_AT_HEADER)
    return DeadLetter(
        id=dead_letter_id(props, body), queue=queue,
        message_id=str(props.message_id) if props.message_id else None,
        error=error if isinstance(error, str) else None,
        attempts=int_header(headers.get(ATTEMPTS_HEADER)),
        published_at=props.timestamp if isinstance(props.timestamp, int) else None,
        dead_at=dead_at if isinstance(dead_at, int) and not isinstance(dead_at, bool) else None,
        content_type=props.content_type, body=body, headers=headers,
    )


class DeadLetters:
    """The dead-letter queues of one app's handlers, over a connection of their own per call."""

    def __init__(self, transport: AmqpTransport) -> None:
        self.transport = transport

    # -- names -------------------------------------------------------------------------
    def queue_names(self) -> list[str]:
        """The handlers' queues (each has its dead-letter queue), sorted."""
        return sorted(self.transport.routes())

    def resolve(self, name: str) -> str:
        """The handler's queue ``name`` names: a queue name, its dead-letter queue's name, or
        the handler's topic (``orders`` for ``memqueue.orders``).

        :raises DeadLetterNotFound: no handler of this app consumes such a queue.
        """
        known = self.transport.routes()
        for candidate in (name, name.removesuffix(".dead")):
            if candidate in known:
                return candidate
        for queue, task in known.items():  # a topic: its handler's queue (the prefix's, or its amqp_queue)
            if (task.topic or "default") == name:
                return queue
        listed = ", ".join(sorted(known)) or "none: register one with @mq.handler"
        raise DeadLetterNotFound(
            f"no handler of this app consumes a RabbitMQ queue {name!r}, so it has no dead letters here;"
            f" the handlers' queues are: {listed}"
        )

    # -- the broker --------------------------------------------------------------------
    @contextmanager
    def _channel(self, what: str) -> Iterator[Any]:
        """A confirmed channel on a new connection, closed at the end (what it took and did not
        acknowledge goes back to its queue); a broker that fails is a BrokerUnavailable."""
        transport = self.transport
        connection = None
        try:
            connection = transport.connect()
            channel = connection.channel()
            channel.confirm_delivery()
            yield channel
        except (transport.errors.AMQPError, OSError) as exc:
            raise BrokerUnavailable(
                f"RabbitMQ at {transport.url} ({URL_KEY}): cannot {what}: {transport.scrub(exc)}"
            ) from None
        finally:
            if connection is not None:
                try:
                    if connection.is_open:
                        connection.close()
                except Exception:  # gone already: the broker requeues what this connection held
                    pass

    @staticmethod
    def _declare(channel: Any, name: str) -> int:
        """Declare ``name`` as the consumers do (durable); the messages ready in it."""
        return int(channel.queue_declare(queue=name, durable=True).method.message_count)

    @staticmethod
    def _read(channel: Any, name: str, at_most: int) -> Iterator[tuple[int, Any, bytes]]:
        """Take up to ``at_most`` messages of ``name`` without acknowledging them (they return
        to their places when the channel closes, or when nacked)."""
        for _ in range(at_most):
            method, props, body = channel.basic_get(name, auto_ack=False)
            if method is None:
                return
            yield method.delivery_tag, props, body

    # -- the verbs ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Dead letters waiting per handler's queue."""
        with self._channel("count the dead letters") as channel:
            return {name: self._declare(channel, dead_queue(name)) for name in self.queue_names()}

    def list(self, name: str, limit: int = 100) -> tuple[int, list[DeadLetter]]:
        """(how many wait, the first ``limit`` of them, oldest first); nothing is consumed."""
        queue = self.resolve(name)
        limit = max(0, min(limit, MAX_LIST))
        with self._channel(f"list the dead letters of {queue!r}") as channel:
            count = self._declare(channel, dead_queue(queue))
            found = [_letter(queue, props, body) for _, props, body in self._read(channel, dead_queue(queue), limit)]
        return count, found

    def get(self, name: str, letter_id: str) -> DeadLetter:
        """The dead letter ``letter_id`` of the queue ``name``; nothing is consumed.

        :raises DeadLetterNotFound: no such queue, or no such dead letter in it (now).
        """
        queue = self.resolve(name)
        with self._channel(f"read the dead letters of {queue!r}") as channel:
            count = self._declare(channel, dead_queue(queue))
            for _, props, body in self._read(channel, dead_queue(queue), count):
                if dead_letter_id(props, body) == letter_id:
                    return _letter(queue, props, body)
        raise self._missing(queue, letter_id)

    def requeue(self, name: str, letter_id: str | None = None) -> int:
        """Send the dead letter ``letter_id`` (None: every one waiting now) back to its queue;
        how many were sent. At least once: each is published with confirms before its dead
        letter is acknowledged.

        :raises DeadLetterNotFound: no such queue, or no such dead letter in it (now).
        """
        queue = self.resolve(name)
        dead = dead_queue(queue)
        sent = 0
        with self._channel(f"requeue the dead letters of {queue!r}") as channel:
            count = self._declare(channel, dead)
            self._declare(channel, queue)
            for tag, props, body in self._read(channel, dead, count):  # those waiting now, not those dying meanwhile
                if letter_id is not None and dead_letter_id(props, body) != letter_id:
                    continue
                channel.basic_publish(exchange="", routing_key=queue, body=body,
                                      properties=requeued_properties(props), mandatory=True)
                channel.basic_ack(delivery_tag=tag)
                sent += 1
                if letter_id is not None:
                    break
        if letter_id is not None and not sent:
            raise self._missing(queue, letter_id)
        return sent

    @staticmethod
    def _missing(queue: str, letter_id: str) -> DeadLetterNotFound:
        return DeadLetterNotFound(
            f"no dead letter {letter_id!r} in {dead_queue(queue)!r} (requeued already, or never there);"
            f" list them with GET /memqueue/dead/{queue} or flask memqueue dead list {queue}"
        )


def requeued_properties(props: Any) -> Any:
    """A dead letter's properties for its way back: its death's headers dropped, requeues counted."""
    headers = {k: v for k, v in (props.headers or {}).items() if k not in _DEATH_HEADERS}
    headers[REQUEUED_HEADER] = int_header(headers.get(REQUEUED_HEADER)) + 1
    return copy_properties(props, headers)


def death_headers(letter_id: str) -> dict[str, Any]:
    """The headers the consumer adds to a message it dead-letters (besides the error's)."""
    return {DEAD_ID_HEADER: letter_id, DEAD_AT_HEADER: int(time.time())}


__all__ = [
    "DEAD_AT_HEADER", "DEAD_ID_HEADER", "REQUEUED_HEADER", "TRACEBACK_HEADER", "DeadLetter", "DeadLetters",
    "dead_letter_id", "dead_queue", "requeued_properties",
]
