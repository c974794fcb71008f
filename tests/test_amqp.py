"""Messages over RabbitMQ, in this process, against a real broker (the ``rabbitmq`` fixture).

A plain pika client stands for "another service" on either side. Every
test uses queues of its own (a random suffix), and waits by polling with a
deadline (``wait_until``), never by sleeping.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, current_app, g
from support.servers.rabbitmq import Broker
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import BrokerUnavailable, ConfigurationError, MemQueue
from flask_memqueue.amqp import ATTEMPTS_HEADER, ERROR_HEADER, QUEUE_HEADER, TOPIC_HEADER, Published

pika = pytest.importorskip("pika")


@pytest.fixture
def qname() -> str:
    return f"t.{secrets.token_hex(4)}"


@pytest.fixture
def pika_channel(rabbitmq: Broker) -> Iterator[Any]:
    connection = rabbitmq.connection()
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def publish_plain(broker: Broker, queue: str, body: bytes, content_type: str | None = "application/json") -> None:
    """What another service does: declare the durable queue, publish persistent JSON."""
    connection = broker.connection()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue=queue, durable=True)
        channel.basic_publish("", queue, body, pika.BasicProperties(content_type=content_type, delivery_mode=2))
    finally:
        connection.close()


def queue_counts(broker: Broker, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``; (0, 0) while nobody declared it."""
    connection = broker.connection()
    try:
        ok = connection.channel().queue_declare(queue=queue, passive=True).method
        return ok.message_count, ok.consumer_count
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return 0, 0
    finally:
        if connection.is_open:
            connection.close()


def get_all(broker: Broker, queue: str) -> list[tuple[Any, bytes]]:
    """Every message waiting in ``queue`` (acknowledged: they are taken)."""
    connection = broker.connection()
    try:
        channel = connection.channel()
        found = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return found
            found.append((props, body))
    finally:
        connection.close()


def delete_queues(broker: Broker, *names: str) -> None:
    connection = broker.connection()
    try:
        for name in names:
            channel = connection.channel()
            channel.queue_delete(name)
    finally:
        connection.close()


@pytest.fixture
def amqp_app(rabbitmq: Broker, make_app: Callable[..., Flask], mq: MemQueue) -> Callable[..., Flask]:
    def make(**config: Any) -> Flask:
        return make_app(MEMQUEUE_AMQP_URL=rabbitmq.url, **config)

    return make


# -- both directions, with a plain pika client on the other side ------------------------------------
def test_a_plain_pika_publisher_reaches_the_handler_once_in_app_context(
    rabbitmq: Broker, amqp_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> None:
    seen: list[tuple[Any, str, bool]] = []
    done = threading.Event()

    @mq.handler("orders", amqp_queue=qname)
    def on_order(message: Any) -> None:
        fresh = not hasattr(g, "touched")
        g.touched = True
        seen.append((message, current_app.name, fresh))
        if len(seen) >= 2:
            done.set()

    app = amqp_app()
    publish_plain(rabbitmq, qname, json.dumps({"order": 1}).encode())
    publish_plain(rabbitmq, qname, b'{"order": 2}', content_type=None)  # JSON without content_type: accepted
    queue = mq.queue_for(app)
    assert queue.ensure_consumer()
    assert done.wait(TIMEOUT), seen
    queue.shutdown(timeout=TIMEOUT)  # the connection closes: anything unacknowledged would go back to the queue
    assert sorted(m["order"] for m, _, _ in seen) == [1, 2]
    assert all(name == "testapp" and fresh for _, name, fresh in seen), seen  # app context, fresh g per message
    assert queue_counts(rabbitmq, qname) == (0, 0)  # both were acknowledged, none handled twice
    assert get_all(rabbitmq, qname + ".dead") == []
    delete_queues(rabbitmq, qname, qname + ".dead")


def test_produce_is_read_by_a_plain_pika_consumer_in_the_documented_format(
    rabbitmq: Broker, amqp_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> None:
    @mq.handler("orders", amqp_queue=qname)
    def on_order(message: Any) -> None:  # consumed by "another service" here
        raise AssertionError("not consumed in this process")

    @mq.handler
    def default(message: Any) -> None:
        raise AssertionError("not consumed in this process")

    prefix = f"p{secrets.token_hex(3)}."
    app = amqp_app(MEMQUEUE_CONSUMER=False, MEMQUEUE_AMQP_QUEUE_PREFIX=prefix)
    with app.app_context():
        sent = mq.produce({"id": 7, "items": ["a", "é"]}, topic="orders")
        plain = mq.produce("hello")
    assert isinstance(sent, Published) and sent.queue == qname and sent.status == "published"
    assert isinstance(plain, Published) and plain.queue == prefix + "default"
    r = app.test_client().post("/memqueue/produce", json={"message": [1, 2], "topic": "orders"})
    assert r.status_code == 202, r.json
    assert r.json["status"] == "published" and r.json["queue"] == qname

    got = get_all(rabbitmq, qname)
    assert [json.loads(body) for _, body in got] == [{"id": 7, "items": ["a", "é"]}, [1, 2]]
    props = got[0][0]
    assert props.content_type == "application/json"
    assert props.delivery_mode == 2  # persistent
    assert props.message_id == sent.id
    assert props.headers == {TOPIC_HEADER: "orders"}
    assert got[1][0].message_id == r.json["id"]
    [(props, body)] = get_all(rabbitmq, prefix + "default")
    assert json.loads(body) == "hello" and props.message_id == plain.id and not props.headers
    delete_queues(rabbitmq, qname, prefix + "default")


# -- failures: retries with delays, then the dead-letter queue ------------------------------------------
def test_a_failing_handler_is_retried_with_its_delays_then_dead_lettered(
    rabbitmq: Broker, amqp_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> None:
    calls: list[float] = []

    @mq.handler("flaky", amqp_queue=qname, retries=2, retry_delay=0.2, retry_backoff=2)
    def flaky(message: Any) -> None:
        calls.append(time.monotonic())
        raise ValueError(f"cannot handle {message!r}")

    app = amqp_app()
    with app.app_context():
        mq.produce({"n": 1}, topic="flaky")
    queue = mq.queue_for(app)
    queue.ensure_consumer()
    wait_until(lambda: queue_counts(rabbitmq, qname + ".dead")[0] == 1)
    queue.shutdown(timeout=TIMEOUT)
    assert len(calls) == 3  # the first attempt and two retries
    # each retry waited at least its delay in its delay queue (a TTL never expires early)
    assert calls[1] - calls[0] >= 0.2 - 0.01 and calls[2] - calls[1] >= 0.4 - 0.01, calls
    [(props, body)] = get_all(rabbitmq, qname + ".dead")
    assert json.loads(body) == {"n": 1}
    assert props.headers[ERROR_HEADER] == "ValueError: cannot handle {'n': 1}"
    assert props.headers[ATTEMPTS_HEADER] == 3 and props.headers[QUEUE_HEADER] == qname
    assert "Traceback" in props.headers["memqueue-traceback"]
    assert queue_counts(rabbitmq, qname)[0] == 0
    delete_queues(rabbitmq, qname, qname + ".dead", qname + ".retry.200ms", qname + ".retry.400ms")


def test_a_retry_waiting_in_its_delay_queue_does_not_block_the_queue(
    rabbitmq: Broker, amqp_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> None:
    handled: list[Any] = []
    good = threading.Event()

    @mq.handler("mixed", amqp_queue=qname, retries=1, retry_delay=600)
    def mixed(message: Any) -> None:
        handled.append(message)
        if message == "bad":
            raise RuntimeError("bad message")
        good.set()

    app = amqp_app()
    with app.app_context():
        mq.produce("bad", topic="mixed")
        mq.produce("good", topic="mixed")
    queue = mq.queue_for(app)
    queue.ensure_consumer()
    assert good.wait(TIMEOUT)
    # "bad" waits ten minutes in its delay queue; "good", behind it, was handled meanwhile
    wait_until(lambda: queue_counts(rabbitmq, qname + ".retry.600000ms")[0] == 1)
    queue.shutdown(timeout=TIMEOUT)
    assert handled == ["bad", "good"]
    [(props, body)] = get_all(rabbitmq, qname + ".retry.600000ms")
    assert body == b'"bad"' and props.headers[ATTEMPTS_HEADER] == 1
    delete_queues(rabbitmq, qname, qname + ".dead", qname + ".retry.600000ms")


def test_a_body_that_is_not_json_goes_to_the_dead_letter_queue_at_once(
    rabbitmq: Broker, amqp_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> None:
    @mq.handler("x", amqp_queue=qname, retries=5)
    def never(message: Any) -> None:
        raise AssertionError("never called")

    app = amqp_app()
    publish_plain(rabbitmq, qname, b"not json", content_type=None)
    publish_plain(rabbitmq, qname, b"plain text", content_type="text/plain")
    queue = mq.queue_for(app)
    queue.ensure_consumer()
    wait_until(lambda: queue_counts(rabbitmq, qname + ".dead")[0] == 2)
    queue.shutdown(timeout=TIMEOUT)
    errors = sorted(props.headers[ERROR_HEADER] for props, _ in get_all(rabbitmq, qname + ".dead"))
    assert errors[0].startswith("content_type 'text/plain' is not JSON"), errors
    assert errors[1].startswith("the body is not UTF-8 JSON"), errors
    delete_queues(rabbitmq, qname, qname + ".dead")


# -- the broker goes away and comes back ---------------------------------------------------------------
@pytest.mark.slow
def test_broker_stopped_and_restarted_mid_run(
    rabbitmq: Broker, amqp_app: Callable[..., Flask], mq: MemQueue, qname: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # pika's own debug lines too: none may carry the password
    handled: dict[int, int] = {}
    lock = threading.Lock()
    first = threading.Event()
    release = threading.Event()

    @mq.handler("jobs", amqp_queue=qname)
    def on_job(message: int) -> None:
        if message == 0:
            first.set()
            assert release.wait(TIMEOUT * 6)  # holds its consumer while the broker goes away
        with lock:
            handled[message] = handled.get(message, 0) + 1

    app = amqp_app(MEMQUEUE_AMQP_THREADS=2, MEMQUEUE_AMQP_PREFETCH=1)
    client = app.test_client()
    confirmed: set[int] = set()
    with app.app_context():
        for n in range(10):
            mq.produce(n, topic="jobs")
            confirmed.add(n)
    queue = mq.queue_for(app)
    queue.ensure_consumer()
    assert first.wait(TIMEOUT)
    transport = queue.transport  # RabbitMQ's: it describes its consumers
    assert transport.info() is not None

    def handled_and_acked() -> int:
        info = transport.info()
        assert info is not None
        return sum(c["handled"] for c in info["consumers"])

    # 1-9 handled and acknowledged by the other thread (its counter moves after the ack went out)
    wait_until(lambda: handled_and_acked() == 9)

    rabbitmq.stop()
    try:
        with app.app_context(), pytest.raises(BrokerUnavailable) as raised:
            mq.produce(99, topic="jobs")
        text = str(raised.value)
        assert f"amqp://memq:***@127.0.0.1:{rabbitmq.port}/%2F" in text and rabbitmq.password not in text
        r = client.post("/memqueue/produce", json={"message": 98, "topic": "jobs"})
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.json
        assert rabbitmq.password not in r.get_data(as_text=True)
        wait_until(lambda: client.get("/memqueue/health").status_code == 503)  # the consumers noticed
        for path in ("/memqueue/stats", "/memqueue/threads", "/memqueue/health"):
            assert rabbitmq.password not in client.get(path).get_data(as_text=True), path
        page = client.get("/memqueue/", headers={"Accept": "text/html"}).get_data(as_text=True)
        assert "RabbitMQ" in page and "Broker unreachable" in page and rabbitmq.password not in page
        release.set()  # the held message is handled; its ack cannot reach the broker
    finally:
        release.set()
        rabbitmq.start()

    def produce_again() -> bool:
        with app.app_context():
            try:
                mq.produce(10, topic="jobs")
            except BrokerUnavailable:
                return False
        return True

    wait_until(produce_again, TIMEOUT * 3)
    confirmed.add(10)
    with app.app_context():
        for n in range(11, 20):
            mq.produce(n, topic="jobs")
            confirmed.add(n)
    wait_until(lambda: set(handled) >= confirmed, TIMEOUT * 3)  # the consumers resumed: every confirmed one
    assert client.get("/memqueue/health").status_code == 200
    queue.shutdown(timeout=TIMEOUT)
    assert set(handled) == confirmed  # at least once each (the held one may come twice: its ack was lost)
    assert all(count == 1 for n, count in handled.items() if n != 0), handled
    outage = [r for r in caplog.records if "cannot be reached by the consumers" in r.getMessage()]
    assert len(outage) == 1, [r.getMessage() for r in outage]  # once per outage, however many threads
    assert len([r for r in caplog.records if "works again" in r.getMessage()]) == 1
    assert all(rabbitmq.password not in r.getMessage() for r in caplog.records)
    assert queue_counts(rabbitmq, qname)[0] == 0
    delete_queues(rabbitmq, qname, qname + ".dead")


# -- configuration and introspection -------------------------------------------------------------------
def test_the_url_is_checked_at_init_app_naming_the_key(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigurationError, match="MEMQUEUE_AMQP_URL") as raised:
        make_app(MEMQUEUE_AMQP_URL="redis://user:secret@host/0")
    assert "secret" not in str(raised.value) and "user:***" in str(raised.value)
    with pytest.raises(ConfigurationError, match="MEMQUEUE_AMQP_URL"):
        make_app("b", MEMQUEUE_AMQP_URL=5672)
    with pytest.raises(ConfigurationError, match="MEMQUEUE_AMQP_QUEUE_PREFIX"):
        make_app("c", MEMQUEUE_AMQP_URL="amqp://localhost", MEMQUEUE_AMQP_QUEUE_PREFIX="amq.x")
    with pytest.raises(ConfigurationError, match="MEMQUEUE_AMQP_THREADS"):
        make_app("d", MEMQUEUE_AMQP_URL="amqp://localhost", MEMQUEUE_AMQP_THREADS=0)


def test_two_handlers_on_one_queue_fail_init_app(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    @mq.handler("a", amqp_queue="shared.q")
    def a(message: Any) -> None: ...

    @mq.handler("b", amqp_queue="shared.q")
    def b(message: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="'shared.q'"):
        make_app(MEMQUEUE_AMQP_URL="amqp://localhost")
    with pytest.raises(ConfigurationError, match="amqp_queue"):
        mq.handler("c", amqp_queue="amq.reserved")


def test_the_consumer_off_turns_amqp_consuming_off_and_info_never_shows_the_password(
    rabbitmq: Broker, amqp_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> None:
    @mq.handler("x", amqp_queue=qname)
    def x(message: Any) -> None: ...

    app = amqp_app(MEMQUEUE_CONSUMER=False)
    queue = mq.queue_for(app)
    assert not queue.ensure_consumer()
    client = app.test_client()
    client.get("/memqueue/health")
    info = client.get("/memqueue/stats").json["amqp"]
    assert info["consumers"] == [] and info["queues"] == [qname]
    assert info["url"] == f"amqp://memq:***@127.0.0.1:{rabbitmq.port}/%2F"


def test_eager_mode_runs_the_handler_inline_without_a_broker(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    got: list[Any] = []

    @mq.handler("x")
    def x(message: Any) -> str:
        got.append(message)
        return "ok"

    app = make_app(MEMQUEUE_AMQP_URL="amqp://nobody:pw@127.0.0.1:1/%2F", MEMQUEUE_EAGER=True)
    with app.app_context():
        job = mq.produce("m", topic="x")
    assert got == ["m"] and not isinstance(job, Published) and job.result == "ok"


def test_produce_to_a_queue_deleted_meanwhile_declares_it_again(
    rabbitmq: Broker, amqp_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> None:
    @mq.handler("x", amqp_queue=qname)
    def x(message: Any) -> None: ...

    app = amqp_app(MEMQUEUE_CONSUMER=False)
    with app.app_context():
        mq.produce(1, topic="x")
        delete_queues(rabbitmq, qname)  # the pooled connection believes it declared it
        mq.produce(2, topic="x")
    assert [json.loads(body) for _, body in get_all(rabbitmq, qname)] == [2]
    delete_queues(rabbitmq, qname)


@pytest.mark.app_config(MEMQUEUE_AMQP_URL="amqp://nobody:pw@127.0.0.1:1/%2F", MEMQUEUE_CONSUMER=False)
def test_memqueue_captured_captures_produce_instead_of_publishing(
    app: Flask, mq: MemQueue, memqueue_captured: Any
) -> None:
    @mq.handler("x", amqp_queue="never.published")
    def x(message: Any) -> None: ...

    with app.app_context():  # no broker listens on port 1: publishing would raise BrokerUnavailable
        sent = mq.produce({"a": 1}, topic="x")
    assert isinstance(sent, Published) and sent.status == "captured" and sent.queue == "never.published"
    r = app.test_client().post("/memqueue/produce", json={"message": 2, "topic": "x"})
    assert r.status_code == 202 and r.json["status"] == "captured", r.json
    assert [entry.args for entry in memqueue_captured.of(x)] == [({"a": 1},), (2,)]
