"""flask-memqueue's PostgreSQL store against Procrastinate and a raw floor, side by side.

One PostgreSQL server (Debian's, started here by ``tests/support/servers/postgres.py`` with its
default durability: fsync and synchronous_commit on; ``pg_stat_statements``
loaded), a fresh database for every measurement, the contenders rotated
within each repetition. For each contender:

- **enqueue**: one thread queues ``--n`` no-op jobs (one 100-character
  argument each) with no worker running: microseconds per job, statements per
  job (``pg_stat_statements``, utility statements such as BEGIN not counted)
  and bytes per queued job (``pg_total_relation_size`` of its tables, indexes
  included, divided by ``--n``).
- **end to end**: ``--workers`` worker processes start and go idle; then one
  thread queues ``--n`` jobs; jobs/s is ``n / (last finished - first queued)``
  read from the records (the raw floor keeps none: its workers report the time
  of their last job), so worker start-up is not counted.
- **in a session** (flask-memqueue only): statements a job adds to the
  caller's transaction with ``options(session=...)``.

Contenders:

- ``raw``: the floor, written here: ``INSERT`` one row; a worker runs
  ``DELETE ... WHERE id = (SELECT id ... ORDER BY id FOR UPDATE SKIP LOCKED
  LIMIT 1) RETURNING`` in a loop (polling every millisecond when empty), no
  record kept, no retries, no notification.
- ``memqueue``: ``MEMQUEUE_STORAGE = "postgresql://..."``, ``flask memqueue
  worker`` processes (one thread each), LISTEN/NOTIFY on.
- ``procrastinate``: Procrastinate 3 (its ``PsycopgConnector``; sync ``defer``;
  ``app.run_worker(concurrency=1)`` processes, listen/notify on),
  run by the interpreter of a separate venv (``--procrastinate-python``), not this package's.

    python3 -m venv .bench-venv && .bench-venv/bin/pip install procrastinate 'psycopg[binary]'
    .venv/bin/python benchmarks/postgres_bench.py --procrastinate-python .bench-venv/bin/python \\
        --n 5000 --reps 3 --out benchmarks/results-postgres.md
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAYLOAD = "x" * 100

MEMQUEUE_APP = textwrap.dedent('''
    import os
    from flask import Flask
    from flask_memqueue import MemQueue

    mq = MemQueue()


    @mq.task(name="bench.noop")
    def noop(payload):
        return None


    def create_app():
        app = Flask("bench_pg")
        app.config.update(MEMQUEUE_STORAGE=os.environ["BENCH_URL"], MEMQUEUE_MAXSIZE=0,
                          MEMQUEUE_MAX_FINISHED=10_000_000, MEMQUEUE_CONSUMER=False, MEMQUEUE_URL_PREFIX=None)
        mq.init_app(app)
        return app


    app = create_app()
''')

PROCRASTINATE_APP = textwrap.dedent('''
    import os
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_URL"]))


    @app.task(name="bench.noop")
    def noop(payload):
        return None
''')


# -- roles run in their own process ----------------------------------------------------------
def role_produce(system: str, url: str, n: int, session: bool) -> dict[str, Any]:
    """Queue n jobs from one thread; seconds taken."""
    if system == "raw":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            start = time.perf_counter()
            for _ in range(n):
                conn.execute("INSERT INTO raw_jobs (args) VALUES (%s)", (PAYLOAD,))
            return {"seconds": time.perf_counter() - start}
    if system == "memqueue":
        import bench_pg

        with bench_pg.app.app_context():
            if session:
                import psycopg

                with psycopg.connect(url.partition("?")[0]) as conn:  # the app's own connection
                    conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)")
                    conn.commit()
                    start = time.perf_counter()
                    for _ in range(n):
                        conn.execute("INSERT INTO orders (item) VALUES (%s)", (PAYLOAD,))
                        bench_pg.noop.options(session=conn).delay(PAYLOAD)
                        conn.commit()
                    return {"seconds": time.perf_counter() - start}
            start = time.perf_counter()
            for _ in range(n):
                bench_pg.noop.delay(PAYLOAD)
            seconds = time.perf_counter() - start
            bench_pg.mq.shutdown(wait=False)
            return {"seconds": seconds}
    import bench_procrastinate

    with bench_procrastinate.app.open():
        start = time.perf_counter()
        for _ in range(n):
            bench_procrastinate.noop.defer(payload=PAYLOAD)
        return {"seconds": time.perf_counter() - start}


def role_work(system: str, url: str) -> None:
    """A worker until SIGTERM (raw, procrastinate); prints what it did as JSON."""
    if system == "raw":
        import psycopg

        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        done, last = 0, 0.0
        with psycopg.connect(url, autocommit=True) as conn:
            print("ready", flush=True)
            while not stop:
                row = conn.execute("DELETE FROM raw_jobs WHERE id = (SELECT id FROM raw_jobs ORDER BY id"
                                   " FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING args").fetchone()
                if row is None:
                    time.sleep(0.001)
                    continue
                done += 1
                last = time.time()
        print(json.dumps({"done": done, "last": last}), flush=True)
        return
    import bench_procrastinate

    print("ready", flush=True)
    bench_procrastinate.app.run_worker(wait=True, concurrency=1, install_signal_handlers=True)


# -- the orchestration -------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from support.servers.postgres import PostgresServer  # the tests' server, started the same way

        self.args = args
        self.server = PostgresServer(
            durable=True, settings={"shared_preload_libraries": "pg_stat_statements",
                                    "pg_stat_statements.track_utility": "off", "max_connections": "200"},
        ).start()
        self.apps = Path(tempfile.mkdtemp(prefix="memqueue-pgbench-"))
        (self.apps / "bench_pg.py").write_text(MEMQUEUE_APP)
        (self.apps / "bench_procrastinate.py").write_text(PROCRASTINATE_APP)
        self.count = 0

    def python(self, system: str) -> str:
        return os.path.abspath(self.args.procrastinate_python) if system == "procrastinate" else sys.executable

    def database(self, system: str) -> str:
        """A fresh database with the contender's tables; its URL."""
        self.count += 1
        name = f"bench{self.count}"
        with self.server.connect("postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = self.server.url().rsplit("/", 1)[0] + "/" + name
        with self.server.connect(name, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            if system == "raw":
                conn.execute("CREATE TABLE raw_jobs (id bigserial PRIMARY KEY, args text NOT NULL)")
        if system == "memqueue":
            self.run_role(system, url, "upgrade")
        if system == "procrastinate":
            self.run_role(system, url, "schema")
        with self.server.connect(name, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
        return url

    def env(self, url: str) -> dict[str, str]:
        return {**os.environ, "BENCH_URL": url, "PYTHONPATH": str(self.apps), "PYTHONUNBUFFERED": "1"}

    def run_role(self, system: str, url: str, role: str, *extra: str) -> dict[str, Any]:
        if role == "upgrade":
            argv = [str(Path(sys.executable).parent / "flask"), "--app", "bench_pg", "memqueue", "db", "upgrade"]
        elif role == "schema":
            argv = [self.python(system), "-c", "import bench_procrastinate as b; b.app.open();"
                    " b.app.schema_manager.apply_schema()"]
        else:
            argv = [self.python(system), str(Path(__file__).resolve()), "--role", role, "--system", system,
                    "--url", url, "--n", str(self.args.n), *extra]
        out = subprocess.run(argv, env=self.env(url), cwd=self.apps, capture_output=True, text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"{system} {role} failed: {out.stdout[-2000:]} {out.stderr[-3000:]}")
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {}

    def tables(self, system: str) -> str:
        return {"raw": "'raw_jobs'", "memqueue": "'memqueue_jobs'",
                "procrastinate": "'procrastinate_jobs', 'procrastinate_events'"}[system]

    def enqueue(self, system: str) -> dict[str, float]:
        url = self.database(system)
        result = self.run_role(system, url, "produce")
        n = self.args.n
        name = url.rsplit("/", 1)[1]
        with self.server.connect(name, autocommit=True) as conn:
            size = conn.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                                f" WHERE c.relname IN ({self.tables(system)}) AND c.relkind = 'r'").fetchone()[0]
            calls = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d"
                                 " ON d.oid = s.dbid WHERE d.datname = current_database()").fetchone()[0]
        out = {"enqueue_us": result["seconds"] / n * 1e6, "bytes_per_job": float(size) / n,
               "statements_per_job": float(calls) / n}
        if system == "memqueue":
            url = self.database(system)
            self.run_role(system, url, "produce", "--session")
            with self.server.connect(url.rsplit("/", 1)[1], autocommit=True) as conn:
                calls = conn.execute(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                    " WHERE d.datname = current_database() AND s.query ILIKE '%memqueue_jobs%'"
                    " AND s.query NOT ILIKE 'SELECT count(*) FROM%'").fetchone()[0]
            out["session_statements_per_job"] = float(calls) / n
        return out

    def end_to_end(self, system: str) -> float:
        url = self.database(system)
        name = url.rsplit("/", 1)[1]
        n = self.args.n
        workers = []
        for k in range(self.args.workers):
            if system == "memqueue":
                argv = [str(Path(sys.executable).parent / "flask"), "--app", "bench_pg", "memqueue", "worker"]
            else:
                argv = [self.python(system), str(Path(__file__).resolve()), "--role", "work", "--system", system,
                        "--url", url]
            log = open(self.apps / f"{system}-{self.count}-{k}.out", "w+")  # noqa: SIM115 - read after exit
            workers.append((subprocess.Popen(argv, env=self.env(url), cwd=self.apps, stdout=log,
                                             stderr=subprocess.STDOUT, text=True), log))
        try:
            deadline = time.monotonic() + 60
            for proc, log in workers:
                while True:
                    log.seek(0)
                    text = log.read()
                    if "ready" in text or "running" in text:
                        break
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{system} worker did not start: {text[-2000:]}")
                    time.sleep(0.05)
            time.sleep(2.0)  # every worker is idle and listening (Procrastinate opens its pool first)
            first = time.time()
            self.run_role(system, url, "produce")
            deadline = time.monotonic() + 900
            done_sql = {"raw": "SELECT count(*) = 0 FROM raw_jobs",
                        "memqueue": f"SELECT count(*) = {n} FROM memqueue_jobs WHERE status = 'succeeded'",
                        "procrastinate": f"SELECT count(*) = {n} FROM procrastinate_jobs WHERE status = 'succeeded'"}
            with self.server.connect(name, autocommit=True) as conn:
                while not conn.execute(done_sql[system]).fetchone()[0]:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{system}: jobs not done in time")
                    time.sleep(0.05)
                if system == "memqueue":
                    first, last = conn.execute("SELECT min(enqueued_at), max(finished_at) FROM memqueue_jobs"
                                               ).fetchone()
                elif system == "procrastinate":
                    first, last = conn.execute(
                        "SELECT extract(epoch FROM min(at) FILTER (WHERE type = 'deferred')),"
                        " extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')) FROM procrastinate_events"
                    ).fetchone()
        finally:
            lasts = []
            for proc, log in workers:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
                log.seek(0)
                for line in log.read().splitlines():
                    if line.startswith("{"):
                        lasts.append(json.loads(line)["last"])
                log.close()
        if system == "raw":
            last = max(lasts)
        return n / (float(last) - float(first))

    def close(self) -> None:
        self.server.stop()


def _median(values: list[float]) -> str:
    med = statistics.median(values)
    fmt = "{:,.0f}" if med >= 100 else "{:.2f}"
    return f"{fmt.format(med)} [{fmt.format(min(values))}–{fmt.format(max(values))}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--role", default="bench")
    parser.add_argument("--system", default="")
    parser.add_argument("--url", default="")
    parser.add_argument("--session", action="store_true")
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--procrastinate-python", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.role == "produce":
        print(json.dumps(role_produce(args.system, args.url, args.n, args.session)), flush=True)
        return
    if args.role == "work":
        role_work(args.system, args.url)
        return
    systems = ["raw", "memqueue"] + (["procrastinate"] if args.procrastinate_python else [])
    bench = Bench(args)
    results: dict[str, dict[str, list[float]]] = {s: {} for s in systems}
    try:
        for rep in range(args.reps):
            order = systems[rep % len(systems):] + systems[: rep % len(systems)]
            for system in order:
                row = bench.enqueue(system)
                row["jobs_per_s"] = bench.end_to_end(system)
                for key, value in row.items():
                    results[system].setdefault(key, []).append(value)
                print(system, {k: round(v, 2) for k, v in row.items()}, file=sys.stderr, flush=True)
    finally:
        bench.close()
    names = {"raw": "raw floor", "memqueue": "flask-memqueue", "procrastinate": "Procrastinate"}
    lines = [
        f"PostgreSQL store, {args.n:,} no-op jobs (one 100-character argument), {args.workers} worker processes,"
        f" median of {args.reps} [min–max], on one PostgreSQL 15 server (fsync and synchronous_commit on).",
        "",
        "| | " + " | ".join(names[s] for s in systems) + " |",
        "|---|" + "---|" * len(systems),
    ]
    rows = [("end to end, jobs/s", "jobs_per_s"), ("enqueue, µs/job (one thread)", "enqueue_us"),
            ("statements per enqueue", "statements_per_job"), ("bytes per queued job (table + indexes)",
                                                                "bytes_per_job")]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(_median(results[s][key]) for s in systems) + " |")
    if "session_statements_per_job" in results["memqueue"]:
        lines.append("")
        lines.append("flask-memqueue, `options(session=...)`: statements a job adds to the caller's transaction: "
                     + _median(results["memqueue"]["session_statements_per_job"]))
    if "procrastinate" in results:
        ratio = [m / p for m, p in zip(results["memqueue"]["jobs_per_s"], results["procrastinate"]["jobs_per_s"],
                                       strict=True)]
        lines.append("")
        lines.append(f"flask-memqueue / Procrastinate, end to end (per repetition): {_median(ratio)}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
