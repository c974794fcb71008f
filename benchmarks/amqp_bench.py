#!/usr/bin/env python3
"""Messages over RabbitMQ: flask-memqueue against bare pika (the floor), Celery and Dramatiq.

    python benchmarks/amqp_bench.py                  # 3 repetitions, 5000 messages per cell
    python benchmarks/amqp_bench.py --reps 5 --n 10000
    python benchmarks/amqp_bench.py --quick          # tiny sizes: checks that it runs

Starts its own broker (Debian's rabbitmq-server, as the tests do:
tests/support/servers/rabbitmq.py) on free ports in a temporary directory, and stops it.
Every (repetition, workload, contender) cell runs in a fresh subprocess,
contenders rotated inside each repetition; tables show the median and
[min-max] and the ratio to bare pika.

Workloads, each on a queue of its own:
  P  publish: N persistent JSON messages from one thread, each confirmed by
     the broker before the next (messages/s). Nobody consumes meanwhile.
  E  end to end: one consumer (thread or worker process) runs; N messages
     are published as in P, and the clock stops when the last was handled
     and acknowledged (messages/s, first publish to last handled). With one
     publisher waiting for each confirm, the broker's disk sets the pace.
  C  the same with 8 threads publishing N/8 each at once, as a web server's
     concurrent requests do: the broker confirms them in batches, and the
     consumer's own cost per message shows.

Contenders: ``bare_pika`` (a pika BlockingChannel with confirms; a consumer
thread with its own connection, prefetch 8, ack after the handler: what a
careful hand-written app does), ``flask_memqueue`` (``mq.produce`` in an app
context; ``@mq.handler`` with one AMQP consumer thread, the defaults),
``celery`` (``task.delay`` with ``confirm_publish``; ``celery worker --pool
solo``, ``acks_late``) and ``dramatiq`` (``actor.send`` with
``confirm_delivery``; ``dramatiq --processes 1 --threads 1``). Each handler
appends one byte to a file; the driver counts them by its size. The peers
are optional (pip install celery dramatiq): a missing one is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONTENDERS = ["bare_pika", "flask_memqueue", "celery", "dramatiq"]
WORKLOADS = {
    "P": "publish with confirms, one thread",
    "E": "end to end, one publishing thread: published and handled",
    "C": "end to end, 8 publishing threads (a web server's requests): published and handled",
}
#: Publishing threads per workload.
PUBLISHERS = {"P": 1, "E": 1, "C": 8}
#: Seconds one cell may take at most (it is killed and reported as failed after that).
CELL_TIMEOUT = 300.0


# -- inside a cell's subprocess ------------------------------------------------------------------------
def count(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.002)


def consumers(url: str, queue: str) -> int:
    """Consumers of ``queue`` (0 while nobody declared it: a passive look, as each peer declares its own way)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue=queue, passive=True).method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if connection.is_open:
            connection.close()


def purge(url: str, queue: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


class Contender:
    """set_up() -> start_consumer() (E only) -> publish(n) -> stop()."""

    def __init__(self, url: str, queue: str, counter: Path) -> None:
        self.url, self.queue, self.counter = url, queue, counter

    def set_up(self) -> None: ...

    def start_consumer(self) -> None: ...

    def publish(self, n: int) -> None:
        raise NotImplementedError

    def stop(self) -> None: ...


class BarePika(Contender):
    def set_up(self) -> None:
        import pika

        self.pika = pika
        self._local = threading.local()
        self._connections: list[Any] = []
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.connection.channel().queue_declare(queue=self.queue, durable=True)
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start_consumer(self) -> None:
        ready = threading.Event()

        def run() -> None:
            connection = self.pika.BlockingConnection(self.pika.URLParameters(self.url))
            channel = connection.channel()
            channel.basic_qos(prefetch_count=8)
            fd = os.open(self.counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

            def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
                json.loads(body)
                os.write(fd, b".")
                ch.basic_ack(delivery_tag=method.delivery_tag)

            channel.basic_consume(self.queue, on_message)
            ready.set()
            while not self.stopping.is_set():
                connection.process_data_events(time_limit=0.2)
            connection.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(30)

    def publish(self, n: int) -> None:
        channel = getattr(self._local, "channel", None)
        if channel is None:  # one connection per publishing thread: pika is not thread-safe
            connection = self.pika.BlockingConnection(self.pika.URLParameters(self.url))
            channel = self._local.channel = connection.channel()
            channel.confirm_delivery()
            self._connections.append(connection)
        props = self.pika.BasicProperties(content_type="application/json", delivery_mode=2)
        publish = channel.basic_publish
        for i in range(n):
            publish("", self.queue, json.dumps({"n": i}).encode(), props, mandatory=True)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(10)
        for connection in [self.connection, *self._connections]:
            connection.close()


class FlaskMemqueue(Contender):
    def set_up(self) -> None:
        from flask import Flask

        from flask_memqueue import MemQueue

        mq = MemQueue()
        fd = os.open(self.counter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

        @mq.handler("bench", amqp_queue=self.queue)
        def on_message(message: Any) -> None:
            os.write(fd, b".")

        app = Flask("bench")
        app.config.update(MEMQUEUE_AMQP_URL=self.url)
        mq.init_app(app)
        self.mq, self.app = mq, app

    def start_consumer(self) -> None:
        self.mq.queue_for(self.app).ensure_consumer()
        wait_for(lambda: consumers(self.url, self.queue) == 1, 30, "the consumer")

    def publish(self, n: int) -> None:
        produce = self.mq.produce
        with self.app.app_context():  # as a view runs: one app context around its produce() calls
            for i in range(n):
                produce({"n": i}, topic="bench")

    def stop(self) -> None:
        self.mq.shutdown(timeout=10)


class Peer(Contender):
    """Celery or Dramatiq: publishing in this process, the worker is the peer's own command."""

    peer = ""

    def set_up(self) -> None:
        os.environ.update(BENCH_PEER=self.peer, BENCH_URL=self.url, BENCH_QUEUE=self.queue,
                          BENCH_COUNT_FILE=str(self.counter))
        sys.path.insert(0, str(HERE))
        import amqp_peers

        self.module = amqp_peers
        self.worker: subprocess.Popen[bytes] | None = None

    def worker_argv(self) -> list[str]:
        raise NotImplementedError

    def start_consumer(self) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{self.peer}-", suffix=".log", delete=False)
        self.worker = subprocess.Popen(self.worker_argv(), cwd=HERE, env=dict(os.environ), stdin=subprocess.DEVNULL,
                                       stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=_die_with_parent)
        wait_for(lambda: consumers(self.url, self.queue) >= 1, 60, f"the {self.peer} worker to consume")

    def publish(self, n: int) -> None:
        publish = self.module.publish
        for i in range(n):
            publish({"n": i})

    def stop(self) -> None:
        if self.worker is not None:
            import signal

            os.killpg(self.worker.pid, signal.SIGTERM)
            try:
                self.worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.worker.pid, signal.SIGKILL)
                self.worker.wait(10)


def _die_with_parent() -> None:
    """In a peer's worker (Linux): SIGTERM when the cell that started it dies, however it dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class CeleryPeer(Peer):
    peer = "celery"

    def worker_argv(self) -> list[str]:
        return [str(Path(sys.executable).parent / "celery"), "-A", "amqp_peers", "worker", "--pool", "solo",
                "--concurrency", "1", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-Q", self.queue, "--loglevel", "WARNING"]


class DramatiqPeer(Peer):
    peer = "dramatiq"

    def worker_argv(self) -> list[str]:
        return [str(Path(sys.executable).parent / "dramatiq"), "amqp_peers", "--processes", "1", "--threads", "1",
                "--queues", self.queue]


CLASSES: dict[str, type[Contender]] = {
    "bare_pika": BarePika, "flask_memqueue": FlaskMemqueue, "celery": CeleryPeer, "dramatiq": DramatiqPeer,
}


def publish_with(c: Contender, n: int, threads: int) -> None:
    """``n`` messages from ``threads`` threads at once (n // threads each)."""
    if threads == 1:
        c.publish(n)
        return
    errors: list[BaseException] = []

    def run() -> None:
        try:
            c.publish(n // threads)
        except BaseException as exc:  # reported by the cell
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(CELL_TIMEOUT)
    if errors:
        raise errors[0]


def run_cell(contender: str, workload: str, url: str, n: int) -> float:
    """One measurement, in this (fresh) process: messages per second."""
    queue = f"bench.{contender}.{workload}.{os.getpid()}"
    counter = Path(tempfile.mkdtemp(prefix="bench-")) / "count"
    c = CLASSES[contender](url, queue, counter)
    c.set_up()
    try:
        threads = PUBLISHERS[workload]
        n -= n % threads
        consuming = workload != "P"
        if consuming:
            c.start_consumer()
        publish_with(c, 8 * threads, threads)  # warm-up: connections (one per thread), declarations, imports
        if consuming:
            wait_for(lambda: count(counter) >= 8 * threads, 60, "the warm-up messages")
        base = count(counter)
        start = time.perf_counter()
        publish_with(c, n, threads)
        if consuming:
            wait_for(lambda: count(counter) >= base + n, CELL_TIMEOUT, f"{n} messages to be handled")
        elapsed = time.perf_counter() - start
    finally:
        c.stop()
        purge(url, queue)
        shutil.rmtree(counter.parent, ignore_errors=True)
    return n / elapsed


# -- the driver ------------------------------------------------------------------------------------------
def available(contender: str) -> bool:
    module = {"bare_pika": "pika", "flask_memqueue": "flask_memqueue", "celery": "celery",
              "dramatiq": "dramatiq"}[contender]
    probe = subprocess.run([sys.executable, "-c", f"import {module}, pika"], capture_output=True)
    return probe.returncode == 0


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.median(values):,.0f} [{min(values):,.0f}–{max(values):,.0f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=5000, help="messages per cell")
    parser.add_argument("--quick", action="store_true", help="2 reps of 200 messages: checks that it runs")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--workloads", default="P,E,C")
    parser.add_argument("--cell", nargs=3, metavar=("CONTENDER", "WORKLOAD", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        contender, workload, url = args.cell
        print(json.dumps({"rate": run_cell(contender, workload, url, args.n)}))
        return 0
    if args.quick:
        args.reps, args.n = 2, 200
    contenders = [c for c in args.contenders.split(",") if c]
    missing = [c for c in contenders if not available(c)]
    for c in missing:
        print(f"skipping {c}: not installed here (pip install celery dramatiq pika)", file=sys.stderr)
    contenders = [c for c in contenders if c not in missing]
    workloads = [w for w in args.workloads.split(",") if w]

    sys.path.insert(0, str(ROOT / "tests"))
    from support.servers.rabbitmq import start_broker

    broker = start_broker()
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for rep in range(args.reps):
            order = contenders[rep % len(contenders):] + contenders[:rep % len(contenders)]
            for workload in workloads:
                for contender in order:
                    proc = subprocess.run(
                        [sys.executable, __file__, "--n", str(args.n), "--cell", contender, workload, broker.url],
                        capture_output=True, text=True, timeout=CELL_TIMEOUT + 60,
                    )
                    if proc.returncode != 0:
                        print(f"{contender} {workload} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                        continue
                    rate = json.loads(proc.stdout.strip().splitlines()[-1])["rate"]
                    results.setdefault((workload, contender), []).append(rate)
                    print(f"rep {rep + 1} {workload} {contender}: {rate:,.0f} msg/s", file=sys.stderr)
    finally:
        broker.close()
        shutil.rmtree(broker.directory, ignore_errors=True)

    print(f"{args.reps} repetition(s), {args.n} messages per cell, Python {sys.version.split()[0]},"
          f" {os.cpu_count()} cores; median [min–max] messages/s\n")
    for workload in workloads:
        print(f"### {workload}. {WORKLOADS[workload]}\n")
        print("| contender | messages/s | × bare pika |")
        print("|---|---:|---:|")
        floor = results.get((workload, "bare_pika"))
        for contender in contenders:
            values = results.get((workload, contender), [])
            ratio = (f"{statistics.median(values) / statistics.median(floor):.2f}×"
                     if values and floor else "—")
            print(f"| `{contender}` | {fmt(values)} | {ratio} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
