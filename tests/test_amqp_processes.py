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
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from amqp_broker import Broker
from servers import Server, flask_run, gunicorn, http, parent_pid, threads_of, wait_until

pika = pytest.importorskip("pika")

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 30.0
AUTH = {"Authorization": "Bearer amqp-test-token-0123456789"}
EXCLUDE = f"{ROOT}{os.sep}*"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


@pytest.fixture
def qname() -> str:
    return f"p.{secrets.token_hex(4)}"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "tests" / "apps" / "amqp_app.py", src)
    (tmp_path / "data").mkdir()
    return src


def env_for(broker: Broker, tmp_path: Path, queue: str, **extra: str) -> dict[str, str]:
    return {"AT_URL": broker.url, "AT_QUEUE": queue, "AT_DIR": str(tmp_path / "data"), **extra}


def events(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "data" / "runs.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


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


def delete(broker: Broker, *queues: str) -> None:
    connection = broker.connection()
    try:
        for name in queues:
            connection.channel().queue_delete(name)
    finally:
        connection.close()


def start_consumer(app_dir: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python amqp_app.py``: a process that only consumes (``MEMQUEUE_AUTOSTART``), until killed."""
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "amqp_app.py"], cwd=app_dir, env={**os.environ, **env},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(DEADLINE)


def test_sigkill_mid_handler_the_restarted_process_gets_the_message_again(
    rabbitmq: Broker, app_dir: Path, tmp_path: Path, qname: str
) -> None:
    env = env_for(rabbitmq, tmp_path, qname, AT_AUTOSTART="1")
    first = start_consumer(app_dir, env, tmp_path / "first.log")
    try:
        wait_until(lambda: consumers_of(rabbitmq, qname) == 1, DEADLINE,
                   lambda: f"the first process to consume: {(tmp_path / 'first.log').read_text()}")
        publish(rabbitmq, qname, ["block:gate", "m1", "m2"])
        wait_until(lambda: ["start", "block:gate", str(first.pid)] in events(tmp_path), DEADLINE,
                   lambda: f"the handler to start: {(tmp_path / 'first.log').read_text()}")
        os.kill(first.pid, signal.SIGKILL)  # mid-handler: nothing acknowledged
        first.wait(DEADLINE)
    finally:
        stop(first)
    assert not any(e[0] == "done" for e in events(tmp_path))
    (tmp_path / "data" / "gate").touch()

    second = start_consumer(app_dir, env, tmp_path / "second.log")
    try:
        wanted = {"block:gate", "m1", "m2"}
        wait_until(lambda: {e[1] for e in events(tmp_path) if e[0] == "done"} >= wanted, DEADLINE,
                   lambda: f"every message to be handled: {events(tmp_path)}; {(tmp_path / 'second.log').read_text()}")
    finally:
        stop(second)
    runs = events(tmp_path)
    done = Counter(e[1] for e in runs if e[0] == "done")
    assert done == Counter(wanted), runs  # nothing lost, each handled once to the end
    assert [e[2] for e in runs if e[:2] == ["start", "block:gate"]] == [str(first.pid), str(second.pid)]
    assert all(e[2] == str(second.pid) for e in runs if e[0] == "done")
    delete(rabbitmq, qname, qname + ".dead")


def test_flask_run_debug_consumes_in_the_serving_child_only(
    rabbitmq: Broker, app_dir: Path, tmp_path: Path, qname: str
) -> None:
    env = env_for(rabbitmq, tmp_path, qname)
    with flask_run("amqp_app", cwd=app_dir, env=env, log_path=tmp_path / "server.log",
                   args=["--exclude-patterns", EXCLUDE], timeout=DEADLINE) as server:
        r = http("GET", server.url + "/memqueue/threads", headers=AUTH)  # the first request starts the consumers
        assert r.status == 200, r.text
        child = int(r.headers["X-Pid"])
        assert child != server.pid and parent_pid(child) == server.pid
        wait_until(lambda: consumers_of(rabbitmq, qname) == 1, DEADLINE, lambda: server.describe())
        info = http("GET", server.url + "/memqueue/threads", headers=AUTH).json()
        names = {t["name"] for t in info["threads"]}
        assert "memqueue-consumer[amqp_app]:amqp-1" in names, info
        assert info["amqp"]["connected"] == 1 and rabbitmq.password not in json.dumps(info)
        assert len(threads_of(server.pid)) == 1  # the watcher only waits for its child: it never consumes

        messages = [f"m{i}" for i in range(20)]
        publish(rabbitmq, qname, messages)
        wait_until(lambda: {e[1] for e in events(tmp_path) if e[0] == "done"} >= set(messages), DEADLINE,
                   lambda: f"every message to be handled: {server.describe()}")
        assert consumers_of(rabbitmq, qname) == 1
    runs = [e for e in events(tmp_path) if e[0] == "done"]
    assert Counter(e[1] for e in runs) == Counter(messages)
    assert {e[2] for e in runs} == {str(child)}
    delete(rabbitmq, qname, qname + ".dead")


class Hold:
    """A request that keeps one sync worker busy until its gate file exists (then the other gets requests)."""

    def __init__(self, server: Server, tmp_path: Path, name: str) -> None:
        self.gate = tmp_path / "data" / name
        self.status: int | None = None
        self.thread = threading.Thread(target=self._run, args=(server.url + f"/_test/hold/{name}",), daemon=True)
        self.thread.start()
        held = wait_until(lambda: [e for e in events(tmp_path) if e[0] == "held" and e[1] == name], DEADLINE,
                          lambda: f"a worker to take the hold {name}: {server.describe()}")
        self.pid = int(held[0][2])

    def _run(self, url: str) -> None:
        self.status = http("GET", url, timeout=DEADLINE + 5).status

    def release(self) -> None:
        self.gate.touch()
        self.thread.join(DEADLINE)
        assert self.status == 200


def test_gunicorn_preload_two_workers_each_message_once_master_consumes_nothing(
    rabbitmq: Broker, app_dir: Path, tmp_path: Path, qname: str
) -> None:
    # the master publishes while importing the app, before it forks: the workers must not reuse its socket
    env = env_for(rabbitmq, tmp_path, qname, AT_PRODUCE_AT_IMPORT="from-master")
    with gunicorn("amqp_app:app", cwd=app_dir, workers=2, preload=True, env=env,
                  log_path=tmp_path / "server.log", timeout=DEADLINE) as server:
        master = server.pid
        hold = Hold(server, tmp_path, "gate-1")  # this worker starts its consumers with the request
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
        wait_until(lambda: {e[1] for e in events(tmp_path) if e[0] == "done"} >= wanted, DEADLINE,
                   lambda: f"every message to be handled: {events(tmp_path)}; {server.describe()}")
        assert consumers_of(rabbitmq, qname) == 2
        assert len(threads_of(master)) == 1, threads_of(master)  # the master runs no consumer thread
    runs = [e for e in events(tmp_path) if e[0] == "done"]
    assert Counter(e[1] for e in runs) == Counter(wanted)  # each message once across the workers
    assert {int(e[2]) for e in runs} <= workers  # never in the master
    delete(rabbitmq, qname, qname + ".dead")





def test_flask_memqueue_worker_consumes_the_handlers_queues(
    rabbitmq: Broker, app_dir: Path, tmp_path: Path, qname: str
) -> None:
    """A web tier that only publishes (MEMQUEUE_CONSUMER = False), and ``flask memqueue worker`` consuming."""
    env = env_for(rabbitmq, tmp_path, qname, AT_CONSUMER="0", AT_JOURNAL=str(tmp_path / "data" / "jobs.db"))
    log = tmp_path / "worker.log"
    flask = Path(sys.executable).with_name("flask")
    with log.open("wb") as out:
        worker = subprocess.Popen([str(flask), "--app", "amqp_app", "memqueue", "worker"], cwd=app_dir,
                                  env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: consumers_of(rabbitmq, qname) == 1 or worker.poll() is not None, DEADLINE,
                   lambda: f"the worker to consume: {log.read_text()}")
        assert worker.poll() is None, log.read_text()
        publish(rabbitmq, qname, ["w1", "w2"])
        wait_until(lambda: {e[1] for e in events(tmp_path) if e[0] == "done"} >= {"w1", "w2"}, DEADLINE,
                   lambda: f"the worker to handle both: {events(tmp_path)}; {log.read_text()}")
        assert {e[2] for e in events(tmp_path)} == {str(worker.pid)}
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(DEADLINE) == 0, log.read_text()
    finally:
        stop(worker)
    banner = log.read_text()
    assert "for the handlers' messages" in banner
    if urlsplit(rabbitmq.url).password:
        assert ":***@" in banner and rabbitmq.url not in banner  # the password never shows
    delete(rabbitmq, qname, qname + ".dead")
