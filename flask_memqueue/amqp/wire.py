"""What travels: queue names, headers, the JSON body, and the broker's URL.

The wire format is the message itself as JSON, no envelope: any AMQP client
can publish to a handler's queue, or read what ``produce()`` sent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..exceptions import ConfigurationError
from ..extras import install_hint

if TYPE_CHECKING:
    from ..task import Task

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
#: Defaults added to the URL's own query options unless it sets them: a publish never
#: blocks for ever on a broker that stopped reading (a memory or disk alarm).
URL_DEFAULTS = {"blocked_connection_timeout": "30", "socket_timeout": "5"}


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


def import_pika() -> Any:
    """pika, or a ConfigurationError saying how to install it."""
    try:
        import pika
    except ImportError:
        raise ConfigurationError(
            f"{URL_KEY} is set, but pika is not installed: {install_hint('amqp')}"
        ) from None
    return pika



def encode(message: Any) -> bytes:
    try:
        return json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a message sent over RabbitMQ must be a JSON value: {exc}") from None


def decode(content_type: str | None, body: bytes) -> Any:
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


def properties(message_id: str, headers: dict[str, Any] | None) -> Any:
    import pika

    return pika.BasicProperties(
        content_type=CONTENT_TYPE, delivery_mode=2, message_id=message_id, timestamp=int(time.time()),
        app_id="flask-memqueue", headers=headers,
    )


def copy_properties(props: Any, headers: dict[str, Any]) -> Any:
    """The delivery's properties with ``headers``, persistent (what a retry or dead letter carries)."""
    import pika

    return pika.BasicProperties(
        content_type=props.content_type, content_encoding=props.content_encoding, headers=headers,
        delivery_mode=2, correlation_id=props.correlation_id, reply_to=props.reply_to,
        message_id=props.message_id, timestamp=props.timestamp, type=props.type, app_id=props.app_id,
    )


def int_header(value: Any) -> int:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, (str, bytes)) and value.isdigit():
        return int(value)
    return 0


def with_defaults(url: str) -> str:
    """``url`` with :data:`URL_DEFAULTS` for the query options it does not set itself."""
    head, _, fragment = url.partition("#")
    base, qmark, query = head.partition("?")
    given = {item.partition("=")[0] for item in query.split("&") if item}
    extra = [f"{k}={v}" for k, v in URL_DEFAULTS.items() if k not in given]
    if not extra:
        return url
    return base + "?" + "&".join([*(item for item in query.split("&") if item), *extra])


def url_secrets(url: str) -> list[str]:
    """The password in ``url``, as written and decoded (what must never be shown)."""
    rest = url.partition("://")[2]
    at = rest.rfind("@")
    if at < 0:
        return []
    _, colon, password = rest[:at].partition(":")
    if not colon or not password:
        return []
    return sorted({password, unquote(password)}, key=len, reverse=True)

