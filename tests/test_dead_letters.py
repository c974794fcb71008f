"""RabbitMQ dead letters: list, show and requeue over the CLI, HTTP and the dashboard (Chromium).

Against the session's real rabbitmq-server (the ``rabbitmq`` fixture). A handler
with no retries fails for good on messages that say so, which lands them in
``<queue>.dead``; each test uses queues of its own and waits by polling with
a deadline, never by sleeping.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from support.net import free_port
from support.servers.rabbitmq import Broker
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import DeadLetterNotFound, MemQueue
from flask_memqueue.amqp.dead import DEAD_ID_HEADER, REQUEUED_HEADER

pika = pytest.importorskip("pika")


@dataclass
class Handled:
    """What the handler saw: every message it was given, and the ones it handled."""

    seen: list[Any] = field(default_factory=list)
    ok: list[Any] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def qname() -> str:
    return f"t.dead.{secrets.token_hex(4)}"


def dead_count(broker: Broker, queue: str) -> int:
    connection = broker.connection()
    try:
        return int(connection.channel().queue_declare(queue=queue, durable=True).method.message_count)
    finally:
        connection.close()


def delete_queues(broker: Broker, *names: str) -> None:
    connection = broker.connection()
    try:
        for name in names:
            connection.channel().queue_delete(name)
    finally:
        connection.close()


@pytest.fixture
def dead_app(
    rabbitmq: Broker, make_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> Iterator[tuple[Flask, Handled]]:
    """An app whose handler on ``qname`` (no retries) fails on the messages in ``handled.fail``."""
    handled = Handled()

    @mq.handler("orders", amqp_queue=qname, retries=0)
    def on_order(message: Any) -> None:
        with handled.lock:
            handled.seen.append(message)
            if message["n"] in handled.fail:
                raise ValueError(f"cannot handle order {message['n']}")
            handled.ok.append(message)

    app = make_app(MEMQUEUE_AMQP_URL=rabbitmq.url)
    yield app, handled
    mq.queue_for(app).shutdown(timeout=TIMEOUT)
    delete_queues(rabbitmq, qname, qname + ".dead")


def kill_three(app: Flask, mq: MemQueue, handled: Handled, rabbitmq: Broker, qname: str) -> None:
    """Produce a, b, c (failing for good) and d (fine); wait until the three are dead letters."""
    handled.fail |= {"a", "b", "c"}
    with app.app_context():
        for n in "abcd":
            mq.produce({"n": n}, topic="orders")
    mq.queue_for(app).ensure_consumer()
    wait_until(lambda: dead_count(rabbitmq, qname + ".dead") == 3 and len(handled.ok) == 1)


def ok_count(handled: Handled, n: str) -> int:
    with handled.lock:
        return sum(1 for m in handled.ok if m["n"] == n)


# -- what lands there, and listing consumes nothing ------------------------------------------------------
def test_a_message_failing_for_good_is_a_dead_letter_listed_without_being_consumed(
    rabbitmq: Broker, dead_app: tuple[Flask, Handled], mq: MemQueue, qname: str
) -> None:
    app, handled = dead_app
    kill_three(app, mq, handled, rabbitmq, qname)
    dead = mq.queue_for(app).transport.dead_letters()
    assert dead is not None
    count, letters = dead.list(qname)
    assert count == 3
    assert [json.loads(letter.body) for letter in letters] == [{"n": "a"}, {"n": "b"}, {"n": "c"}]  # oldest first
    assert [letter.error for letter in letters] == [f"ValueError: cannot handle order {n}" for n in "abc"]
    assert all(letter.attempts == 1 and letter.queue == qname for letter in letters)
    assert len({letter.id for letter in letters}) == 3
    assert all(letter.headers[DEAD_ID_HEADER] == letter.id for letter in letters)
    # listing again (by topic, or by the dead queue's name) shows the same, and the broker still holds them all
    for name in ("orders", qname + ".dead", qname):
        again = dead.list(name)
        assert again[0] == 3 and [x.id for x in again[1]] == [x.id for x in letters]
    assert dead_count(rabbitmq, qname + ".dead") == 3
    assert dead.list(qname, limit=2)[0] == 3 and len(dead.list(qname, limit=2)[1]) == 2
    shown = dead.get(qname, letters[1].id)
    assert shown == letters[1] and "Traceback" in shown.to_dict(full=True)["traceback"]
    assert dead.counts() == {qname: 3}
    with pytest.raises(DeadLetterNotFound, match="no dead letter 'nope'"):
        dead.get(qname, "nope")
    with pytest.raises(DeadLetterNotFound, match="no handler of this app consumes a RabbitMQ queue 'other'"):
        dead.list("other")
    assert dead_count(rabbitmq, qname + ".dead") == 3


# -- requeue: handled once; a requeued message that dies again is a new dead letter -------------------------
def test_requeue_one_is_handled_once_and_a_second_death_is_a_new_dead_letter(
    rabbitmq: Broker, dead_app: tuple[Flask, Handled], mq: MemQueue, qname: str
) -> None:
    app, handled = dead_app
    kill_three(app, mq, handled, rabbitmq, qname)
    dead = mq.queue_for(app).transport.dead_letters()
    assert dead is not None
    a, b, _ = dead.list(qname)[1]
    handled.fail.discard("b")
    assert dead.requeue(qname, b.id) == 1
    wait_until(lambda: ok_count(handled, "b") == 1)
    assert [x.id for x in dead.list(qname)[1]] == [a.id, _.id]
    with pytest.raises(DeadLetterNotFound):
        dead.requeue(qname, b.id)  # gone from the dead-letter queue: requeued once only
    assert dead.requeue(qname, a.id) == 1  # "a" still fails: it dies again, with a new id
    wait_until(lambda: dead_count(rabbitmq, qname + ".dead") == 2 and sum(m["n"] == "a" for m in handled.seen) == 2)
    letters = dead.list(qname)[1]
    again = next(x for x in letters if json.loads(x.body) == {"n": "a"})
    assert again.id != a.id and again.headers[REQUEUED_HEADER] == 1 and again.attempts == 1
    mq.queue_for(app).shutdown(timeout=TIMEOUT)
    assert ok_count(handled, "b") == 1 and ok_count(handled, "d") == 1


# -- HTTP ------------------------------------------------------------------------------------------------
def test_the_json_routes_list_show_and_requeue_with_json_errors(
    rabbitmq: Broker, dead_app: tuple[Flask, Handled], mq: MemQueue, qname: str
) -> None:
    app, handled = dead_app
    kill_three(app, mq, handled, rabbitmq, qname)
    client = app.test_client()
    r = client.get("/memqueue/dead")
    assert r.status_code == 200 and r.json == {"queues": [{"queue": qname, "dead_queue": qname + ".dead", "count": 3}]}
    r = client.get(f"/memqueue/dead/{qname}?limit=2")
    assert r.status_code == 200 and r.json is not None
    assert r.json["count"] == 3 and r.json["queue"] == qname and len(r.json["messages"]) == 2
    first = r.json["messages"][0]
    assert first["preview"] == '{"n":"a"}' and first["error"] == "ValueError: cannot handle order a"
    r = client.get(f"/memqueue/dead/orders/{first['id']}")
    assert r.status_code == 200 and r.json is not None
    assert r.json["message"] == {"n": "a"} and "Traceback" in r.json["traceback"] and r.json["id"] == first["id"]
    for path, method in [(f"/memqueue/dead/{qname}/nope", "get"), ("/memqueue/dead/elsewhere", "get"),
                         (f"/memqueue/dead/{qname}/nope/requeue", "post"),
                         ("/memqueue/dead/elsewhere/requeue", "post")]:
        r = getattr(client, method)(path)
        assert r.status_code == 404 and r.is_json and r.json is not None and r.json["status"] == 404, path
    assert client.get(f"/memqueue/dead/{qname}?limit=0").status_code == 400
    handled.fail.clear()
    r = client.post(f"/memqueue/dead/{qname}/{first['id']}/requeue")
    assert r.status_code == 200 and r.json == {"queue": qname, "id": first["id"], "requeued": 1}
    r = client.post("/memqueue/dead/orders/requeue")
    assert r.status_code == 200 and r.json == {"queue": qname, "requeued": 2}
    wait_until(lambda: all(ok_count(handled, n) == 1 for n in "abcd"))
    assert client.get(f"/memqueue/dead/{qname}").json == {"queue": qname, "dead_queue": qname + ".dead",
                                                          "count": 0, "messages": []}
    mq.queue_for(app).shutdown(timeout=TIMEOUT)
    assert all(ok_count(handled, n) == 1 for n in "abcd")


def test_the_routes_need_the_token_in_production(
    rabbitmq: Broker, make_app: Callable[..., Flask], mq: MemQueue, qname: str
) -> None:
    @mq.handler("orders", amqp_queue=qname)
    def on_order(message: Any) -> None: ...

    app = make_app(testing=False, MEMQUEUE_AMQP_URL=rabbitmq.url, MEMQUEUE_TOKEN="s3cret-token-0123456789",
                   SECRET_KEY="k")
    client = app.test_client()
    assert client.get("/memqueue/dead").status_code == 401
    assert client.post(f"/memqueue/dead/{qname}/requeue").status_code == 401
    r = client.get("/memqueue/dead", headers={"Authorization": "Bearer s3cret-token-0123456789"})
    assert r.status_code == 200 and r.json == {"queues": [{"queue": qname, "dead_queue": qname + ".dead", "count": 0}]}
    delete_queues(rabbitmq, qname + ".dead")


def test_an_app_without_rabbitmq_has_no_dead_letters_and_says_where_failed_messages_are(
    make_app: Callable[..., Flask]
) -> None:
    app = make_app()
    r = app.test_client().get("/memqueue/dead")
    assert r.status_code == 404 and r.json is not None and "MEMQUEUE_AMQP_URL is not set" in r.json["error"]
    out = app.test_cli_runner().invoke(args=["memqueue", "dead", "list", "orders"])
    assert out.exit_code == 1 and "MEMQUEUE_AMQP_URL is not set" in out.output


def test_a_broker_that_is_down_is_a_503_and_a_cli_error_without_the_password(
    make_app: Callable[..., Flask], mq: MemQueue
) -> None:
    @mq.handler("orders")
    def on_order(message: Any) -> None: ...

    password = "pw-" + secrets.token_hex(6)
    app = make_app(MEMQUEUE_AMQP_URL=f"amqp://memq:{password}@127.0.0.1:{free_port()}/%2F?connection_attempts=1")
    client = app.test_client()
    for path, method in [("/memqueue/dead", "get"), ("/memqueue/dead/orders", "get"),
                         ("/memqueue/dead/orders/x", "get"), ("/memqueue/dead/orders/requeue", "post")]:
        r = getattr(client, method)(path)
        text = r.get_data(as_text=True)
        assert r.status_code == 503 and r.is_json and "memq:***@127.0.0.1" in text and password not in text, text
    page = client.get("/memqueue/ui/dead")
    assert page.status_code == 503 and "text/html" in page.content_type and password not in page.get_data(as_text=True)
    runner = app.test_cli_runner()
    for args in (["list", "orders"], ["show", "orders", "x"], ["requeue", "orders", "--all"]):
        out = runner.invoke(args=["memqueue", "dead", *args])
        assert out.exit_code == 1 and "Error: RabbitMQ at amqp://memq:***@" in out.output, out.output
        assert password not in out.output


# -- the CLI ---------------------------------------------------------------------------------------------
def test_the_cli_lists_shows_and_requeues(
    rabbitmq: Broker, dead_app: tuple[Flask, Handled], mq: MemQueue, qname: str
) -> None:
    app, handled = dead_app
    kill_three(app, mq, handled, rabbitmq, qname)
    runner = app.test_cli_runner()
    out = runner.invoke(args=["memqueue", "dead", "list", "orders"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == f"3 dead letter(s) in {qname}.dead" and lines[1] == "id\tattempts\terror\tmessage"
    rows = [line.split("\t") for line in lines[2:]]
    assert [r[1:] for r in rows] == [["1", f"ValueError: cannot handle order {n}", f'{{"n":"{n}"}}'] for n in "abc"]
    out = runner.invoke(args=["memqueue", "dead", "show", qname, rows[2][0]])
    assert out.exit_code == 0 and json.loads(out.output)["message"] == {"n": "c"}, out.output
    out = runner.invoke(args=["memqueue", "dead", "show", qname, "nope"])
    assert out.exit_code == 1 and "no dead letter 'nope'" in out.output
    out = runner.invoke(args=["memqueue", "dead", "requeue", qname])
    assert out.exit_code == 2 and "give the ID of one dead letter, or --all" in out.output
    out = runner.invoke(args=["memqueue", "dead", "requeue", qname, rows[0][0], "--all"])
    assert out.exit_code == 2
    handled.fail.clear()
    out = runner.invoke(args=["memqueue", "dead", "requeue", qname, rows[0][0]])
    assert out.exit_code == 0 and out.output == f"requeued 1 dead letter(s) to {qname}\n"
    out = runner.invoke(args=["memqueue", "dead", "requeue", "orders", "--all"])
    assert out.exit_code == 0 and out.output == f"requeued 2 dead letter(s) to {qname}\n"
    wait_until(lambda: all(ok_count(handled, n) == 1 for n in "abcd"))
    out = runner.invoke(args=["memqueue", "dead", "list", "nowhere"])
    assert out.exit_code == 1 and "no handler of this app consumes a RabbitMQ queue 'nowhere'" in out.output
