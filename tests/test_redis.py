"""The Redis store in one process: options, outages, redaction, and what Redis adds to the seam.

Several stores opened on one server stand for several processes (they have
different owners and tokens, as processes do). The real-process tests are in
test_redis_processes.py; the storage contract runs over Redis from
test_storage_contract.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.factory import new_job
from support.servers.redis import RedisServer, shared_redis
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import ConfigurationError, MemQueue, RedisUnavailable, StorageError, current_job
from flask_memqueue.cli import memqueue_cli
from flask_memqueue.job import JobStatus
from flask_memqueue.state import AppQueue
from flask_memqueue.storage.base import Link

SECRET = "pa55:w/rd?x@y"
QUOTED = "pa55%3Aw%2Frd%3Fx%40y"


@pytest.fixture
def tasks(mq: MemQueue) -> dict[str, Any]:
    @mq.task(name="t.echo")
    def echo(value: Any = None) -> Any:
        return value

    @mq.task(name="t.progress")
    def progress(gate: str) -> str:
        current_job.set_progress(0.5, "half way")
        assert GATES[gate].wait(TIMEOUT)
        return "done"

    @mq.handler
    def message(value: Any) -> None:
        pass

    return {"echo": echo, "progress": progress}


GATES: dict[str, threading.Event] = {}


@pytest.fixture
def make(make_app: Callable[..., Flask], redis_server: RedisServer) -> Callable[..., AppQueue]:
    """``make(name="app", **config)``: an app on the session's server (no consumer unless asked)."""

    def build(name: str = "redisapp", url: str | None = None, **config: Any) -> AppQueue:
        config.setdefault("MEMQUEUE_CONSUMER", False)
        app = make_app(name, MEMQUEUE_STORAGE=url or redis_server.url(), **config)
        return app.extensions["memqueue"]  # type: ignore[no-any-return]

    return build


# -- options ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "match"), [
    ({"lease": 0.5}, "'lease' must be a number of seconds, at least 1"),
    ({"lease": "soon"}, "'lease' must be a number of seconds"),
    ({"prefix": ""}, "'prefix' must be a non-empty string"),
    ({"prefix": "a b"}, "'prefix' must be a non-empty string without spaces"),
    ({"socket_timeout": -1}, "'socket_timeout' must be a positive number"),
    ({"leese": 3}, "unknown option.*'leese'.*lease"),
])
def test_options_are_checked_naming_the_key(make_app: Callable[..., Flask], options: dict[str, Any],
                                           match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make_app(MEMQUEUE_STORAGE="redis://127.0.0.1:1/0", MEMQUEUE_STORAGE_OPTIONS=options)


def test_an_option_in_the_url_and_in_the_options_is_refused_naming_both(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigurationError, match="'lease'.*both in MEMQUEUE_STORAGE's query string and in"
                                                 " MEMQUEUE_STORAGE_OPTIONS"):
        make_app(MEMQUEUE_STORAGE="redis://127.0.0.1:1/0?lease=5", MEMQUEUE_STORAGE_OPTIONS={"lease": 6})


def test_options_from_the_url(make: Callable[..., AppQueue]) -> None:
    queue = make(url=shared_redis().url() + "?lease=7.5&prefix=shared:{x}")
    storage: Any = queue.storage
    assert (storage.lease, storage.prefix) == (7.5, "shared:{x}")
    assert storage.capabilities.shared and storage.capabilities.outages_end


def test_rediss_and_unix_urls_are_accepted_without_connecting(make_app: Callable[..., Flask]) -> None:
    for url in ("rediss://:pw@127.0.0.1:1/0", "unix:///nonexistent/redis.sock?db=2"):
        app = make_app(MEMQUEUE_STORAGE=url, MEMQUEUE_CONSUMER=False)
        assert app.extensions["memqueue"].storage.capabilities.shared


# -- outages and redaction -------------------------------------------------------------------------
def test_init_app_needs_no_redis_and_enqueue_says_why_it_fails(make_app: Callable[..., Flask], mq: MemQueue,
                                                               tasks: dict[str, Any]) -> None:
    app = make_app(MEMQUEUE_STORAGE=f"redis://:{QUOTED}@127.0.0.1:1/0", MEMQUEUE_CONSUMER=False)
    with app.app_context(), pytest.raises(RedisUnavailable) as caught:
        mq.enqueue(tasks["echo"], 1)
    text = str(caught.value)
    assert isinstance(caught.value, StorageError)
    assert "unreachable" in text and "redis://:***@127.0.0.1:1/0" in text
    assert SECRET not in text and QUOTED not in text


@pytest.mark.servers
def test_a_wrong_password_is_named_as_such(tmp_path: Path, make_app: Callable[..., Flask], mq: MemQueue,
                                           tasks: dict[str, Any]) -> None:
    with RedisServer(tmp_path / "r", password="right-one").start() as server:
        app = make_app(MEMQUEUE_STORAGE=f"redis://:wrong-one@127.0.0.1:{server.port}/0", MEMQUEUE_CONSUMER=False)
        with app.app_context(), pytest.raises(RedisUnavailable, match="refused the credentials") as caught:
            mq.enqueue(tasks["echo"], 1)
        assert "wrong-one" not in str(caught.value)


@pytest.mark.servers
def test_no_password_for_a_server_that_needs_one_is_named_as_such(tmp_path: Path, make_app: Callable[..., Flask],
                                                                 mq: MemQueue, tasks: dict[str, Any]) -> None:
    """Redis answers an unauthenticated script with "Protocol error: unauthenticated multibulk
    length" (or NOAUTH): that is refused credentials, a RedisUnavailable saying how to give
    them, and a StorageRefused (a configuration error), never a bare ResponseError."""
    from flask_memqueue import StorageRefused

    with RedisServer(tmp_path / "r", password="right-one").start() as server:
        app = make_app(MEMQUEUE_STORAGE=f"redis://127.0.0.1:{server.port}/0", MEMQUEUE_CONSUMER=False)
        with app.app_context(), pytest.raises(RedisUnavailable, match="refused the credentials") as caught:
            mq.enqueue(tasks["echo"], 1)
        assert "needs a password and none was given" in str(caught.value)
        assert isinstance(caught.value, StorageRefused)
        answer = app.test_client().get("/memqueue/health")
        assert answer.status_code == 503 and "refused the credentials" in answer.get_json()["error"]


@pytest.mark.servers
def test_routes_cli_and_logs_never_show_the_password(tmp_path: Path, make_app: Callable[..., Flask], mq: MemQueue,
                                                     tasks: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with RedisServer(tmp_path / "r", password=SECRET).start() as server:
        url = f"redis://:{QUOTED}@127.0.0.1:{server.port}/0"
        app = make_app(MEMQUEUE_STORAGE=url, MEMQUEUE_TOKEN="t" * 20)
        auth = {"Authorization": "Bearer " + "t" * 20}
        client = app.test_client()
        with app.app_context():
            job = mq.enqueue(tasks["echo"], "x")
            assert job.wait(TIMEOUT) == "x"
        pages = [client.get(path, headers=auth) for path in
                 ("/memqueue/stats", "/memqueue/threads", "/memqueue/health", "/memqueue/jobs",
                  f"/memqueue/jobs/{job.id}", f"/memqueue/ui/jobs/{job.id}")]
        assert [p.status_code for p in pages[:5]] == [200] * 5, [p.status_code for p in pages]
        dashboard = client.get("/memqueue/", headers={**auth, "Accept": "text/html"})
        assert dashboard.status_code == 200 and job.id in dashboard.get_data(as_text=True)
        pages.append(dashboard)
        runner = app.test_cli_runner()
        cli = [runner.invoke(memqueue_cli, ["jobs"]), runner.invoke(memqueue_cli, ["purge", "--finished"])]
        assert cli[0].exit_code == 0 and job.id in cli[0].output
        server.stop()  # an outage: the errors say where, not with what password
        down = [client.get("/memqueue/health", headers=auth), client.post("/memqueue/produce", json={"message": 1},
                                                                        headers=auth)]
        assert [r.status_code for r in down] == [503, 503]
        assert "unreachable" in down[0].get_json()["error"]
        assert down[1].headers["Retry-After"]
        cli.append(runner.invoke(memqueue_cli, ["jobs"]))
        assert cli[-1].exit_code != 0
        with app.app_context(), pytest.raises(RedisUnavailable) as caught:
            mq.enqueue(tasks["echo"], 1)
    shown = [p.get_data(as_text=True) for p in pages + down] + [r.output for r in cli] + [str(caught.value)]
    shown += [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    assert any("redis://:***@127.0.0.1" in text for text in shown)
    for text in shown:
        assert SECRET not in text and QUOTED not in text and "pa55" not in text, text


# -- what Redis adds ------------------------------------------------------------------------------
def test_an_idle_take_wakes_on_another_processes_enqueue_without_polling(
    make: Callable[..., AppQueue], tasks: dict[str, Any]
) -> None:
    consumer, producer = make(), make()
    storage: Any = consumer.storage
    storage.idle_wait = 60.0  # only the BLPOP can wake it now
    got: list[Any] = []
    taker = threading.Thread(target=lambda: got.append(storage.take(TIMEOUT)))
    taker.start()
    wait_until(lambda: storage._blocked == 1)
    job = new_job(producer, "t.echo", 1)
    producer.storage.put(job)
    taker.join(TIMEOUT)
    assert [j.id for j in got] == [job.id]


def test_wait_in_another_process_is_woken_by_pub_sub(make: Callable[..., AppQueue], tasks: dict[str, Any]) -> None:
    web, worker = make(), make()
    web.storage.waiter_poll_interval = 60.0  # type: ignore[attr-defined]  # no poll would see it in time
    job = new_job(web, "t.echo", "out")
    web.storage.put(job)
    waiter = web.storage.waiter(job)
    assert waiter is not None
    taken = worker.storage.take(0)
    assert taken is not None
    worker.consumer.execute(taken)
    worker.storage.finish(taken)
    assert waiter.wait(TIMEOUT)
    assert job.status == "succeeded" and job.result == "out"


class _RecordingWake(threading.Event):
    """The heartbeat's wake-up event, recording each wait's timeout: the test sees when
    the thread goes to sleep until its next lease renewal."""

    def __init__(self) -> None:
        super().__init__()
        self.long_sleep = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is None or timeout > 1.0:
            self.long_sleep.set()
        return super().wait(timeout)


def test_progress_and_cancel_are_seen_by_other_processes(make: Callable[..., AppQueue],
                                                        tasks: dict[str, Any]) -> None:
    """Progress reaches another process within 0.1 s (the documented promise), even when
    the heartbeat was asleep until its next lease renewal. The lease is an hour, so that
    sleep lasts 20 minutes: only the wake-up a claim gives the heartbeat can write the
    progress within the test's wait (it failed about one run in four while the heartbeat
    started before its job was tracked and slept through claims)."""
    web, worker = make(), make(MEMQUEUE_STORAGE_OPTIONS={"lease": 3600})
    storage: Any = worker.storage
    wake = storage.heartbeat._wake = _RecordingWake()
    first = new_job(web, "t.echo", 1)
    web.storage.put(first)
    taken = worker.storage.take(0)  # starts the heartbeat
    assert taken is not None
    worker.consumer.execute(taken)
    worker.storage.finish(taken)  # nothing runs here now: the heartbeat sleeps until its renewal
    assert wake.long_sleep.wait(TIMEOUT), "the heartbeat never went to sleep until its next renewal"
    renewals: list[str] = []
    real_run = storage.client.run

    def counting_run(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "renew":
            renewals.append(name)
        return real_run(name, *args, **kwargs)

    storage.client.run = counting_run

    GATES["p"] = threading.Event()
    job = new_job(web, "t.progress", "p")
    web.storage.put(job)
    other = new_job(web, "t.echo", 2)
    web.storage.put(other)
    taken = worker.storage.take(0)
    assert taken is not None and taken.id == job.id
    runner = threading.Thread(target=worker.consumer.execute, args=(taken,))
    with worker.app.app_context():
        runner.start()
    try:
        seen = wait_until(lambda: (j := web.storage.get(job.id)) is not None and j.progress == 0.5 and j)
        assert seen.progress_message == "half way"
        assert renewals == [], "the progress came with a lease renewal, not with the claim's wake-up"
        assert web.storage.cancel(web.storage.get(other.id))  # type: ignore[arg-type]
        assert worker.storage.take(0) is None
    finally:
        GATES["p"].set()
        runner.join(TIMEOUT)
    worker.storage.finish(taken)
    done = web.storage.get(job.id)
    assert done is not None and done.status == "succeeded" and done.progress == 0.5


def test_a_late_outcome_after_a_take_over_is_discarded_and_logged(
    make: Callable[..., AppQueue], tasks: dict[str, Any], redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = make(), make()
    job = new_job(first, "t.echo", "late")
    first.storage.put(job)
    taken = first.storage.take(0)
    assert taken is not None
    storage: Any = first.storage
    # Its heartbeat stops reaching Redis for a lease: stopped first, or its first renewal (the
    # take started it) could land after the delete and bring the lease back (seen under load).
    storage.heartbeat.stop()
    with redis_server.client() as c:
        c.delete(f"{storage.prefix}:l:{storage.owner}")
    assert second.storage.recover() == 1  # type: ignore[attr-defined]  # no retries: failed, "interrupted"
    first.consumer.execute(taken)
    assert taken.status == "succeeded"
    first.storage.finish(taken)
    stored = second.storage.get(job.id)
    assert stored is not None and stored.status == "failed" and stored.error == "interrupted"
    assert taken.status == "failed", "the object takes the record that stands"
    assert "discarded" in caplog.text


def test_a_claim_whose_reply_was_lost_is_put_back(make: Callable[..., AppQueue], tasks: dict[str, Any]) -> None:
    queue = make()
    storage: Any = queue.storage
    job = new_job(queue, "t.echo", 1)
    storage.put(job)
    # the claim script as a take sends it, whose reply never came back
    storage.client.run("claim", [storage.owner, repr(time.time()), "30000", "lost", "default", "0", "0", 0, 0], "test")
    assert storage.counts()["running"] == 1  # claimed, but this process never heard of it
    storage._failed_tokens.append("lost")
    again = storage.take(0)
    assert again is not None and again.id == job.id and again.attempts == 0
    queue.consumer.execute(again)
    storage.finish(again)
    assert storage.counts()["succeeded"] == 1 and storage.counts()["running"] == 0
    assert storage.get(job.id).attempts == 1


def test_a_workflow_whose_reply_was_lost_is_sent_again_and_added_once(
    make: Callable[..., AppQueue], tasks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workflow script ran, its reply never came: the store sends it again (as a plain
    enqueue), and the second run finds its mark: the links and counters are written once."""
    queue = make()
    storage: Any = queue.storage
    client = storage.client
    real, lost = client.script, []

    def script(name: str, args: list[Any], doing: str, **kwargs: Any) -> Any:
        reply = real(name, args, doing, **kwargs)
        if name == "workflow" and not lost:
            lost.append(reply)
            raise client.redis.ConnectionError("the reply was lost")
        return reply

    monkeypatch.setattr(client, "script", script)
    parent = new_job(queue, "t.echo", 5)
    child = new_job(queue, "t.echo")
    child.options = child.options.replace(after=(parent.id,), bind="first")
    child.status = JobStatus.DEFERRED
    storage.put_workflow([parent, child], [Link(parent.id, child.id, 0)])
    assert lost, "the first run's reply was dropped"
    assert storage.dependents(parent.id) == [child.id], "linked once"
    assert storage.counts()["queued"] == 1 and storage.counts()["deferred"] == 1
    taken = storage.take(0)
    assert taken is not None and taken.id == parent.id
    queue.consumer.execute(taken)
    released = storage.take(0, taken)
    assert released is not None and released.id == child.id and released.args == (5,)
    assert storage.take(0) is None and storage.counts()["deferred"] == 0


def test_maxsize_is_exact_across_enqueuers(make: Callable[..., AppQueue], tasks: dict[str, Any]) -> None:
    queues = [make(MEMQUEUE_MAXSIZE=50) for _ in range(4)]
    accepted = []
    errors = []

    def produce(q: AppQueue) -> None:
        for i in range(40):
            try:
                q.storage.put(new_job(q, "t.echo", i))
                accepted.append(1)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=produce, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(accepted) == 50 and queues[0].storage.depth() == 50 and len(errors) == 110


def test_a_prefix_shares_jobs_between_apps_of_different_names(make: Callable[..., AppQueue],
                                                             tasks: dict[str, Any]) -> None:
    options = {"prefix": "team:{jobs}"}
    one, two = make("one", MEMQUEUE_STORAGE_OPTIONS=options), make("two", MEMQUEUE_STORAGE_OPTIONS=options)
    alone = make("three")
    job = new_job(one, "t.echo", 1)
    one.storage.put(job)
    assert two.storage.get(job.id) is not None and alone.storage.get(job.id) is None


def test_bytes_per_queued_job_in_redis(make: Callable[..., AppQueue], tasks: dict[str, Any],
                                       redis_server: RedisServer) -> None:
    """What the README states: one key (a string) and one list entry per queued job, within
    the issue's 400 bytes with a 100-character argument (RQ: about 1.4 kB)."""
    queue = make(MEMQUEUE_MAXSIZE=0)
    with redis_server.client() as c:
        before = int(c.info("memory")["used_memory"])
        for i in range(20_000):  # enough that the server's growing tables average out
            queue.storage.put(new_job(queue, "t.echo", f"{i:0100d}"))
        per_job = (int(c.info("memory")["used_memory"]) - before) / 20_000
        keys = c.dbsize()
    assert keys < 20_000 + 20, "a queued job is one key, plus a few shared ones"
    assert per_job <= 400, per_job


@pytest.fixture
def stopped_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "r").start() as server:
        yield server


@pytest.mark.servers
def test_the_consumer_logs_an_outage_once_and_resumes(make_app: Callable[..., Flask], mq: MemQueue,
                                                      tasks: dict[str, Any], stopped_server: RedisServer,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    server = stopped_server
    app = make_app(MEMQUEUE_STORAGE=server.url())
    queue: AppQueue = app.extensions["memqueue"]
    with app.app_context():
        assert mq.enqueue(tasks["echo"], 1).wait(TIMEOUT) == 1
        port = server.port
        server.stop()
        wait_until(lambda: queue.consumers_store_error() if hasattr(queue, "consumers_store_error")
                   else "fails:" in caplog.text)
        server.start(port)
        job = wait_until(lambda: _try_enqueue(mq, tasks["echo"]))
        assert job.wait(TIMEOUT) == 2
    assert caplog.text.count("fails:") == 1 and "works again" in caplog.text


def _try_enqueue(mq: MemQueue, task: Any) -> Any:
    try:
        return mq.enqueue(task, 2)
    except RedisUnavailable:
        return None


def test_tls_to_a_server_without_tls_is_named_as_such(make_app: Callable[..., Flask], mq: MemQueue,
                                                      tasks: dict[str, Any], redis_server: RedisServer) -> None:
    app = make_app(MEMQUEUE_STORAGE=f"rediss://:{QUOTED}@127.0.0.1:{redis_server.port}/0", MEMQUEUE_CONSUMER=False,
                   MEMQUEUE_STORAGE_OPTIONS={"socket_timeout": 2})
    with app.app_context(), pytest.raises(RedisUnavailable, match="TLS") as caught:
        mq.enqueue(tasks["echo"], 1)
    assert SECRET not in str(caught.value) and QUOTED not in str(caught.value)
