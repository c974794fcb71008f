"""The workflow kill scenarios (issue 21) that every shared store's process tests run the same way.

A test starts the workers and the producer its store needs (environment,
lease) and hands them here; what is checked of the store's records after
stays in the test.
"""

from __future__ import annotations

import os
import signal
import subprocess

from .harness import Env
from .waiting import wait_until

Process = subprocess.Popen[bytes]


def chord_with_one_worker_killed(env: Env, workers: list[Process], producer: Process, deadline: float) -> None:
    """A chord of 2,000 members: once 600 ran, ``workers[0]`` is SIGKILLed; the callback runs
    exactly once with every result, and every member ran."""
    assert producer.wait(deadline) == 0, env.output("producer")
    wait_until(lambda: len(env.lines("member")) >= 600, 120,
               lambda: f"600 members run (have {len(env.lines('member'))})")
    os.kill(workers[0].pid, signal.SIGKILL)
    assert workers[0].wait(deadline) == -signal.SIGKILL
    wait_until(lambda: env.lines("callback"), 180, lambda: _no_callback(env, len(workers)))
    for k, worker in enumerate(workers[1:], start=1):
        env.stop(worker, f"worker{k}")
    callbacks = [f[1:] for f in env.events("callback")]  # callback <how many> <sum> <pid>
    assert [(int(n), int(total)) for n, total, _pid in callbacks] == [(2000, sum(range(2000)))], "not once"
    assert {n for n, *_ in env.lines("member")} == set(range(2000))


def _no_callback(env: Env, workers: int) -> str:
    """What a test that waited in vain for the callback says: the members seen, and the end of
    each live worker's output (a failed callback, a store error)."""
    members = env.lines("member")
    tails = "\n".join(f"--- worker{k}:\n{env.output(f'worker{k}')[-2000:]}" for k in range(1, workers))
    return (f"the callback ({len(members)} member lines, {len({n for n, *_ in members})} distinct members);"
            f" the live workers' output ends:\n{tails}")


def chain_with_one_worker_killed(env: Env, workers: list[Process], producer: Process, deadline: float) -> None:
    """A chain of 200 links: once 60 ran, the worker that ran the latest link (likely the one
    running the next) is SIGKILLed; every link runs."""
    assert producer.wait(deadline) == 0, env.output("producer")
    wait_until(lambda: len(env.lines("link")) >= 60, 120, lambda: f"60 links run (have {len(env.lines('link'))})")
    pid = env.lines("link")[-1][1]
    victim = next(w for w in workers if w.pid == pid)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(deadline) == -signal.SIGKILL
    wait_until(lambda: any(n == 199 for n, *_ in env.lines("link")), 180,
               lambda: f"the last link (have {len(env.lines('link'))})")
    for k, worker in enumerate(workers):
        if worker is not victim:
            env.stop(worker, f"worker{k}")
    assert {n for n, *_ in env.lines("link")} == set(range(200))
