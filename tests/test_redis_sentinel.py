"""The Redis store under Sentinel, with real processes: a master, two replicas and three
``redis-server --sentinel`` processes on loopback (free ports, each in a directory of
the test's own), a producer and two ``flask memqueue worker`` processes, and the
master killed with SIGKILL under load.

What it proves is what docs/storage.rst promises for Sentinel: the workers and the
producer find the promoted replica by themselves (no restart), and with
``wait_replicas=1`` every job whose enqueue was acknowledged runs at least once (an
acknowledged write reached a replica before the reply; with asynchronous replication
alone the last writes before the kill may be lost, which is why the test asks for it).
Two replicas, so that a replica is left to confirm writes once one of them is master.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.harness import Env
from support.servers.redis import SentinelDeployment
from support.waiting import wait_until

pytestmark = [pytest.mark.processes, pytest.mark.servers, pytest.mark.slow]

DEADLINE = 60.0
PASSWORD = "s3ntinel-data-pass"
MakeEnv = Callable[..., Env]


def test_the_master_killed_under_load_is_replaced_without_a_restart_and_no_acknowledged_job_is_lost(
        tmp_path: Path, make_env: MakeEnv) -> None:
    with SentinelDeployment(tmp_path / "redis", password=PASSWORD).start() as deployment:
        url = deployment.url(wait_replicas=1, wait_timeout=1, socket_timeout=2, socket_connect_timeout=2)
        env = make_env("redis_app", fields=(int, int, float), worker_env={"RT_CONSUMER": "0"}, RT_URL=url)
        workers = [env.worker(f"worker{k}") for k in range(2)]
        producer = env.main("producer", "produce", "100000", RT_CONSUMER="0")

        def acked() -> set[int]:
            return {int(line.split()[1]) for line in env.output("producer").splitlines() if line.startswith("acked")}

        def refused() -> list[str]:
            return [line for line in env.output("producer").splitlines() if line.startswith("refused")]

        def ran() -> set[int]:
            return {n for n, _, _ in env.lines("run")}

        wait_until(lambda: len(acked()) >= 300 and len(ran()) >= 100, DEADLINE,
                   lambda: env.output("producer") + env.output("worker0"))
        old = deployment.master.port
        deployment.kill_master()
        wait_until(lambda: deployment.master_port() not in (None, old), DEADLINE, "the sentinels to promote a replica")
        before = len(acked())
        ran_before = len(ran())
        # the producer and the workers found the new master by themselves
        wait_until(lambda: len(acked()) >= before + 300 and len(ran()) >= ran_before + 300, DEADLINE,
                   lambda: f"enqueues and runs on the new master: {env.output('producer')[-2000:]}")
        env.open_gate("stop-producing")
        assert producer.wait(DEADLINE) == 0, env.output("producer")
        done = acked()
        wait_until(lambda: done <= ran(), DEADLINE,
                   lambda: f"acknowledged jobs that never ran: {sorted(done - ran())[:50]}")
        assert all(w.poll() is None for w in workers), "a worker exited: " + env.output("worker0")
        for k, w in enumerate(workers):
            env.stop(w, f"worker{k}")
    shown = env.output("producer") + env.output("worker0") + env.output("worker1")
    assert PASSWORD not in shown, "the password was shown"
    for line in refused():  # refused while no master was known, or fewer replicas confirmed in time
        assert "RedisUnavailable" in line, line
