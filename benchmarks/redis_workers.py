"""End-to-end jobs/s on the Redis store with one and with two ``flask memqueue worker`` processes.

The peer benchmark (``peers.py`` in the shared bench folder) runs each
system's consumer as a thread of the enqueuing process; this one measures
what scaling out is for: separate worker processes draining one queue.

For each worker count it empties a redis-server, queues ``--n`` no-op jobs
(one 100-character argument each) with no worker running, starts the
workers (``flask --app <bench app> memqueue worker``), waits until every job
has succeeded (bounded by ``--timeout``), and computes jobs/s from the job
records themselves: ``n / (last finished_at - first started_at)``, so the
workers' start-up (importing Flask) is not counted. Repeated ``--reps``
times; the median is reported, with min and max.

    python benchmarks/redis_workers.py --n 20000 --reps 3
    python benchmarks/redis_workers.py --url redis://127.0.0.1:6379/0   # an existing server (flushed!)

Without ``--url`` it starts its own redis-server (Debian's package) on a free
port, without persistence, and stops it at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

APP = textwrap.dedent('''
    import os
    from flask import Flask
    from flask_memqueue import MemQueue

    mq = MemQueue()


    @mq.task(name="bench.noop")
    def noop(payload):
        return None


    def create_app():
        app = Flask("bench_redis_workers")
        app.config.update(MEMQUEUE_STORAGE=os.environ["BENCH_URL"], MEMQUEUE_MAXSIZE=0,
                          MEMQUEUE_MAX_FINISHED=10_000_000, MEMQUEUE_CONSUMER=False, MEMQUEUE_URL_PREFIX=None)
        mq.init_app(app)
        return app


    app = create_app()
''')

SPAN = """
local first, last, n = false, false, 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1] .. ':x:succeeded', 0, -1)) do
  -- this version's layout (one hash: the state line, then the body) or the one before it
  local text = redis.call('HGET', KEYS[1] .. ':j', id)
  if text then text = string.sub(text, 1, string.find(text, '\\n', 1, true) - 1)
  else text = redis.call('GET', KEYS[1] .. ':j:' .. id) end
  local v = cjson.decode(text)
  local sa, fa = tonumber(v.sa), tonumber(v.fa)
  if not first or sa < first then first = sa end
  if not last or fa > last then last = fa end
  n = n + 1
end
return {n, tostring(first), tostring(last)}
"""
PREFIX = "memqueue:{bench_redis_workers}"


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
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
                    return proc, f"redis://127.0.0.1:{port}/0"
            except OSError:
                time.sleep(0.02)
        proc.kill()
        proc.wait()
    raise RuntimeError("redis-server did not start")


def one_run(url: str, folder: Path, workers: int, n: int, timeout: float) -> float:
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushall()
    env = {**os.environ, "BENCH_URL": url, "PYTHONUNBUFFERED": "1"}
    sys.path.insert(0, str(folder))
    os.environ["BENCH_URL"] = url
    import bench_redis_workers_app as bench  # noqa: E402 - written into folder at start

    payload = "x" * 100
    with bench.app.app_context():
        for _ in range(n):
            bench.mq.enqueue(bench.noop, payload)
    flask = str(Path(sys.executable).parent / "flask")
    procs = [subprocess.Popen([flask, "--app", "bench_redis_workers_app", "memqueue", "worker"], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    try:
        deadline = time.monotonic() + timeout
        while int(client.hget(f"{PREFIX}:c", "succeeded") or 0) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workers} worker(s): not every job ran within {timeout} s")
            time.sleep(0.05)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    done, first, last = client.eval(SPAN, 1, PREFIX)
    client.close()
    assert int(done) == n, (done, n)
    return n / (float(last) - float(first))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--url", help="an existing server (it is flushed!); default: start one")
    opts = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-workers-"))
    (folder / "bench_redis_workers_app.py").write_text(APP)
    server = None
    try:
        url = opts.url
        if url is None:
            server, url = start_redis(folder)
        counts = [int(k) for k in opts.workers.split(",")]
        results: dict[int, list[float]] = {k: [] for k in counts}
        for rep in range(opts.reps):
            for k in counts:
                rate = one_run(url, folder, k, opts.n, opts.timeout)
                results[k].append(rate)
                print(f"rep {rep + 1}/{opts.reps}: {k} worker process(es): {rate:,.0f} jobs/s", file=sys.stderr)
        base = statistics.median(results[counts[0]])
        print(f"| worker processes | jobs/s, median [min-max] of {opts.reps} | x {counts[0]} |")
        print("|---|---|---|")
        for k in counts:
            med = statistics.median(results[k])
            print(f"| {k} | {med:,.0f} [{min(results[k]):,.0f}-{max(results[k]):,.0f}] | {med / base:.2f}x |")
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
