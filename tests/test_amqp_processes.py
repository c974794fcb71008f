"""Messages over RabbitMQ with real processes: SIGKILL mid-handler, ``flask run --debug``, gunicorn ``--preload``.

The app is tests/apps/amqp_app.py, copied to a temporary directory; its
handler logs ``start``/``done <message> <pid>`` to ``runs.log`` (one
``O_APPEND`` write per line), and a message ``block:<gate>`` waits for a
gate file. Messages are published by a plain pika client, as another
service would. Every wait polls with a deadline.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support.harness import RELOADER_EXCLUDE, Env, Hold
from support.net import http
from support.processes import kill_group, parent_pid, threads_of
from support.servers.rabbitmq import Broker
from support.waiting import wait_until

pika = pytest.importorskip("pika")

DEADLINE = 30.0
AUTH = {"Authorization": "Bearer amqp-test-token-0123456789"}

pytestmark = [
    pytest.mark.processes,
    pytest.mark.servers,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)"),
]


@pytest.fixture
def qname() -> str:
    return f"p.{secrets.token_hex(4)}"


@pytest.fixture
def env(make_env: Callable[..., Env], rabbitmq: Broker, qname: str) -> Env:
    return make_env("amqp_app", AT_URL=rabbitmq.url, AT_QUEUE=qname)


def handled(env: Env) -> set[str]:
    """The messages whose handler ran to the end."""
    return {e[1] for e in env.events("done")}


def publish(broker: Broker, queue: str, messages: list[Any]) -> None:
    connection = broker.connection()
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(queue=queue, durable=True)
        for message in messages:
            channel.basic_publish("", queue, json.dumps(message).encode(),
                                  pika.BasicProperties(content_type="application/json", delivery_mode=2))
    finally:
        connection.close()


def consumers_of(broker: Broker, queue: str) -> int:
    connection = broker.connection()
    try:
        return int(connection.channel().queue_declare(queue=queue, durable=True).method.consumer_count)
    finally:
        connection.close()


def start_consumer(env: Env, name: str) -> subprocess.Popen[bytes]:
    """``python amqp_app.py``: a process that only consumes (``MEMQUEUE_AUTOSTART``), until killed."""
    return env.popen([sys.executable, "amqp_app.py"], name, AT_AUTOSTART="1")


def test_sigkill_mid_handler_the_restarted_process_gets_the_message_again(
    rabbitmq: Broker, env: Env, qname: str
) -> None:
    first = start_consumer(env, "first")
    try:
        wait_until(lambda: consumers_of(rabbitmq, qname) == 1, DEADLINE,
                   lambda: f"the first process to consume: {env.output('first')}")
        publish(rabbitmq, qname, ["block:gate", "m1", "m2"])
        wait_until(lambda: ["start", "block:gate", str(first.pid)] in env.events(), DEADLINE,
                   lambda: f"the handler to start: {env.output('first')}")
        os.kill(first.pid, signal.SIGKILL)  # mid-handler: nothing acknowledged
        first.wait(DEADLINE)
    finally:
        kill_group(first)
    assert env.events("done") == []
    env.open_gate("gate")

    second = start_consumer(env, "second")
    try:
        wanted = {"block:gate", "m1", "m2"}
        wait_until(lambda: handled(env) >= wanted, DEADLINE,
                   lambda: f"every message to be handled: {env.events()}; {env.output('second')}")
    finally:
        kill_group(second)
    runs = env.events()
    done = Counter(e[1] for e in runs if e[0] == "done")
    assert done == Counter(wanted), runs  # nothing lost, each handled once to the end
    assert [e[2] for e in runs if e[:2] == ["start", "block:gate"]] == [str(first.pid), str(second.pid)]
    assert all(e[2] == str(second.pid) for e in runs if e[0] == "done")
    rabbitmq.delete_queues(qname, qname + ".dead")


def test_flask_run_debug_consumes_in_the_serving_child_only(rabbitmq: Broker, env: Env, qname: str) -> None:
    with env.flask_run(args=["--exclude-patterns", RELOADER_EXCLUDE], timeout=DEADLINE) as server:
        r = http("GET", server.url + "/memqueue/threads", headers=AUTH)  # the first request starts the consumers
        assert r.status == 200, r.text
        child = int(r.headers["X-Pid"])
        assert child != server.pid and parent_pid(child) == server.pid
        wait_until(lambda: consumers_of(rabbitmq, qname) == 1, DEADLINE, lambda: server.describe())

        def reported_connected() -> dict[str, Any] | None:
            # the broker lists the consumer as soon as basic_consume is sent; the thread marks itself
            # connected a moment later, after the last queue is declared: wait for the app's own report
            body: dict[str, Any] = http("GET", server.url + "/memqueue/threads", headers=AUTH).json()
            return body if body["amqp"]["connected"] == 1 else None

        info = wait_until(reported_connected, DEADLINE, lambda: f"the consumer to say connected: {server.describe()}")
        names = {t["name"] for t in info["threads"]}
        assert "memqueue-consumer[amqp_app]:amqp-1" in names, info
        assert info["amqp"]["connected"] == 1 and rabbitmq.password not in json.dumps(info)
        assert len(threads_of(server.pid)) == 1  # the watcher only waits for its child: it never consumes

        messages = [f"m{i}" for i in range(20)]
        publish(rabbitmq, qname, messages)
        wait_until(lambda: handled(env) >= set(messages), DEADLINE,
                   lambda: f"every message to be handled: {server.describe()}")
        assert consumers_of(rabbitmq, qname) == 1
    runs = env.events("done")
    assert Counter(e[1] for e in runs) == Counter(messages)
    assert {e[2] for e in runs} == {str(child)}
    rabbitmq.delete_queues(qname, qname + ".dead")


def test_gunicorn_preload_two_workers_each_message_once_master_consumes_nothing(
    rabbitmq: Broker, env: Env, qname: str
) -> None:
    # the master publishes while importing the app, before it forks: the workers must not reuse its socket
    with env.gunicorn(app="amqp_app:app", workers=2, preload=True, env={"AT_PRODUCE_AT_IMPORT": "from-master"},
                      timeout=DEADLINE) as server:
        master = server.pid
        hold = Hold(server, env, "gate-1")  # this worker starts its consumers with the request
        r = http("GET", server.url + "/memqueue/health", headers=AUTH)  # so does the other, which serves this
        assert r.status == 200 and int(r.headers["X-Pid"]) != hold.pid, r.text
        workers = {hold.pid, int(r.headers["X-Pid"])}
        hold.release()
        assert master not in workers and all(parent_pid(pid) == master for pid in workers)
        wait_until(lambda: consumers_of(rabbitmq, qname) == 2, DEADLINE, lambda: server.describe())

        produced = []
        for i in range(10):  # each worker publishes on its own connection
            r = http("POST", server.url + "/memqueue/produce", json={"message": f"http{i}", "topic": "work"},
                     headers=AUTH)
            assert r.status == 202 and r.json()["status"] == "published", r.text
            produced.append(f"http{i}")
        messages = [f"m{i}" for i in range(40)]
        publish(rabbitmq, qname, messages)
        wanted = {"from-master", *produced, *messages}
        wait_until(lambda: handled(env) >= wanted, DEADLINE,
                   lambda: f"every message to be handled: {env.events()}; {server.describe()}")
        assert consumers_of(rabbitmq, qname) == 2
        assert len(threads_of(master)) == 1, threads_of(master)  # the master runs no consumer thread
    runs = env.events("done")
    assert Counter(e[1] for e in runs) == Counter(wanted)  # each message once across the workers
    assert {int(e[2]) for e in runs} <= workers  # never in the master
    rabbitmq.delete_queues(qname, qname + ".dead")


def test_flask_memqueue_worker_consumes_the_handlers_queues(rabbitmq: Broker, env: Env, qname: str) -> None:
    """A web tier that only publishes (MEMQUEUE_CONSUMER = False), and ``flask memqueue worker`` consuming."""
    worker = env.worker("worker", wait=False, AT_CONSUMER="0", AT_JOURNAL=str(env.path("jobs.db")))
    try:
        wait_until(lambda: consumers_of(rabbitmq, qname) == 1 or worker.poll() is not None, DEADLINE,
                   lambda: f"the worker to consume: {env.output('worker')}")
        assert worker.poll() is None, env.output("worker")
        publish(rabbitmq, qname, ["w1", "w2"])
        wait_until(lambda: handled(env) >= {"w1", "w2"}, DEADLINE,
                   lambda: f"the worker to handle both: {env.events()}; {env.output('worker')}")
        assert {e[2] for e in env.events()} == {str(worker.pid)}
        env.stop(worker, "worker")
    finally:
        kill_group(worker)
    banner = env.output("worker")
    assert "for the handlers' messages" in banner
    if urlsplit(rabbitmq.url).password:
        assert ":***@" in banner and rabbitmq.url not in banner  # the password never shows
    rabbitmq.delete_queues(qname, qname + ".dead")
