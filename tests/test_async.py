"""``async def`` tasks (issue 25): on every store, in a consumer thread's own loop and
several at once on one thread (``async_concurrency``), with retries, a failure, a time
limit, the app context and ``current_job``; eager mode; async views; ``adelay``/``aenqueue``.

Overlap is proved by counting the coroutines asleep at once, never by timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, current_app, g
from support.backends import STORAGE_BACKENDS, backend_params
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import ConfigurationError, Hook, Job, JobStatus, MemQueue, current_job
from flask_memqueue.task import AsyncTask

STORES = ["memory", "sqlite", "dict", "redis", "postgres"]
#: The two ways a queue runs async jobs: one at a time per thread, or up to N on its loop.
MODES = {
    "thread": {"MEMQUEUE_QUEUES": {"default": 1}},
    "concurrent": {"MEMQUEUE_QUEUES": {"default": {"threads": 1, "async_concurrency": 8}}},
}


@pytest.fixture(params=backend_params(STORES))
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    return STORAGE_BACKENDS[request.param](tmp_path)


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest) -> dict[str, Any]:
    return MODES[request.param]


class Sleepers:
    """Counts the coroutines asleep at once (the loop's thread is the only writer)."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.threads: set[str] = set()

    async def sleep(self, seconds: float) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        self.threads.add(threading.current_thread().name)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.now -= 1


def test_an_async_task_runs_on_every_store_with_its_app_context_retries_and_a_failure(
    mq: MemQueue, make_app: Callable[..., Flask], store_config: dict[str, Any], mode: dict[str, Any]
) -> None:
    @mq.task(name="aio.fetch", retries=1, retry_delay=0)
    async def fetch(n: int) -> dict[str, Any]:
        g.seen = n  # the job's own app context
        await asyncio.sleep(0)
        if n == 1 and current_job.attempts == 1:
            raise ValueError("the first attempt fails")
        if n == 2:
            raise RuntimeError("always fails")
        await asyncio.sleep(0.001)
        return {"n": n, "app": current_app.name, "job": current_job.id, "g": g.seen, "attempt": current_job.attempts}

    assert isinstance(fetch, AsyncTask)
    app = make_app("asyncapp", **store_config, **mode)
    with app.app_context():
        ok, retried, failed = fetch.delay(0), fetch.delay(1), fetch.delay(2)
        assert ok.wait(TIMEOUT) == {"n": 0, "app": "asyncapp", "job": ok.id, "g": 0, "attempt": 1}
        assert retried.wait(TIMEOUT) == {"n": 1, "app": "asyncapp", "job": retried.id, "g": 1, "attempt": 2}
        assert mq.join(TIMEOUT)
        done = mq.get_job(failed.id)
        assert done is not None and done.status is JobStatus.FAILED
        assert done.attempts == 2 and done.error == "RuntimeError: always fails"


def test_a_consumer_thread_keeps_one_event_loop_for_all_its_async_jobs_and_closes_it_when_it_ends(
    mq: MemQueue, make_app: Callable[..., Flask]
) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    @mq.task
    async def where() -> str:
        loops.append(asyncio.get_running_loop())
        return threading.current_thread().name

    app = make_app()
    with app.app_context():
        names = [where.delay().wait(TIMEOUT) for _ in range(3)]
        assert len(set(names)) == 1 and names[0].startswith("memqueue-consumer[")
        assert len({id(loop) for loop in loops}) == 1 and not loops[0].is_closed()
        assert mq.shutdown(timeout=TIMEOUT)
    wait_until(lambda: loops[0].is_closed(), TIMEOUT, "the consumer's loop to close")


def test_a_thousand_async_jobs_on_one_thread_with_async_concurrency_100_overlap_a_hundred_at_a_time(
    mq: MemQueue, make_app: Callable[..., Flask]
) -> None:
    sleepers = Sleepers()
    mismatched: list[tuple[int, Any]] = []

    @mq.task(queue="crawl")
    async def crawl(n: int) -> int:
        before = current_job.args
        await sleepers.sleep(0.05)
        if current_job.args != before or before != (n,):  # current_job is this coroutine's own job
            mismatched.append((n, current_job.args))
        return n

    app = make_app(MEMQUEUE_QUEUES={"crawl": {"threads": 1, "async_concurrency": 100}})
    with app.app_context():
        jobs = [crawl.delay(n) for n in range(1000)]
        assert mq.join(60)
    assert [job.result for job in jobs] == list(range(1000))
    assert sleepers.most == 100  # never more than the limit, and the limit reached
    assert len(sleepers.threads) == 1 and mismatched == []


def test_async_concurrency_is_per_thread_two_threads_run_two_hundred(
    mq: MemQueue, make_app: Callable[..., Flask]
) -> None:
    sleepers = Sleepers()
    lock = threading.Lock()
    most = [0]
    now = [0]

    @mq.task(queue="crawl")
    async def crawl(n: int) -> None:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        await sleepers.sleep(0.1)
        with lock:
            now[0] -= 1

    app = make_app(MEMQUEUE_QUEUES={"crawl": {"threads": 2, "async_concurrency": 100}})
    with app.app_context():
        for n in range(600):
            crawl.delay(n)
        assert mq.join(60)
    assert 100 < most[0] <= 200 and len(sleepers.threads) == 2


@pytest.mark.parametrize("value", [0, -1, 1.5, "many", True, 10_001])
def test_a_bad_async_concurrency_is_refused_at_init_app_naming_the_key(
    mq: MemQueue, make_app: Callable[..., Flask], value: Any
) -> None:
    with pytest.raises(ConfigurationError, match=r"MEMQUEUE_QUEUES\['crawl'\]\['async_concurrency'\] must be"):
        make_app(MEMQUEUE_QUEUES={"crawl": {"threads": 1, "async_concurrency": value}})


def test_an_unknown_queue_option_names_async_concurrency(mq: MemQueue, make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigurationError, match="'async_concurency'.*'async_concurrency': M"):
        make_app(MEMQUEUE_QUEUES={"crawl": {"async_concurency": 10}})


def test_a_time_limit_cancels_the_coroutine_and_the_attempt_fails_then_retries(
    mq: MemQueue, make_app: Callable[..., Flask], mode: dict[str, Any]
) -> None:
    cancelled: list[int] = []

    @mq.task(time_limit=0.05, retries=1, retry_delay=0)
    async def slow(n: int) -> None:
        try:
            await asyncio.sleep(TIMEOUT)
        except asyncio.CancelledError:
            cancelled.append(current_job.attempts)
            raise

    app = make_app(**mode)
    with app.app_context():
        job = slow.delay(1)
        assert mq.join(TIMEOUT)
        assert job.status is JobStatus.FAILED and job.attempts == 2
        assert job.error is not None and job.error.startswith("TimeLimitExceeded: job ")
        assert "time limit of 0.05 s and was cancelled" in job.error
    assert cancelled == [1, 2]


def test_a_coroutine_that_swallows_its_cancellation_is_failed_once_and_abandoned_while_the_others_go_on(
    mq: MemQueue, make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_memqueue import aio

    monkeypatch.setattr(aio, "CANCEL_GRACE", 0.05)
    release = asyncio.Event()
    failed: list[Job] = []

    @mq.task(time_limit=0.05, queue="crawl")
    async def stubborn() -> str:
        while True:
            try:
                await release.wait()
                return "finally"
            except asyncio.CancelledError:
                continue  # swallowed

    @mq.task(queue="crawl")
    async def other(n: int) -> int:
        await asyncio.sleep(0.2)  # outlives the stubborn one's limit and grace
        return n

    from flask_memqueue import job_failed

    app = make_app(MEMQUEUE_QUEUES={"crawl": {"threads": 1, "async_concurrency": 10}})
    job_failed.connect(lambda sender, job, **kw: failed.append(job), app, weak=False)
    with app.app_context():
        stuck = stubborn.delay()
        others = [other.delay(n) for n in range(5)]
        assert [job.wait(TIMEOUT) for job in others] == list(range(5))
        assert mq.join(TIMEOUT)
        assert stuck.status is JobStatus.FAILED and stuck.attempts == 1
        assert stuck.error is not None and "swallows asyncio.CancelledError), so it was abandoned" in stuck.error
        assert failed == [stuck]
        assert aio._abandoned  # still running on the consumer's loop
        loop = next(iter(aio._abandoned)).get_loop()
        loop.call_soon_threadsafe(release.set)
        wait_until(lambda: not aio._abandoned, TIMEOUT, "the abandoned coroutine to end")
        assert stuck.status is JobStatus.FAILED and stuck.attempts == 1 and failed == [stuck]  # recorded once


def test_time_limit_is_taken_on_plain_and_async_functions_and_must_be_positive(mq: MemQueue) -> None:
    """A plain function's limit is the thread watchdog's (docs/limits.md); a coroutine's is a
    cancellation (docs/async.md). Both are checked when the task is made."""
    @mq.task(time_limit=1)
    def plain() -> None: ...

    @mq.task(time_limit=2)
    async def coro() -> None: ...

    assert (plain.time_limit, coro.time_limit) == (1.0, 2.0)
    with pytest.raises(ConfigurationError, match="time_limit must be a number of seconds > 0"):
        @mq.task(time_limit=0)
        async def zero() -> None: ...


def test_eager_mode_runs_an_async_task_inline_also_from_an_async_view(
    mq: MemQueue, make_app: Callable[..., Flask]
) -> None:
    @mq.task
    async def double(n: int) -> int:
        await asyncio.sleep(0)
        return 2 * n + (current_job.attempts - 1)

    app = make_app(MEMQUEUE_EAGER=True)

    @app.get("/double/<int:n>")
    async def view(n: int) -> dict[str, Any]:
        job = double.delay(n)
        also = await double.adelay(n + 1)
        return {"status": str(job.status), "result": job.result, "also": also.result}

    with app.app_context():
        job = double.delay(4)
        assert job.status is JobStatus.SUCCEEDED and job.result == 8
    assert app.test_client().get("/double/5").json == {"status": "succeeded", "result": 10, "also": 12}


def test_an_async_view_enqueues_returns_and_the_job_runs(
    mq: MemQueue, make_app: Callable[..., Flask], store_config: dict[str, Any]
) -> None:
    @mq.task(name="aio.greet")
    async def greet(name: str) -> str:
        await asyncio.sleep(0)
        return f"hello {name} from {current_app.name}"

    app = make_app("viewapp", **store_config)
    put_in: list[str] = []
    from flask_memqueue import job_enqueued

    job_enqueued.connect(lambda sender, job, **kw: put_in.append(threading.current_thread().name), app, weak=False)

    @app.post("/greet/<name>")
    async def view(name: str) -> dict[str, Any]:
        loop_thread = threading.current_thread().name
        first = greet.delay(name)
        second = await greet.adelay(name)
        third = await mq.aenqueue(greet, name)
        return {"ids": [first.id, second.id, third.id], "loop": loop_thread}

    response = app.test_client().post("/greet/ann")
    assert response.status_code == 200
    body = response.json
    assert body is not None
    with app.app_context():
        for job_id in body["ids"]:
            wait_until(lambda job_id=job_id: _finished(mq, job_id), TIMEOUT, f"job {job_id}")
            job = mq.get_job(job_id)
            assert job is not None and job.result == "hello ann from viewapp"
        shared = app.extensions["memqueue"].storage.capabilities.shared
    # delay() puts on the loop's thread; adelay()/aenqueue() off it when the store may wait on I/O
    assert put_in[0] == body["loop"]
    assert all((name != body["loop"]) == shared for name in put_in[1:]), (put_in, body["loop"], shared)


def _finished(mq: MemQueue, job_id: str) -> bool:
    job = mq.get_job(job_id)
    return job is not None and job.finished


class Around(Hook):
    """Records which chain wrapped each job."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def around_run(self, app: Flask, job: Job[Any], call: Callable[[], Any]) -> Any:
        self.seen.append(("sync", job.name))
        return call()

    async def around_arun(self, app: Flask, job: Job[Any], call: Callable[[], Any]) -> Any:
        self.seen.append(("async", job.name))
        return await call()


def test_each_job_gets_one_chain_around_run_in_a_thread_around_arun_on_a_concurrent_loop(
    mq: MemQueue, make_app: Callable[..., Flask]
) -> None:
    hook = mq.add_hook(Around())
    assert isinstance(hook, Around)

    @mq.task(name="aio.a")
    async def a() -> int:
        return 1

    @mq.task(name="aio.p")
    def p() -> int:
        return 2

    app = make_app(MEMQUEUE_QUEUES={"default": 1, "crawl": {"threads": 1, "async_concurrency": 4}})
    with app.app_context():
        assert a.delay().wait(TIMEOUT) == 1
        assert p.delay().wait(TIMEOUT) == 2
        assert a.options(queue="crawl").delay().wait(TIMEOUT) == 1
        assert p.options(queue="crawl").delay().wait(TIMEOUT) == 2
    assert hook.seen == [("sync", "aio.a"), ("sync", "aio.p"), ("async", "aio.a"), ("sync", "aio.p")]


def test_a_plain_task_in_a_concurrent_queue_runs_inline_and_a_crashing_job_restarts_the_thread(
    mq: MemQueue, make_app: Callable[..., Flask]
) -> None:
    @mq.task(queue="crawl")
    async def crash() -> None:
        raise SystemExit(3)

    @mq.task(queue="crawl")
    def plain(n: int) -> int:
        return n * 3

    app = make_app(MEMQUEUE_QUEUES={"crawl": {"threads": 1, "async_concurrency": 4}})
    with app.app_context():
        job = crash.delay()
        assert mq.join(TIMEOUT)
        assert job.status is JobStatus.FAILED and job.error == "SystemExit: 3"
        assert plain.delay(3).wait(TIMEOUT) == 9  # a successor thread runs the queue


@pytest.fixture
def no_loop_left() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("memqueue-claimer[")]


def test_stopping_a_concurrent_queue_runs_the_jobs_in_flight_to_their_end(
    mq: MemQueue, make_app: Callable[..., Flask], no_loop_left: None
) -> None:
    started = threading.Event()
    sleepers = Sleepers()

    @mq.task(queue="crawl")
    async def work(n: int) -> int:
        if sleepers.now >= 4:
            started.set()
        await sleepers.sleep(0.2)
        return n

    app = make_app(MEMQUEUE_QUEUES={"crawl": {"threads": 1, "async_concurrency": 5}})
    with app.app_context():
        jobs = [work.delay(n) for n in range(5)]
        assert started.wait(TIMEOUT)
        assert mq.shutdown(wait=False, timeout=TIMEOUT) in (True, False)
    wait_until(lambda: all(job.finished for job in jobs), TIMEOUT, "the jobs in flight to end")
    assert [job.result for job in jobs] == list(range(5))


# -- the pytest plugin's fixtures ---------------------------------------------------------------
@pytest.fixture
def async_task(mq: MemQueue) -> AsyncTask[[int], int]:
    @mq.task(name="aio.square")
    async def square(n: int) -> int:
        await asyncio.sleep(0)
        return n * n + (0 if current_app else 1)

    return square


def test_memqueue_eager_runs_an_async_task_inline(
    app: Flask, async_task: AsyncTask[[int], int], memqueue_eager: list[Job[Any]]
) -> None:
    with app.app_context():
        job = async_task.delay(3)
    assert job.status is JobStatus.SUCCEEDED and job.result == 9 and memqueue_eager == [job]


def test_memqueue_captured_records_an_async_call_and_runs_it_on_demand(
    app: Flask, async_task: AsyncTask[[int], int], memqueue_captured: Any
) -> None:
    with app.app_context():
        async_task.delay(4)
        assert memqueue_captured.names == ["aio.square"]
        assert memqueue_captured[0].run() == 16


def test_memqueue_drain_runs_waiting_async_jobs(
    app: Flask, async_task: AsyncTask[[int], int], memqueue_drain: Callable[..., None]
) -> None:
    with app.app_context():
        job = async_task.delay(5)
    memqueue_drain()
    assert job.result == 25
