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
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.harness import FINISHED, Env, finished_job
from support.net import http
from support.servers.redis import RedisServer, stored_jobs
from support.waiting import wait_until
from support.workflows import chain_with_one_worker_killed, chord_with_one_worker_killed

DEADLINE = 60.0
PREFIX = "memqueue:{redis_app}"

pytestmark = [pytest.mark.processes, pytest.mark.servers]

MakeEnv = Callable[..., Env]


def redis_env(make_env: MakeEnv, url: str) -> Env:
    """The harness for redis_app on ``url``; its workers share the web processes' config
    (``MEMQUEUE_CONSUMER = False``): the command consumes anyway."""
    return make_env("redis_app", fields=(int, int, float), worker_env={"RT_CONSUMER": "0"}, RT_URL=url)


@pytest.fixture
def env(make_env: MakeEnv, redis_server: RedisServer) -> Env:
    return redis_env(make_env, redis_server.url())


def enqueue_block(env: Env, n: int, gate: str, **extra: str) -> None:
    """Enqueue ``block(n, gate)`` from a process of its own (that runs no consumer)."""
    code = ("import redis_app as r\napp = r.create_app()\n"
            f"with app.app_context():\n    r.mq.enqueue(r.block, {n}, {gate!r})\n")
    enqueue = env.python("enqueue", code, RT_CONSUMER="0", **extra)
    assert enqueue.wait(DEADLINE) == 0, env.output("enqueue")


def owner_of(client: Any, pid: int) -> str:
    """The owner string of process ``pid`` (it holds a lease)."""
    owners = [k.split(":l:", 1)[1] for k in client.keys(f"{PREFIX}:l:*")]
    mine = [o for o in owners if o.split(":")[0] == str(pid)]
    assert len(mine) == 1, owners
    return mine[0]


def finished_record(client: Any, n: int, task: str = "record") -> Any:
    """:func:`record_of`, once the job has finished: its last log line is written before
    the job returns, so the outcome is stored a moment after a test saw that line."""
    def finished() -> Any:
        stored = record_of(client, n, task)
        return stored if stored.status in FINISHED else None

    return wait_until(finished, DEADLINE, f"{task}({n}) to finish")


def record_of(client: Any, n: int, task: str = "record") -> Any:
    """The stored job whose first argument is ``n`` (a RedisRecord)."""
    for record in stored_jobs(client, PREFIX):
        if record.task == task and json.loads(record.args)[0] == n:
            return record
    raise AssertionError(f"no stored job {task}({n})")


# -- many processes ----------------------------------------------------------------------------
@pytest.mark.slow
def test_three_producers_and_three_workers_run_every_job_exactly_once(env: Env, redis_server: RedisServer) -> None:
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
    with redis_server.client() as c:
        assert c.hget(f"{PREFIX}:c", "succeeded") == "15000"
        assert int(c.hget(f"{PREFIX}:c", "running") or 0) == 0


def test_kill_9_one_of_two_workers_loses_nothing_and_reruns_only_its_job_after_the_lease(
    env: Env, redis_server: RedisServer
) -> None:
    """2,000 jobs, two workers; the first holds the first job numbered 1000 or more it gets,
    and is killed there. Only that job runs twice, and its second run starts after the
    killed worker's lease lapsed. The jobs the killed worker had claimed ahead of it (a
    batch) never started there: they go back to the queue uncounted and run once."""
    a = env.worker("a", RT_LEASE="2", RT_HOLD_FROM="1000")
    b = env.worker("b", RT_LEASE="2")
    producer = env.main("producer", "enqueue", "2000", RT_CONSUMER="0")
    assert producer.wait(120) == 0, env.output("producer")
    held = wait_until(lambda: [x for x in env.lines("holding") if x[1] == a.pid], DEADLINE,
                      lambda: "worker a to hold a job: " + env.output("a"))[0][0]
    with redis_server.client() as c:
        owner = owner_of(c, a.pid)
        # a job claimed ahead (a batch, or handed over while idle) is said to have started
        # within 0.1 s: only then is it counted if its worker dies. The outcomes of the jobs the
        # worker ran before it are written within FLUSH_AFTER (0.1 s) too, but maybe by a later
        # turn of the heartbeat than the one that marked it started: a kill before that would
        # run them again (at least once, as documented). Wait for both.
        def only_the_held_job_started() -> bool:
            started = [json.loads(r.args)[0] for r in stored_jobs(c, PREFIX)
                       if r.owner == owner and r.status == "running" and not r.prefetched]
            return started == [held]

        wait_until(only_the_held_job_started, DEADLINE,
                   "the heartbeat to mark it started and to write the outcomes of the jobs before it")
        lapses_at = time.time() + c.pttl(f"{PREFIX}:l:{owner}") / 1000
        os.kill(a.pid, signal.SIGKILL)
        assert a.wait(DEADLINE) == -signal.SIGKILL
        running = {r.id: r for r in stored_jobs(c, PREFIX) if r.owner == owner}
        ahead = [json.loads(r.args)[0] for r in running.values() if r.prefetched]
        assert [json.loads(r.args)[0] for r in running.values() if not r.prefetched] == [held], running
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
        assert (stored.status, stored.attempts) == ("succeeded", 2)  # one attempt counted for the interrupted run
        for n in ahead:  # claimed ahead by the killed worker, never started there: not counted
            assert (record_of(c, n).status, record_of(c, n).attempts) == ("succeeded", 1)
        assert c.hget(f"{PREFIX}:c", "succeeded") == "2000"


@pytest.mark.slow
def test_a_job_running_three_leases_on_a_live_worker_is_never_taken_over(env: Env, redis_server: RedisServer) -> None:
    a = env.worker("a", RT_LEASE="2")
    b = env.worker("b", RT_LEASE="2")  # idle: it looks for lapsed leases every second
    producer = env.main("producer", "enqueue", "0", RT_CONSUMER="0")
    assert producer.wait(DEADLINE) == 0
    enqueue_block(env, 7, "gate")
    (n, pid, started), = wait_until(lambda: env.lines("start"), DEADLINE, lambda: env.output("a") + env.output("b"))
    with redis_server.client() as c:
        owner = owner_of(c, pid)

        def three_leases_later() -> bool:
            assert c.exists(f"{PREFIX}:l:{owner}"), "the live worker's lease lapsed"
            return time.time() >= started + 3 * 2.0

        wait_until(three_leases_later, DEADLINE, "three leases to pass", interval=0.05)
        env.open_gate("gate")
        wait_until(lambda: env.lines("done"), DEADLINE, lambda: env.output("a") + env.output("b"))
        assert [(x[0], x[1]) for x in env.lines("start")] == [(7, pid)], "the job was taken over"
        assert [(x[0], x[1]) for x in env.lines("done")] == [(7, pid)]
        stored = finished_record(c, 7, "block")
        assert (stored.status, stored.attempts) == ("succeeded", 1)
    env.stop(a, "a")
    env.stop(b, "b")


# -- Redis itself stopping -------------------------------------------------------------------------
SECRET = "s3cret-pass/word"


def test_redis_stopped_and_started_again_with_aof(tmp_path: Path, make_env: MakeEnv) -> None:
    """Enqueue fails clearly (password redacted) while Redis is down; the workers log the
    outage once, resume by themselves, and every acknowledged job runs exactly once."""
    with RedisServer(tmp_path / "redis", aof="always", password=SECRET).start() as server:
        quoted = SECRET.replace("/", "%2F")
        e = redis_env(make_env, f"redis://:{quoted}@127.0.0.1:{server.port}/0")
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
            e.open_gate("stop-producing")
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


@pytest.mark.slow
def test_redis_paused_longer_than_the_lease(tmp_path: Path, make_env: MakeEnv) -> None:
    """SIGSTOP redis-server for twice the lease while a job runs, then SIGCONT: the job's
    outcome is recorded once; it ran once, or twice if its lease was found lapsed (then the
    late outcome of the first run was discarded and logged)."""
    with RedisServer(tmp_path / "redis").start() as server:
        e = redis_env(make_env, server.url())
        try:
            a = e.worker("a", RT_LEASE="1")
            b = e.worker("b", RT_LEASE="1")
            c = server.client()
            listener = c.pubsub()
            listener.subscribe(f"{PREFIX}:done")
            enqueue_block(e, 1, "gate")
            (_, first, _), = wait_until(lambda: e.lines("start"), DEADLINE, lambda: e.output("a"))
            paused = time.time()
            server.pause()
            try:
                wait_until(lambda: time.time() >= paused + 2.0, DEADLINE, "twice the lease", interval=0.05)
            finally:
                server.resume()

            e.open_gate("gate")  # the first run ends now; whether its lease is found lapsed first is a race
            wait_until(lambda: record_of(c, 1, "block").status == "succeeded", DEADLINE,
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
            assert 1 <= len(starts) <= 2 and stored.attempts == len(starts)
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
    env: Env
) -> None:
    token = "redis-test-token-0123456789"
    worker = env.worker("worker")
    with env.gunicorn(app="redis_app:create_app()", preload=True, env={"RT_TOKEN": token}, ready_path="/pid") as web:
        auth = {"Authorization": f"Bearer {token}"}
        ids = []
        pids = set()
        for i in range(60):
            r = http("POST", web.url + "/memqueue/produce", json={"message": f"m{i}"}, headers=auth)
            assert r.status == 202, r.text
            ids.append(r.json()["id"])
            pids.add(int(r.headers["X-Pid"]))

        wait_until(lambda: len(env.events("message")) >= 60, DEADLINE, lambda: f"60 messages: {env.events('message')}")
        for job_id in ids:  # any web process reads any job
            job = finished_job(web, job_id, headers=auth)
            assert job["status"] == "succeeded", job
    env.stop(worker, "worker")
    got = Counter(m[1] for m in env.events("message"))
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


def test_workers_on_two_hosts_and_a_cut_link(make_env: MakeEnv, two_hosts: tuple[str, str, RedisServer]) -> None:
    """A worker in each namespace ("host"), reaching Redis over its own veth link. Cutting
    host a's link while it runs a job moves that job to host b once a's lease lapsed."""
    ns_a, ns_b, server = two_hosts
    e = redis_env(make_env, "unused")
    try:
        a = e.worker("a", prefix=("ip", "netns", "exec", ns_a), RT_URL=f"redis://10.203.1.1:{server.port}/0",
                     RT_LEASE="2")
        enqueue_block(e, 1, "gate-a", RT_URL=server.url())
        wait_until(lambda: e.lines("start"), DEADLINE, lambda: e.output("a"))
        b = e.worker("b", prefix=("ip", "netns", "exec", ns_b), RT_URL=f"redis://10.203.2.1:{server.port}/0",
                     RT_LEASE="2")
        with server.client() as c:
            cut = time.time()
            r = _ip("link", "set", f"vh0{os.getpid() % 100000}", "down")
            assert r.returncode == 0, r.stderr
            e.open_gate("gate-a")  # host a would finish now, but cannot tell Redis
            wait_until(lambda: len(e.lines("done")) >= 2, DEADLINE,
                       lambda: f"the job to run on host b: {e.log.read_text()} {e.output('b')}")
            runs = e.lines("start")
            assert [pid for _, pid, _ in runs] == [a.pid, b.pid]
            assert runs[1][2] >= cut + 2.0 * 2 / 3, "taken over before the lease lapsed"
            stored = finished_record(c, 1, "block")
            assert (stored.status, stored.attempts) == ("succeeded", 2)
        e.stop(b, "b")
    finally:
        e.cleanup()


@pytest.mark.parametrize("credentials", ["wrong-one", None], ids=["wrong-password", "no-password"])
def test_a_worker_refused_by_redis_says_so_once_and_exits_with_an_error(make_env: MakeEnv, tmp_path: Path,
                                                                        credentials: str | None) -> None:
    """A refused credential is a configuration error, not an outage: ``flask memqueue worker``
    (four consumer threads) exits non-zero by itself, saying so once, without a traceback,
    and without the password. It used to back off for ever, log a traceback per thread,
    and exit 0 on SIGTERM."""
    with RedisServer(tmp_path / "r", password="right-one").start() as server:
        auth = f":{credentials}@" if credentials else ""
        env = redis_env(make_env, f"redis://{auth}127.0.0.1:{server.port}/0")
        worker = env.worker("worker", "--threads", "4", wait=False)
        code = worker.wait(DEADLINE)  # by itself: no signal is sent
        output = env.output("worker")
    assert code == 1, output
    assert output.count("refuses this app") == 1, output
    assert "refused the credentials" in output and "configuration error, not an outage" in output, output
    if credentials is None:
        assert "needs a password and none was given" in output, output
    assert "Traceback" not in output and "wrong-one" not in output, output


# -- workflows (issue 21) ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_chord_of_2000_over_3_workers_with_one_killed_calls_back_once_with_every_result(
    env: Env, redis_server: RedisServer
) -> None:
    """The callback runs exactly once, with all 2,000 results in member order, although a worker
    is SIGKILLed mid-way: its running member is taken over once its lease lapses, and each
    member's outcome releases (or counts toward) the callback in the script that records it."""
    workers = [env.worker(f"worker{k}", RT_LEASE="2") for k in range(3)]
    producer = env.main("producer", "chord", "2000", RT_CONSUMER="0")
    chord_with_one_worker_killed(env, workers, producer, DEADLINE)
    records = stored_jobs(redis_server.client(), PREFIX)
    assert len(records) == 2001 and {r.status for r in records} == {"succeeded"}


@pytest.mark.slow
def test_a_chain_of_200_links_completes_although_a_worker_is_killed_in_the_middle(
    env: Env, redis_server: RedisServer
) -> None:
    workers = [env.worker(f"worker{k}", RT_LEASE="2") for k in range(2)]
    producer = env.main("producer", "chain", "200", RT_CONSUMER="0")
    chain_with_one_worker_killed(env, workers, producer, DEADLINE)
    records = stored_jobs(redis_server.client(), PREFIX)
    assert {r.status for r in records} == {"succeeded"}
    assert max(int(r.result) for r in records) == 200
