"""Rate and concurrency limits with real processes (issue 24): three ``flask memqueue worker``
processes on one SQLite journal, one redis-server and one PostgreSQL database. Jobs log when
they start and end (one O_APPEND write each, the ground truth), so the tests count overlaps
and starts, never time thresholds."""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from support import markers
from support.harness import Env
from support.waiting import wait_until

DEADLINE = 90.0

pytestmark = [pytest.mark.processes]


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=getattr(pytest.mark, markers.SERVERS)),
                        pytest.param("postgres", marks=getattr(pytest.mark, markers.SERVERS))])
def env(request: pytest.FixtureRequest, make_env: Callable[..., Env], tmp_path: Path) -> Env:
    if request.param == "sqlite":
        return make_env("ratelimit_app", fields=(int, str, int, float), RL_URL=f"sqlite:///{tmp_path / 'jobs.db'}")
    if request.param == "redis":
        return make_env("ratelimit_app", fields=(int, str, int, float),
                        RL_URL=request.getfixturevalue("redis_server").url(), RL_LEASE="2")
    return make_env("ratelimit_app", fields=(int, str, int, float), RL_URL=request.getfixturevalue("postgres_url"),
                    RL_LEASE="2")


def enqueue(env: Env, mode: str, n: int = 0) -> None:
    proc = env.main(f"enqueue-{mode}", mode, str(n))
    assert proc.wait(DEADLINE) == 0, env.output(f"enqueue-{mode}")


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` intervals open at one instant (an end before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.slow
def test_never_more_than_two_per_key_across_three_workers_and_every_job_runs_once(env: Env) -> None:
    for k in range(3):
        env.worker(f"worker{k}")
    enqueue(env, "slots", 200)
    wait_until(lambda: len(env.lines("end")) >= 200, DEADLINE, lambda: f"200 ends (have {len(env.lines('end'))})")
    starts, ends = env.lines("start"), env.lines("end")
    assert sorted(Counter(n for n, *_ in starts).items()) == [(n, 1) for n in range(200)]
    assert len({pid for _, _, pid, _ in starts}) > 1, "the jobs ran in more than one worker"
    began = {n: t for n, _, _, t in starts}
    per_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for n, key, _, t in ends:
        per_key[key].append((began[n], t))
    assert {key: most_at_once(spans) for key, spans in per_key.items()} == {f"k{i}": 2 for i in range(5)}


def test_a_slot_held_by_a_killed_worker_frees_with_its_job(env: Env) -> None:
    holder = env.worker("holder")
    enqueue(env, "single", 0)
    wait_until(lambda: [n for n, *_ in env.lines("start")] == [0], DEADLINE, "the first job holding the slot")
    other = env.worker("other")
    enqueue(env, "single", 1)
    holder.send_signal(signal.SIGKILL)
    killed_at = time.time()
    holder.wait(DEADLINE)
    wait_until(lambda: 1 in [n for n, *_ in env.lines("end")], DEADLINE,
               lambda: f"the job behind the killed one to run: {env.output('other')}")
    starts = env.lines("start")
    assert [n for n, *_ in starts] == [0, 1]  # job 0 never ran again: its take-over failed it
    assert starts[1][3] > killed_at, "the job behind started while the killed worker still held the slot"
    assert other.poll() is None


@pytest.mark.slow
def test_a_rate_of_20_a_second_holds_across_three_workers(env: Env) -> None:
    for k in range(3):
        env.worker(f"worker{k}")
    enqueue(env, "rated", 100)
    wait_until(lambda: len(env.lines("start")) >= 100, DEADLINE, lambda: f"100 starts (have {len(env.lines('start'))})")
    starts = env.lines("start")
    assert sorted(Counter(n for n, *_ in starts).items()) == [(n, 1) for n in range(100)]
    times = sorted(t for *_, t in starts)
    # fixed windows of one second: 20 a window, so any one-second span sees at most 20 + the burst of 20
    busiest = max(sum(1 for u in times[i:] if u < t + 1.0) for i, t in enumerate(times))
    assert busiest <= 40, busiest
    assert len({int(t) for t in times}) >= 5, "100 starts at 20 a second span at least five windows"
