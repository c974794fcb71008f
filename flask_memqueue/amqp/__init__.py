"""Messages over RabbitMQ: ``produce()`` publishes, ``@mq.handler`` consumes (``MEMQUEUE_AMQP_URL``).

With ``MEMQUEUE_AMQP_URL`` set, an app's messages leave the job store and go
through a RabbitMQ broker, so they cross process, host and language
boundaries; tasks keep using the store. Everything an app keeps for that
lives in one :class:`~flask_memqueue.amqp.transport.AmqpTransport`, the app's
transport (:mod:`flask_memqueue.runtime.transport`): ``queue.transport``
on its :class:`~flask_memqueue.state.AppQueue`.

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

The package: :mod:`.wire` (names, headers, the JSON body, URL handling),
:mod:`.publishers` (one connection per publishing thread at a time, pooled),
:mod:`.consumers` (the consumer threads and what they do with a delivery),
:mod:`.transport` (the app's side in one process: publish, start, stop, describe).
"""

from __future__ import annotations

from .transport import AmqpHost, AmqpTransport, routes
from .wire import (
    ATTEMPTS_HEADER,
    CONTENT_TYPE,
    ERROR_HEADER,
    QUEUE_HEADER,
    TOPIC_HEADER,
    URL_KEY,
    Published,
    check_queue_name,
    queue_name,
)

#: The name this class had before the transport seam (flask-memqueue 1.0).
AmqpState = AmqpTransport

__all__ = [
    "ATTEMPTS_HEADER", "CONTENT_TYPE", "ERROR_HEADER", "QUEUE_HEADER", "TOPIC_HEADER", "URL_KEY", "AmqpHost",
    "AmqpState", "AmqpTransport", "Published", "check_queue_name", "queue_name", "routes",
]
