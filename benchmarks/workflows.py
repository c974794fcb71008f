"""Workflows (issue 21): a chord on Redis against Celery's and huey's, and a chain's cost per link.

**Chord.** A chord of ``--chord-n`` (10,000) no-op members and a callback that
gets their results, on one redis-server (started here on a free port, without
persistence, flushed before every cell), for:

- ``flask_memqueue``: ``mq.chord(mq.group(noop.s(i) ...), done.s()).delay()`` on
  ``MEMQUEUE_STORAGE = redis://...``, one consumer thread (the default);
- ``celery``: ``chord(group(noop.s(i) ...))(done.s())``, broker and result backend
  on the same server (the redis backend's native chord: a counter per chord),
  Celery's own ``start_worker`` (pool ``solo``, concurrency 1) in the process;
- ``huey``: ``huey.enqueue(group([noop.s(i) ...]).then(done))``, huey's chord
  (``RedisHuey``, results on: a chord counts its members in redis and enqueues
  the callback with every result), its ``Consumer`` with one worker thread.

Every consumer is one thread of the enqueuing process (as in the shared peers
harness). The clock runs from the call that queues the chord until the callback
runs (it sets an event): ``members/s = n / that time``; the enqueue's own share
is shown apart. Each cell is a fresh subprocess; the contenders are rotated in
every repetition; the median of ``--reps`` is reported, with min and max.

**Chain.** A chain of ``--chain-n`` (1,000) no-op links on memory, SQLite and
Redis: its time per link (from ``.delay()`` until the last link's ``wait()``
returns, over the links) against one plain job's end-to-end time on the same
store (``noop.delay(i).wait()``, one job at a time, the mean of ``--plain-n``
after 50 unmeasured). Target: a link costs at most 2x a plain job.

    python benchmarks/workflows.py                         # both parts, 3 repetitions
    python benchmarks/workflows.py --part chord --reps 5 --chord-n 10000

Run it with a Python that has celery, huey, redis and Flask (the peers bench
venv); flask_memqueue is imported from this working tree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT = "@@RESULT "
CELL_TIMEOUT = 600.0  # seconds a cell (one subprocess) may take at most
WAIT = 300.0  # seconds a chord or chain may take at most before the cell gives up
CHORD_CONTENDERS = ("flask_memqueue", "celery", "huey")
CHAIN_STORES = ("memory", "sqlite", "redis")


# -- the cells (each runs in its own subprocess) -----------------------------------------------
def chord_flask_memqueue(url: str, n: int) -> dict[str, float]:
    from flask import Flask

    from flask_memqueue import MemQueue

    mq = MemQueue()
    finished = threading.Event()

    @mq.task(name="bench.noop")
    def noop(i: int) -> None:
        return None

    @mq.task(name="bench.done")
    def done(results: list[Any]) -> None:
        assert len(results) == n
        finished.set()

    app = Flask("bench_workflows")
    app.config.update(MEMQUEUE_STORAGE=url, MEMQUEUE_MAXSIZE=0, MEMQUEUE_MAX_FINISHED=10 * n,
                      MEMQUEUE_URL_PREFIX=None)
    mq.init_app(app)
    with app.app_context():
        try:
            t0 = time.perf_counter()
            mq.chord(mq.group(*(noop.s(i) for i in range(n))), done.s()).delay()
            queued = time.perf_counter()
            if not finished.wait(WAIT):
                raise TimeoutError(f"the callback did not run within {WAIT} s")
            t1 = time.perf_counter()
        finally:
            mq.shutdown(wait=False)
    return {"seconds": t1 - t0, "enqueue_seconds": queued - t0}


def chord_celery(url: str, n: int) -> dict[str, float]:
    from celery import Celery, chord, group
    from celery.contrib.testing.worker import start_worker

    app = Celery("bench", broker=url, backend=url, set_as_current=False)
    app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=False,
                    result_expires=3600)
    finished = threading.Event()

    @app.task(name="bench.noop")
    def noop(i: int) -> None:
        return None

    @app.task(name="bench.done")
    def done(results: list[Any]) -> None:
        assert len(results) == n
        finished.set()

    with start_worker(app, concurrency=1, pool="solo", perform_ping_check=False, loglevel="ERROR",
                      shutdown_timeout=10):
        t0 = time.perf_counter()
        chord(group(noop.s(i) for i in range(n)))(done.s())
        queued = time.perf_counter()
        if not finished.wait(WAIT):
            raise TimeoutError(f"the callback did not run within {WAIT} s")
        t1 = time.perf_counter()
    return {"seconds": t1 - t0, "enqueue_seconds": queued - t0}


def chord_huey(url: str, n: int) -> dict[str, float]:
    from huey import RedisHuey, group

    huey = RedisHuey("bench", url=url)
    finished = threading.Event()

    @huey.task(name="noop")
    def noop(i: int) -> None:
        return None

    @huey.task(name="done")
    def done(results: list[Any]) -> None:
        assert len(results) == n
        finished.set()

    consumer = huey.create_consumer(workers=1, worker_type="thread", shutdown_timeout=5)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    consumer.start()  # it installs signal handlers for a consumer process; this one keeps its own
    for s, handler in saved.items():
        signal.signal(s, handler)
    try:
        t0 = time.perf_counter()
        huey.enqueue(group([noop.s(i) for i in range(n)]).then(done))
        queued = time.perf_counter()
        if not finished.wait(WAIT):
            raise TimeoutError(f"the callback did not run within {WAIT} s")
        t1 = time.perf_counter()
    finally:
        consumer.stop(graceful=True)
    return {"seconds": t1 - t0, "enqueue_seconds": queued - t0}


def chain_cell(storage: str, n: int, plain_n: int) -> dict[str, float]:
    from flask import Flask

    from flask_memqueue import MemQueue

    mq = MemQueue()

    @mq.task(name="bench.link")
    def link(x: int = 0) -> int:
        return x

    app = Flask("bench_chain")
    app.config.update(MEMQUEUE_STORAGE=storage, MEMQUEUE_MAXSIZE=0, MEMQUEUE_MAX_FINISHED=10 * (n + plain_n),
                      MEMQUEUE_URL_PREFIX=None)
    mq.init_app(app)
    with app.app_context():
        try:
            for i in range(50):  # the consumer started, connections open, code warm
                link.delay(i).wait(WAIT)
            t0 = time.perf_counter()
            for i in range(plain_n):
                link.delay(i).wait(WAIT)
            plain = (time.perf_counter() - t0) / plain_n
            t0 = time.perf_counter()
            last = mq.chain(link.s(1), *(link.s() for _ in range(n - 1))).delay()
            assert last.wait(WAIT) == 1
            per_link = (time.perf_counter() - t0) / n
        finally:
            mq.shutdown(wait=False)
    return {"plain_seconds": plain, "link_seconds": per_link}


def _cell(args: argparse.Namespace) -> None:
    if args.cell == "chain":
        out = chain_cell(args.storage, args.chain_n, args.plain_n)
    else:
        fn: Callable[[str, int], dict[str, float]] = globals()[f"chord_{args.cell}"]
        out = fn(args.url, args.chord_n)
    print(RESULT + json.dumps(out), flush=True)


# -- the driver --------------------------------------------------------------------------------
def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    for _ in range(5):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                 "no", "--dir", str(folder), "--logfile", str(folder / "redis.log")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return proc, port
            except OSError:
                time.sleep(0.02)
        proc.kill()
        proc.wait()
    raise RuntimeError("redis-server did not start")


def flush(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        if not s.recv(64).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")


def run_cell(argv: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, env=env,
                          timeout=CELL_TIMEOUT, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])  # type: ignore[no-any-return]
    raise RuntimeError(f"cell {argv} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def chord_part(args: argparse.Namespace, port: int) -> None:
    url = f"redis://127.0.0.1:{port}/0"
    rates: dict[str, list[float]] = {c: [] for c in args.contenders}
    enqueue: dict[str, list[float]] = {c: [] for c in args.contenders}
    for rep in range(args.reps):
        order = args.contenders[rep % len(args.contenders):] + args.contenders[:rep % len(args.contenders)]
        for name in order:
            flush(port)
            got = run_cell(["--cell", name, "--url", url, "--chord-n", str(args.chord_n)])
            rates[name].append(args.chord_n / got["seconds"])
            enqueue[name].append(got["enqueue_seconds"])
            print(f"  rep {rep + 1} {name}: {args.chord_n / got['seconds']:,.0f} members/s", file=sys.stderr)
    print(f"\n## A chord of {args.chord_n:,} no-op members on one redis-server (median of {args.reps}, min-max)\n")
    print("| contender | members/s | enqueue s | flask_memqueue's rate / this one's |")
    print("|---|---|---|---|")
    ours = statistics.median(rates["flask_memqueue"]) if rates.get("flask_memqueue") else None
    for name in args.contenders:
        rate = statistics.median(rates[name])
        ratio = f"{ours / rate:.2f}" if ours else "-"
        print(f"| {name} | {spread(rates[name])} | {statistics.median(enqueue[name]):.2f} | {ratio} |")


def chain_part(args: argparse.Namespace, port: int | None, folder: Path) -> None:
    rows: dict[str, dict[str, list[float]]] = {}
    for rep in range(args.reps):
        for store in args.stores:
            if store == "redis":
                assert port is not None
                flush(port)
                url = f"redis://127.0.0.1:{port}/0"
            elif store == "sqlite":
                db = folder / f"chain-{rep}.db"
                url = f"sqlite:///{db}"
            else:
                url = "memory://"
            got = run_cell(["--cell", "chain", "--storage", url, "--chain-n", str(args.chain_n),
                            "--plain-n", str(args.plain_n)])
            row = rows.setdefault(store, {"plain": [], "link": []})
            row["plain"].append(got["plain_seconds"] * 1e6)
            row["link"].append(got["link_seconds"] * 1e6)
            print(f"  rep {rep + 1} {store}: plain {got['plain_seconds'] * 1e6:,.0f} us, link"
                  f" {got['link_seconds'] * 1e6:,.0f} us", file=sys.stderr)
    print(f"\n## A chain of {args.chain_n:,} no-op links against one plain job, end to end (median of {args.reps})\n")
    print("| store | plain job, us | per link, us | link / plain (target <= 2) |")
    print("|---|---|---|---|")
    for store, row in rows.items():
        plain, link = statistics.median(row["plain"]), statistics.median(row["link"])
        print(f"| {store} | {spread(row['plain'])} | {spread(row['link'])} | {link / plain:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("chord", "chain", "all"), default="all")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--chord-n", type=int, default=10_000)
    parser.add_argument("--chain-n", type=int, default=1_000)
    parser.add_argument("--plain-n", type=int, default=1_000)
    parser.add_argument("--contenders", default=",".join(CHORD_CONTENDERS))
    parser.add_argument("--stores", default=",".join(CHAIN_STORES))
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:
        _cell(args)
        return 0
    args.contenders = [c for c in args.contenders.split(",") if c]
    args.stores = [s for s in args.stores.split(",") if s]
    with tempfile.TemporaryDirectory(prefix="mq-wf-bench-") as tmp:
        folder = Path(tmp)
        needs_redis = args.part in ("chord", "all") or "redis" in args.stores
        proc, port = start_redis(folder) if needs_redis else (None, None)
        try:
            print(f"# Workflows benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
            if args.part in ("chord", "all"):
                assert port is not None
                chord_part(args, port)
            if args.part in ("chain", "all"):
                chain_part(args, port, folder)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
