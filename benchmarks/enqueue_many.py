"""``mq.enqueue_many`` of no-op jobs on Redis, against our own loop of ``delay()``, RQ's
``Queue.enqueue_many`` (one pipeline) and huey's loop (one call per job), on one redis-server.

Each contender queues ``--n`` jobs of one 100-character argument into a flushed server, with
no worker running; the time is the enqueue alone (app set-up excluded), repeated ``--reps``
times, the contenders interleaved in every repetition so that they share the machine's state.
The median is reported with min and max, and each contender's ratio to our loop of ``delay()``.

    python benchmarks/enqueue_many.py --n 10000 --reps 5
    python benchmarks/enqueue_many.py --url redis://127.0.0.1:6379/0   # an existing server (flushed!)

Without ``--url`` it starts its own redis-server (Debian's package) on a free port, without
persistence, and stops it at the end. RQ and huey are optional (``pip install rq huey``): a
contender whose package is missing is left out, and the table says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from redis_workers import start_redis  # noqa: E402 - run as a script from benchmarks/

PAYLOAD = "x" * 100


def noop(payload: str) -> None:
    """The job of every contender (RQ stores it by its import path, huey by its task name)."""


def ours(url: str) -> tuple[Callable[[int], None], Callable[[int], None]]:
    from flask import Flask

    from flask_memqueue import MemQueue

    mq = MemQueue()
    task = mq.task(name="bench.noop")(noop)
    app = Flask("bench_enqueue_many")
    app.config.update(MEMQUEUE_STORAGE=url, MEMQUEUE_MAXSIZE=0, MEMQUEUE_CONSUMER=False, MEMQUEUE_URL_PREFIX=None)
    mq.init_app(app)

    def many(n: int) -> None:
        with app.app_context():
            jobs = mq.enqueue_many([task.s(PAYLOAD) for _ in range(n)])
        assert len(jobs) == n

    def loop(n: int) -> None:
        with app.app_context():
            for _ in range(n):
                task.delay(PAYLOAD)

    return many, loop


def rq_many(url: str) -> Callable[[int], None] | None:
    try:
        import redis
        from rq import Queue
    except ImportError:
        return None
    queue = Queue("bench", connection=redis.Redis.from_url(url))

    def many(n: int) -> None:
        queue.enqueue_many([Queue.prepare_data(noop, (PAYLOAD,)) for _ in range(n)])

    return many


def huey_loop(url: str) -> Callable[[int], None] | None:
    try:
        from huey import RedisHuey
    except ImportError:
        return None
    huey = RedisHuey("bench", url=url)
    task = huey.task(name="bench.noop")(noop)

    def loop(n: int) -> None:
        for _ in range(n):
            task(PAYLOAD)

    return loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--url", help="an existing redis-server (it is flushed)")
    args = parser.parse_args()
    import redis

    with tempfile.TemporaryDirectory() as folder:
        proc = None
        url = args.url
        if url is None:
            proc, url = start_redis(Path(folder))
        try:
            client = redis.Redis.from_url(url)
            many, loop = ours(url)
            contenders: dict[str, Callable[[int], None] | None] = {
                "flask_memqueue enqueue_many": many, "flask_memqueue loop of delay()": loop,
                "rq Queue.enqueue_many": rq_many(url), "huey loop": huey_loop(url),
            }
            times: dict[str, list[float]] = {name: [] for name, fn in contenders.items() if fn is not None}
            for _ in range(args.reps):
                for name, fn in contenders.items():
                    if fn is None:
                        continue
                    client.flushall()
                    start = time.perf_counter()
                    fn(args.n)
                    times[name].append(time.perf_counter() - start)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    base = statistics.median(times["flask_memqueue loop of delay()"])
    print(f"enqueue of {args.n:,} no-op jobs on one redis-server, {args.reps} reps (median, min-max);"
          f" Python {sys.version.split()[0]}")
    print("| contender | jobs/s | seconds (min-max) | × our loop |\n|---|---|---|---|")
    for name, runs in times.items():
        med = statistics.median(runs)
        print(f"| {name} | {args.n / med:,.0f} | {med:.3f} ({min(runs):.3f}-{max(runs):.3f}) | {base / med:.1f} |")
    for name, fn in contenders.items():
        if fn is None:
            print(f"| {name} | not installed | | |")


if __name__ == "__main__":
    main()
