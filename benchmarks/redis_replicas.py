"""What waiting for a replica costs: enqueue latency on a master with one replica, with
``wait_replicas=0`` (asynchronous replication: the reply comes before any replica has the
job) and ``wait_replicas=1`` (``WAIT 1`` after every write: the reply comes once a replica
confirmed it), side by side in one run.

It starts its own master and replica (Debian's redis-server, loopback, free ports, no
persistence), queues ``--n`` no-op jobs one at a time from one thread for each setting,
rotating the order over ``--reps`` repetitions, and prints the median (min-max) of the
mean microseconds per enqueue.

    python benchmarks/redis_replicas.py --n 2000 --reps 3
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(directory: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    import redis

    directory.mkdir(parents=True)
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             "--save", "", "--appendonly", "no", "--logfile", str(directory / "log"), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.Redis(port=port).ping():
                return proc, port
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _enqueue_us(url: str, n: int, wait_replicas: int) -> float:
    from flask import Flask

    from flask_memqueue import MemQueue

    mq = MemQueue()

    @mq.task(name="bench.noop")
    def noop(payload: str) -> None:
        return None

    app = Flask(f"bench_replicas_{wait_replicas}")
    app.config.update(MEMQUEUE_STORAGE=url, MEMQUEUE_STORAGE_OPTIONS={"wait_replicas": wait_replicas},
                      MEMQUEUE_MAXSIZE=0, MEMQUEUE_CONSUMER=False, MEMQUEUE_URL_PREFIX=None)
    mq.init_app(app)
    payload = "x" * 100
    with app.app_context():
        mq.enqueue(noop, payload)  # the connection and the scripts
        start = time.perf_counter()
        for _ in range(n):
            mq.enqueue(noop, payload)
        took = time.perf_counter() - start
        mq.shutdown(timeout=2)
    return took / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="memqueue-replicas-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        master, port = _start(directory / "master")
        procs.append(master)
        replica, rport = _start(directory / "replica", "--replicaof", "127.0.0.1", str(port))
        procs.append(replica)
        import redis

        deadline = time.monotonic() + 20
        while redis.Redis(port=rport).info("replication").get("master_link_status") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync")
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}/0"
        results: dict[int, list[float]] = {0: [], 1: []}
        for rep in range(args.reps):
            order = [0, 1] if rep % 2 == 0 else [1, 0]
            for w in order:
                results[w].append(_enqueue_us(url, args.n, w))
                redis.Redis(port=port).flushall()
        out: dict[str, Any] = {}
        for w, values in results.items():
            out[f"wait_replicas={w}"] = (statistics.median(values), min(values), max(values))
        for name, (med, lo, hi) in out.items():
            print(f"{name}: enqueue {med:.0f} us (min {lo:.0f}, max {hi:.0f}), {args.n} jobs x {args.reps} reps")
        ratio = statistics.median(results[1]) / statistics.median(results[0])
        print(f"wait_replicas=1 / wait_replicas=0: {ratio:.2f}x")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(20)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
