"""What a concurrency limit costs on Redis: round trips and jobs/s, limited task vs plain task.

    python benchmarks/limits_redis.py --n 2000 --reps 3     # its own redis-server on a free port
    python benchmarks/limits_redis.py --url redis://127.0.0.1:6379/0   # an existing server (flushed!)

One process, one app on one redis-server, 4 consumer threads. Each repetition enqueues
``--n`` no-op jobs of a plain task, drains them, then ``--n`` of a task with
``concurrency=4, concurrency_key=<one of 8 keys>`` (so the limit is reached and jobs are held
and given back), drains them, side by side. Round trips are counted on the client: every
``send_packed_command`` of a redis-py connection is one (a script and the ``BLPOP`` sent with
it are one packet). The limit is checked inside the claim's script, so the claim pays no
extra round trip; a job held aside and given back costs its consumers nothing either.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from redis_workers import start_redis  # noqa: E402 - run as a script from benchmarks/

SENDS = [0]
_LOCK = threading.Lock()


def count_round_trips() -> None:
    """Count every packet a redis-py connection sends (one round trip each)."""
    from redis.connection import AbstractConnection

    original = AbstractConnection.send_packed_command

    def counted(self: AbstractConnection, command: object, check_health: bool = True) -> None:
        with _LOCK:
            SENDS[0] += 1
        original(self, command, check_health)  # type: ignore[arg-type]

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--url")
    parser.add_argument("--plain-only", action="store_true",
                        help="the plain task alone (to run an older package: PYTHONPATH=<its checkout>)")
    args = parser.parse_args()
    count_round_trips()
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = args.url
        if url is None:
            proc, url = start_redis(Path(tmp))
        try:
            run(url, args.n, args.reps, args.plain_only)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def run(url: str, n: int, reps: int, plain_only: bool = False) -> None:
    import redis
    from flask import Flask

    from flask_memqueue import MemQueue

    redis.Redis.from_url(url).flushall()
    mq = MemQueue()

    @mq.task(name="plain")
    def plain(i: int) -> None:
        return None

    limited = None
    if not plain_only:
        @mq.task(name="limited", concurrency=4, concurrency_key=lambda i: i % 8)
        def limited(i: int) -> None:
            return None

    app = Flask("limits_bench")
    app.config.update(MEMQUEUE_STORAGE=url, MEMQUEUE_QUEUES={"default": 4}, MEMQUEUE_MAXSIZE=0)
    mq.init_app(app)
    rows: dict[str, list[tuple[float, float]]] = {"plain": []} if plain_only else {"plain": [], "limited": []}
    with app.app_context():
        for _ in range(reps):
            for name, task in (("plain", plain), ("limited", limited))[:len(rows)]:
                mq.join(timeout=60)
                before = SENDS[0]
                started = time.perf_counter()
                for i in range(n):
                    task.delay(i)
                assert mq.join(timeout=300), "the jobs did not finish"
                seconds = time.perf_counter() - started
                rows[name].append((n / seconds, (SENDS[0] - before) / n))
    mq.shutdown()
    print(f"{n} jobs per run, {reps} runs, 4 consumer threads, one redis-server")
    print("| task | jobs/s (median, min-max) | round trips per job (median) |")
    print("|---|---|---|")
    for name, got in rows.items():
        rates = [r for r, _ in got]
        trips = [t for _, t in got]
        print(f"| {name} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) |"
              f" {statistics.median(trips):.2f} |")
    if plain_only:
        return
    ratio = statistics.median(r for r, _ in rows["limited"]) / statistics.median(r for r, _ in rows["plain"])
    extra = statistics.median(t for _, t in rows["limited"]) - statistics.median(t for _, t in rows["plain"])
    print(f"limited/plain jobs/s: {ratio:.2f}x; extra round trips per limited job: {extra:+.2f}")


if __name__ == "__main__":
    main()
