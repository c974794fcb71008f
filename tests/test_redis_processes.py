"""The Redis store with real processes, a real redis-server and real signals.

Each test copies ``tests/apps/redis_app.py`` into a temporary directory and
runs it from there: producers (``python -c "import redis_app; ..."``),
``flask memqueue worker`` processes, gunicorn. Jobs write what they do to
``runs.log`` with one ``O_APPEND`` write per line (with the time), so the log
is the ground truth of which job ran how often, where and when. Every wait is
bounded (``wait_until`` with a deadline, ``Popen.wait(timeout)``); jobs that
must stay running wait for a gate file the test creates once it has seen
what it waits for, never for time to pass.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, shared_server
from servers import bin_path, gunicorn, http, wait_until

APP_SOURCE = Path(__file__).resolve().parent / "apps" / "redis_app.py"
DEADLINE = 60.0
MAIN = "import redis_app; redis_app.main()"
PREFIX = "memqueue:{redis_app}"


class Env:
    """A temporary app directory, its log, and the processes a test started."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.src = tmp_path / "src"
        self.src.mkdir()
        shutil.copy(APP_SOURCE, self.src / "redis_app.py")
        self.dir = tmp_path / "data"
        self.dir.mkdir()
        self.log = self.dir / "runs.log"
        self.env = {"RT_URL": url, "RT_DIR": str(self.dir), "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen[bytes]] = []

    def lines(self, kind: str) -> list[tuple[int, int, float]]:
        """``(n, pid, time)`` of every ``<kind> <n> <pid> <time>`` line of runs.log."""
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            fields = line.split()
            if fields and fields[0] == kind and len(fields) >= 4:
                out.append((int(fields[1]), int(fields[2]), float(fields[3])))
        return out

    def popen(self, argv: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        environ = {**os.environ, **self.env, **env}
        for key in ("WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD"):
            environ.pop(key, None)
        out = (self.dir / f"{name}.out").open("wb")
        try:
            proc = subprocess.Popen(argv, cwd=self.src, env=environ, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def output(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.out").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def main(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        return self.popen([sys.executable, "-c", MAIN, *args], name, **env)

    def worker(self, name: str, prefix: tuple[str, ...] = (), **env: str) -> subprocess.Popen[bytes]:
        proc = self.popen([*prefix, str(bin_path("flask")), "--app", "redis_app", "memqueue", "worker"], name,
                          RT_CONSUMER="0", **env)
        wait_until(lambda: f"memqueue worker {proc.pid}: running" in self.output(name) or proc.poll() is not None,
                   DEADLINE, lambda: f"{name} to start: {self.output(name)}")
        assert proc.poll() is None, self.output(name)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], name: str) -> None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0, self.output(name)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)


@pytest.fixture
def server() -> RedisServer:
    """The session's redis-server, empty."""
    s = shared_server()
    s.flush()
    return s


@pytest.fixture
def env(tmp_path: Path, server: RedisServer) -> Iterator[Env]:
    e = Env(tmp_path, server.url())
    yield e
    e.cleanup()


def owner_of(client: Any, pid: int) -> str:
    """The owner string of process ``pid`` (it holds a lease)."""
    owners = [k.split(":l:", 1)[1] for k in client.keys(f"{PREFIX}:l:*")]
    mine = [o for o in owners if o.split(":")[0] == str(pid)]
    assert len(mine) == 1, owners
    return mine[0]


def record_of(client: Any, n: int, task: str = "record") -> dict[str, str]:
    """The stored job whose first argument is ``n``."""
    for key in client.scan_iter(f"{PREFIX}:j:*", count=1000):
        h = json.loads(client.get(key))
        if h.get("t") == task and (h.get("a", "").startswith(f"[{n},") or h.get("a") == f"[{n}]"):
            return dict(h)
    raise AssertionError(f"no stored job {task}({n})")


# -- many processes ----------------------------------------------------------------------------
def test_three_producers_and_three_workers_run_every_job_exactly_once(env: Env, server: RedisServer) -> None:
    workers = [env.worker(f"worker{k}") for k in range(3)]
    producers = [env.main(f"producer{k}", "enqueue", "5000", RT_CONSUMER="0", RT_OFFSET=str(k * 5000),
                          RT_THREADS="2") for k in range(3)]
    for k, proc in enumerate(producers):
        assert proc.wait(180) == 0, env.output(f"producer{k}")
    wait_until(lambda: len(env.lines("run")) >= 15_000 or any(w.poll() is not None for w in workers), 180,
               lambda: f"15,000 runs (have {len(env.lines('run'))})")
    for k, w in enumerate(workers):
        env.stop(w, f"worker{k}")
    runs = env.lines("run")
    counts = Counter(n for n, _, _ in runs)
    assert set(counts) == set(range(15_000)), f"lost jobs: {sorted(set(range(15_000)) - set(counts))[:20]}"
    assert [n for n, c in counts.items() if c > 1] == [], "jobs ran twice"
    ran_in = Counter(pid for _, pid, _ in runs)
    assert set(ran_in) == {w.pid for w in workers}, f"every worker takes its share: {ran_in}"
    with server.client() as c:
        assert c.hget(f"{PREFIX}:c", "succeeded") == "15000"
        assert int(c.hget(f"{PREFIX}:c", "running") or 0) == 0


def test_kill_9_one_of_two_workers_loses_nothing_and_reruns_only_its_job_after_the_lease(
    env: Env, server: RedisServer
) -> None:
    """2,000 jobs, two workers; the first holds the first job numbered 1000 or more it gets,
    and is killed there. Only that job runs twice, and its second run starts after the
    killed worker's lease lapsed."""
    a = env.worker("a", RT_LEASE="2", RT_HOLD_FROM="1000")
    b = env.worker("b", RT_LEASE="2")
    producer = env.main("producer", "enqueue", "2000", RT_CONSUMER="0")
    assert producer.wait(120) == 0, env.output("producer")
    held = wait_until(lambda: [x for x in env.lines("holding") if x[1] == a.pid], DEADLINE,
                      lambda: "worker a to hold a job: " + env.output("a"))[0][0]
    with server.client() as c:
        owner = owner_of(c, a.pid)
        running = set(c.smembers(f"{PREFIX}:h:{owner}"))
        lapses_at = time.time() + c.pttl(f"{PREFIX}:l:{owner}") / 1000
        os.kill(a.pid, signal.SIGKILL)
        assert a.wait(DEADLINE) == -signal.SIGKILL
        assert len(running) == 1
        wait_until(lambda: len({n for n, _, _ in env.lines("run")}) == 2000 and len(env.lines("run")) >= 2001,
                   DEADLINE, lambda: f"every job to run, {held} twice: {len(env.lines('run'))} runs")
        env.stop(b, "b")
        runs = env.lines("run")
        counts = Counter(n for n, _, _ in runs)
        assert set(counts) == set(range(2000)), "lost jobs"
        assert {n for n, c in counts.items() if c > 1} == {held}, "only the job the killed worker held runs again"
        again = [t for n, pid, t in runs if n == held and pid == b.pid]
        assert len(again) == 1 and again[0] >= lapses_at, (again, lapses_at)
        stored = record_of(c, held)
        assert (stored["s"], stored["n"]) == ("succeeded", "2")  # one attempt counted for the interrupted run
        assert c.hget(f"{PREFIX}:c", "succeeded") == "2000"


def test_a_job_running_three_leases_on_a_live_worker_is_never_taken_over(env: Env, server: RedisServer) -> None:
    a = env.worker("a", RT_LEASE="2")
    b = env.worker("b", RT_LEASE="2")  # idle: it looks for lapsed leases every second
    producer = env.main("producer", "enqueue", "0", RT_CONSUMER="0")
    assert producer.wait(DEADLINE) == 0
    enqueue = env.popen([sys.executable, "-c", (
        "import redis_app as r\napp = r.create_app()\nwith app.app_context():\n    r.mq.enqueue(r.block, 7, 'gate')\n"
    )], "enqueue", RT_CONSUMER="0")
    assert enqueue.wait(DEADLINE) == 0, env.output("enqueue")
    (n, pid, started), = wait_until(lambda: env.lines("start"), DEADLINE, lambda: env.output("a") + env.output("b"))
    with server.client() as c:
        owner = owner_of(c, pid)

        def three_leases_later() -> bool:
            assert c.exists(f"{PREFIX}:l:{owner}"), "the live worker's lease lapsed"
            return time.time() >= started + 3 * 2.0

        wait_until(three_leases_later, DEADLINE, "three leases to pass", interval=0.05)
        (env.dir / "gate").touch()
        wait_until(lambda: env.lines("done"), DEADLINE, lambda: env.output("a") + env.output("b"))
        assert [(x[0], x[1]) for x in env.lines("start")] == [(7, pid)], "the job was taken over"
        assert [(x[0], x[1]) for x in env.lines("done")] == [(7, pid)]
        stored = record_of(c, 7, "block")
        assert (stored["s"], stored["n"]) == ("succeeded", "1")
    env.stop(a, "a")
    env.stop(b, "b")


# -- Redis itself stopping -------------------------------------------------------------------------
SECRET = "s3cret-pass/word"


def test_redis_stopped_and_started_again_with_aof(tmp_path: Path) -> None:
    """Enqueue fails clearly (password redacted) while Redis is down; the workers log the
    outage once, resume by themselves, and every acknowledged job runs exactly once."""
    with RedisServer(tmp_path / "redis", aof="always", password=SECRET).start() as server:
        quoted = SECRET.replace("/", "%2F")
        e = Env(tmp_path, f"redis://:{quoted}@127.0.0.1:{server.port}/0")
        try:
            workers = [e.worker(f"worker{k}") for k in range(2)]
            producer = e.main("producer", "produce", "100000", RT_CONSUMER="0")

            def acked() -> set[int]:
                return {int(line.split()[1]) for line in e.output("producer").splitlines() if line.startswith("acked")}

            def refused() -> list[str]:
                return [line for line in e.output("producer").splitlines() if line.startswith("refused")]

            wait_until(lambda: len(acked()) >= 200, DEADLINE, lambda: e.output("producer"))
            port = server.port
            server.stop()
            wait_until(lambda: len(refused()) >= 3, DEADLINE, lambda: e.output("producer"))
            before = len(acked())
            server.start(port)
            wait_until(lambda: len(acked()) >= before + 200, DEADLINE, lambda: e.output("producer"))
            (e.dir / "stop-producing").touch()
            assert producer.wait(DEADLINE) == 0, e.output("producer")
            done = acked()
            wait_until(lambda: done <= {n for n, _, _ in e.lines("run")}, DEADLINE,
                       lambda: f"acknowledged jobs that never ran: {sorted(done - {n for n, _, _ in e.lines('run')})}")
            for k, w in enumerate(workers):
                e.stop(w, f"worker{k}")
        finally:
            e.cleanup()
    counts = Counter(n for n, _, _ in e.lines("run"))
    assert [n for n, c in counts.items() if c > 1] == [], "jobs ran twice"
    message = refused()[0]
    assert "RedisUnavailable" in message and "unreachable" in message, message
    assert f"redis://:***@127.0.0.1:{port}/0" in message and SECRET not in message and quoted not in message
    for k in range(2):
        out = e.output(f"worker{k}")
        assert out.count("fails:") == 1 and out.count("works again") == 1, out
        assert SECRET not in out and quoted not in out


def test_redis_paused_longer_than_the_lease(tmp_path: Path) -> None:
    """SIGSTOP redis-server for twice the lease while a job runs, then SIGCONT: the job's
    outcome is recorded once; it ran once, or twice if its lease was found lapsed (then the
    late outcome of the first run was discarded and logged)."""
    with RedisServer(tmp_path / "redis").start() as server:
        e = Env(tmp_path, server.url())
        try:
            a = e.worker("a", RT_LEASE="1")
            b = e.worker("b", RT_LEASE="1")
            c = server.client()
            listener = c.pubsub()
            listener.subscribe(f"{PREFIX}:done")
            enqueue = e.popen([sys.executable, "-c", (
                "import redis_app as r\napp = r.create_app()\n"
                "with app.app_context():\n    r.mq.enqueue(r.block, 1, 'gate')\n"
            )], "enqueue", RT_CONSUMER="0")
            assert enqueue.wait(DEADLINE) == 0, e.output("enqueue")
            (_, first, _), = wait_until(lambda: e.lines("start"), DEADLINE, lambda: e.output("a"))
            paused = time.time()
            server.pause()
            try:
                wait_until(lambda: time.time() >= paused + 2.0, DEADLINE, "twice the lease", interval=0.05)
            finally:
                server.resume()

            (e.dir / "gate").touch()  # the first run ends now; whether its lease is found lapsed first is a race
            wait_until(lambda: record_of(c, 1, "block")["s"] == "succeeded", DEADLINE,
                       lambda: e.output("a") + e.output("b"))
            published = []
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:  # every publish so far has arrived by then (one connection, in order)
                m = listener.get_message(timeout=0.2)
                if m is not None and m["type"] == "message":
                    published.append(m["data"])
            assert len(published) == 1, f"the outcome was recorded {len(published)} times"
            starts = e.lines("start")
            stored = record_of(c, 1, "block")
            assert 1 <= len(starts) <= 2 and stored["n"] == str(len(starts))
            if len(starts) == 2:
                logs = e.output("a") + e.output("b")
                assert "lease lapsed" in logs or "had lapsed" in logs, logs
            listener.close()
            c.close()
            for name, w in (("a", a), ("b", b)):
                e.stop(w, name)
        finally:
            e.cleanup()


# -- gunicorn --------------------------------------------------------------------------------------
def test_gunicorn_preload_two_workers_and_a_memqueue_worker_run_each_message_once(
    env: Env, tmp_path: Path, server: RedisServer
) -> None:
    token = "redis-test-token-0123456789"
    worker = env.worker("worker")
    with gunicorn("redis_app:create_app()", cwd=env.src, log_path=tmp_path / "gunicorn.log", preload=True,
                  env={**env.env, "RT_TOKEN": token}, ready_path="/pid") as web:
        auth = {"Authorization": f"Bearer {token}"}
        ids = []
        pids = set()
        for i in range(60):
            r = http("POST", web.url + "/memqueue/produce", json={"message": f"m{i}"}, headers=auth)
            assert r.status == 202, r.text
            ids.append(r.json()["id"])
            pids.add(int(r.headers["X-Pid"]))

        def messages() -> list[list[str]]:
            return [line.split() for line in env.log.read_text().splitlines()
                    if line.startswith("message")] if env.log.exists() else []

        wait_until(lambda: len(messages()) >= 60, DEADLINE, lambda: f"60 messages: {messages()}")
        for job_id in ids:  # any web process reads any job
            r = http("GET", f"{web.url}/memqueue/jobs/{job_id}", headers=auth)
            assert r.status == 200 and r.json()["status"] == "succeeded", r.text
    env.stop(worker, "worker")
    got = Counter(m[1] for m in messages())
    assert got == Counter(f"m{i}" for i in range(60)), "a message was lost or ran twice"
    assert len(ids) == len(set(ids))


# -- several hosts ---------------------------------------------------------------------------------
def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[tuple[str, str, RedisServer]]:
    """Two network namespaces, each linked to this one by a veth pair; a redis-server here
    listening on this side of both links. Yields (namespace a, namespace b, server)."""
    if not shutil.which("ip"):
        pytest.skip("the 'ip' command (iproute2) is not installed: cannot make network namespaces")
    tag = f"{os.getpid() % 100000}"
    names = [f"mqa{tag}", f"mqb{tag}"]
    made: list[str] = []
    links: list[str] = []
    try:
        for k, ns in enumerate(names):
            r = _ip("netns", "add", ns)
            if r.returncode != 0:
                pytest.skip(f"cannot make a network namespace here (ip netns add: {r.stderr.strip()});"
                            " the several-hosts test needs root and CAP_SYS_ADMIN")
            made.append(ns)
            host, peer = f"vh{k}{tag}", f"vp{k}{tag}"
            subnet = f"10.203.{k + 1}"
            for cmd in (("link", "add", host, "type", "veth", "peer", "name", peer),
                        ("link", "set", peer, "netns", ns),
                        ("addr", "add", f"{subnet}.1/30", "dev", host),
                        ("link", "set", host, "up"),
                        ("-n", ns, "addr", "add", f"{subnet}.2/30", "dev", peer),
                        ("-n", ns, "link", "set", peer, "up"),
                        ("-n", ns, "link", "set", "lo", "up")):
                r = _ip(*cmd)
                if r.returncode != 0:
                    pytest.skip(f"cannot link a network namespace here (ip {' '.join(cmd)}: {r.stderr.strip()})")
            links.append(host)
        server = RedisServer(tmp_path / "redis", bind="10.203.1.1 10.203.2.1 127.0.0.1").start()
        try:
            yield names[0], names[1], server
        finally:
            server.stop()
    finally:
        for host in links:
            _ip("link", "del", host)
        for ns in made:
            _ip("netns", "del", ns)


def test_workers_on_two_hosts_and_a_cut_link(tmp_path: Path, two_hosts: tuple[str, str, RedisServer]) -> None:
    """A worker in each namespace ("host"), reaching Redis over its own veth link. Cutting
    host a's link while it runs a job moves that job to host b once a's lease lapsed."""
    ns_a, ns_b, server = two_hosts
    e = Env(tmp_path, "unused")
    try:
        a = e.worker("a", ("ip", "netns", "exec", ns_a), RT_URL=f"redis://10.203.1.1:{server.port}/0",
                     RT_LEASE="2")
        enqueue = e.popen([sys.executable, "-c", (
            "import redis_app as r\napp = r.create_app()\n"
            "with app.app_context():\n    r.mq.enqueue(r.block, 1, 'gate-a')\n"
        )], "enqueue", RT_CONSUMER="0", RT_URL=server.url())
        assert enqueue.wait(DEADLINE) == 0, e.output("enqueue")
        wait_until(lambda: e.lines("start"), DEADLINE, lambda: e.output("a"))
        b = e.worker("b", ("ip", "netns", "exec", ns_b), RT_URL=f"redis://10.203.2.1:{server.port}/0",
                     RT_LEASE="2")
        with server.client() as c:
            cut = time.time()
            r = _ip("link", "set", f"vh0{os.getpid() % 100000}", "down")
            assert r.returncode == 0, r.stderr
            (e.dir / "gate-a").touch()  # host a would finish now, but cannot tell Redis
            wait_until(lambda: len(e.lines("done")) >= 2, DEADLINE,
                       lambda: f"the job to run on host b: {e.log.read_text()} {e.output('b')}")
            runs = e.lines("start")
            assert [pid for _, pid, _ in runs] == [a.pid, b.pid]
            assert runs[1][2] >= cut + 2.0 * 2 / 3, "taken over before the lease lapsed"
            stored = record_of(c, 1, "block")
            assert (stored["s"], stored["n"]) == ("succeeded", "2")
        e.stop(b, "b")
    finally:
        e.cleanup()


@pytest.mark.parametrize("credentials", ["wrong-one", None], ids=["wrong-password", "no-password"])
def test_a_worker_refused_by_redis_says_so_once_and_exits_with_an_error(tmp_path: Path,
                                                                        credentials: str | None) -> None:
    """A refused credential is a configuration error, not an outage: ``flask memqueue worker``
    (four consumer threads) exits non-zero by itself, saying so once, without a traceback,
    and without the password. It used to back off for ever, log a traceback per thread,
    and exit 0 on SIGTERM."""
    with RedisServer(tmp_path / "r", password="right-one").start() as server:
        auth = f":{credentials}@" if credentials else ""
        env = Env(tmp_path, f"redis://{auth}127.0.0.1:{server.port}/0")
        try:
            worker = env.popen([str(bin_path("flask")), "--app", "redis_app", "memqueue", "worker", "--threads", "4"],
                               "worker", RT_CONSUMER="0")
            code = worker.wait(DEADLINE)  # by itself: no signal is sent
            output = env.output("worker")
        finally:
            env.cleanup()
    assert code == 1, output
    assert output.count("refuses this app") == 1, output
    assert "refused the credentials" in output and "configuration error, not an outage" in output, output
    if credentials is None:
        assert "needs a password and none was given" in output, output
    assert "Traceback" not in output and "wrong-one" not in output, output
