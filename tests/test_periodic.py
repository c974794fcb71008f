"""Periodic tasks in one process: the decorator's checks, the scheduler's decisions, its thread.

The decisions (which tick runs, which is a catch-up, which is skipped) are
driven through :meth:`Scheduler.step` with chosen times, so they are exact and
instant; the thread itself runs with an interval of 0.2 s and is waited for
with deadlines. Real processes (gunicorn, the reloader, a shared journal) are
in ``test_periodic_processes.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.threads import scheduler_threads
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import ConfigurationError, Job, MemQueue, StorageError, current_job
from flask_memqueue.exceptions import ScheduleError
from flask_memqueue.extras import install_hint
from flask_memqueue.periodic import HostLock, Scheduler
from flask_memqueue.schedule import Cron, Every
from flask_memqueue.state import AppQueue

PARIS = "Europe/Paris"


@pytest.fixture
def make_papp(mq: MemQueue, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """``make_papp(name=..., instance=..., **config)``: an app whose instance folder is in tmp_path.

    Its scheduler thread is off (``MEMQUEUE_PERIODIC = False``) unless the test
    turns it on: most tests drive :meth:`Scheduler.step` with chosen times, and
    the thread would claim today's ticks meanwhile.
    """
    apps: list[Flask] = []

    def make(name: str = "periodic", *, instance: str = "instance", mq: MemQueue = mq, **config: Any) -> Flask:
        app = Flask(name, instance_path=str(tmp_path / instance))
        app.config["TESTING"] = True
        app.config["MEMQUEUE_PERIODIC"] = False
        app.config.update(config)
        mq.init_app(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        queue: AppQueue = app.extensions["memqueue"]
        if not queue.closed:
            queue.shutdown(wait=True, timeout=TIMEOUT)


def queue_of(app: Flask) -> AppQueue:
    return app.extensions["memqueue"]  # type: ignore[no-any-return]


def waiting_ticks(queue: AppQueue) -> list[float | None]:
    return sorted(job.tick for job in queue.storage.jobs(limit=500) if job.tick is not None)


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: float = 0.0,
       zone: str = "UTC", fold: int = 0) -> float:
    from zoneinfo import ZoneInfo

    tz = dt.timezone.utc if zone == "UTC" else ZoneInfo(zone)
    return dt.datetime(year, month, day, hour, minute, int(second), int((second % 1) * 1e6), tzinfo=tz,
                       fold=fold).timestamp()


# -- the decorator ---------------------------------------------------------------------------
def test_a_periodic_task_is_also_a_normal_task(mq: MemQueue, make_papp: Callable[..., Flask]) -> None:
    @mq.periodic(every=dt.timedelta(minutes=5), name="tidy", retries=2, queue="default", priority=7)
    def tidy() -> str:
        return "tidied"

    assert tidy() == "tidied"
    assert mq.registry.periodic == {"tidy": tidy}
    assert (tidy.retries, tidy.priority) == (2, 7)
    assert tidy.periodic is not None and isinstance(tidy.periodic.schedule, Every)
    app = make_papp(MEMQUEUE_PERIODIC=False)
    with app.app_context():
        assert tidy.delay().wait(TIMEOUT) == "tidied"


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("61 * * * *",), {}, "invalid cron expression"),
        (("* * *",), {}, "invalid cron expression"),
        (("0 0 30 2 *",), {}, "cron"),
        ((), {"every": dt.timedelta(0)}, "positive"),
        ((), {"every": -5}, "positive"),
        ((), {"every": "5m"}, "timedelta or a number"),
        ((), {}, "exactly one"),
        (("* * * * *",), {"every": 5}, "exactly one"),
        (("* * * * *",), {"timezone": "Mars/Olympus_Mons"}, "unknown time zone"),
        ((), {"every": 5, "timezone": PARIS}, "does not move every"),
        ((), {"every": 5, "catch_up": "yes"}, "catch_up"),
    ],
)
def test_a_bad_schedule_fails_at_decoration_naming_the_task(
    mq: MemQueue, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ScheduleError, match=message) as info:
        mq.periodic(*args, name="reports.nightly", **kwargs)(lambda: None)
    assert "reports.nightly" in str(info.value)
    assert isinstance(info.value, ConfigurationError) and isinstance(info.value, ValueError)
    assert mq.registry.periodic == {}


def test_a_function_that_needs_arguments_is_refused(mq: MemQueue) -> None:
    def needs(a: int, b: int = 2) -> None: ...

    with pytest.raises(ScheduleError, match="'a' has no default|a has no default"):
        mq.periodic(every=60)(needs)

    def fine(a: int = 1, *rest: int, **extra: int) -> None: ...

    mq.periodic(every=60)(fine)


def test_cron_without_the_extra_says_what_to_install(mq: MemQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # import cronsim raises ImportError
    with pytest.raises(ScheduleError, match=re.escape(install_hint("cron")) + r".*every=timedelta"):
        mq.periodic("*/10 * * * *", name="needs_cron")(lambda: None)
    mq.periodic(every=dt.timedelta(seconds=30), name="needs_nothing")(lambda: None)


def test_memqueue_timezone_is_checked_at_init_app(mq: MemQueue, tmp_path: Path) -> None:
    app = Flask("tz", instance_path=str(tmp_path))
    app.config.update(TESTING=True, MEMQUEUE_TIMEZONE="Nowhere/Special")
    with pytest.raises(ConfigurationError, match="MEMQUEUE_TIMEZONE"):
        mq.init_app(app)


# -- schedules -------------------------------------------------------------------------------
def test_every_ticks_lie_on_a_grid_since_the_epoch() -> None:
    every = Every(30.0)
    utc = dt.timezone.utc
    assert every.latest(1000.0, utc) == 990.0 and every.latest(990.0, utc) == 990.0
    assert every.next_after(990.0, utc) == 1020.0 and every.next_after(1019.9, utc) == 1020.0
    assert every.describe() == "every 30s" and Every(3600.0).describe() == "every 1h"


def test_cron_in_paris_across_both_daylight_saving_changes() -> None:
    """Debian cron's rules, as cronsim applies them: a fixed-time job skipped by the spring
    jump runs right after it, a repeated autumn time runs once; ``*/30`` counts real time."""
    from zoneinfo import ZoneInfo

    paris = ZoneInfo(PARIS)
    daily = Cron("30 2 * * *")

    def walk(schedule: Cron, start: float, n: int) -> list[float]:
        out, t = [], start
        for _ in range(n):
            nxt = schedule.next_after(t, paris)
            assert nxt is not None
            out.append(nxt)
            t = nxt
        return out

    spring = walk(daily, at(2026, 3, 28, 12, zone=PARIS), 3)
    assert spring == [at(2026, 3, 29, 3, 0, zone=PARIS),  # 02:30 does not exist that night: 03:00
                      at(2026, 3, 30, 2, 30, zone=PARIS), at(2026, 3, 31, 2, 30, zone=PARIS)]
    autumn = walk(daily, at(2026, 10, 24, 12, zone=PARIS), 2)
    assert autumn == [at(2026, 10, 25, 2, 30, zone=PARIS), at(2026, 10, 26, 2, 30, zone=PARIS)]  # once
    half_hourly = walk(Cron("*/30 * * * *"), at(2026, 10, 25, 1, 50, zone=PARIS), 5)
    assert [b - a for a, b in zip(half_hourly, half_hourly[1:], strict=False)] == [1800.0] * 4  # real time
    # latest() agrees with the forward walk on both days (the scheduler's "due" tick)
    assert daily.latest(at(2026, 3, 29, 3, 10, zone=PARIS), paris) == spring[0]
    assert daily.latest(at(2026, 10, 25, 2, 45, zone=PARIS, fold=1), paris) == autumn[0]


def test_the_scheduler_runs_a_paris_cron_once_per_day_across_the_changes(
    mq: MemQueue, make_papp: Callable[..., Flask]
) -> None:
    @mq.periodic("30 2 * * *", name="nightly")
    def nightly() -> None: ...

    queue = queue_of(make_papp(MEMQUEUE_TIMEZONE=PARIS))
    scheduler = queue.scheduler
    scheduler.started_at = at(2026, 3, 27, 12, zone=PARIS)
    scheduler.step(scheduler.started_at)  # enrols it
    t = scheduler.started_at
    for _ in range(24 * 4 * 6):  # every 15 minutes for six days, over the spring change
        t += 900.0
        scheduler.step(t)
    assert waiting_ticks(queue) == [
        at(2026, 3, 28, 2, 30, zone=PARIS),
        at(2026, 3, 29, 3, 0, zone=PARIS),  # the spring jump skipped 02:30: run at 03:00, once
        at(2026, 3, 30, 2, 30, zone=PARIS),
        at(2026, 3, 31, 2, 30, zone=PARIS),
        at(2026, 4, 1, 2, 30, zone=PARIS),
        at(2026, 4, 2, 2, 30, zone=PARIS),
    ]
    queue.storage.drop_waiting()


# -- the scheduler's decisions -----------------------------------------------------------------
@pytest.fixture
def every_second(mq: MemQueue) -> Any:
    @mq.periodic(every=dt.timedelta(seconds=1), name="beat")
    def beat() -> float | None:
        return current_job.tick

    return beat


def test_first_start_enrols_then_one_job_per_tick_each_overslept_one_and_one_after_a_suspension(
    every_second: Any, make_papp: Callable[..., Flask]
) -> None:
    queue = queue_of(make_papp())
    scheduler = queue.scheduler
    scheduler.started_at = 100.5
    assert scheduler.step(100.5) == pytest.approx(1.0, abs=1.0)
    assert waiting_ticks(queue) == []  # enrolled: nothing was missed
    assert queue.storage.last_ticks()["beat"].tick == 100.0
    scheduler.step(101.01)
    scheduler.step(101.5)
    scheduler.step(102.0)
    assert waiting_ticks(queue) == [101.0, 102.0]
    scheduler.step(105.3)  # woke late (a busy machine): each tick it overslept, in order
    assert waiting_ticks(queue) == [101.0, 102.0, 103.0, 104.0, 105.0]
    scheduler.step(130.5)  # suspended over 25 ticks (more than MAX_LATE_TICKS): the latest only
    assert waiting_ticks(queue) == [101.0, 102.0, 103.0, 104.0, 105.0, 130.0]
    job = queue.get_job(queue.storage.last_ticks()["beat"].job_id or "")
    assert job is not None and job.tick == 130.0 and job.to_dict()["tick"].startswith("1970-01-01T00:02:10")
    queue.storage.drop_waiting()


def test_a_tick_whose_claim_failed_is_claimed_at_the_next_step(
    every_second: Any, make_papp: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = queue_of(make_papp())
    scheduler = queue.scheduler
    scheduler.started_at = 100.5
    scheduler.step(100.5)
    real = queue.storage.claim_tick
    calls: list[float] = []

    def down_once(task: str, tick: float, job: Job | None) -> bool:
        calls.append(tick)
        if len(calls) == 1:
            raise StorageError("injected: the store is down")
        return real(task, tick, job)

    monkeypatch.setattr(queue.storage, "claim_tick", down_once)
    with pytest.raises(StorageError):
        scheduler.step(101.0)  # the thread logs it and backs off
    scheduler.step(101.3)
    assert calls == [101.0, 101.0] and waiting_ticks(queue) == [101.0]
    queue.storage.drop_waiting()


@pytest.mark.parametrize("catch_up", [True, False])
def test_a_restart_after_missed_ticks_runs_one_catch_up_or_none(
    mq: MemQueue, make_papp: Callable[..., Flask], catch_up: bool
) -> None:
    """Memory mode: the state file next to the host lock carries the last tick across a restart."""

    @mq.periodic(every=dt.timedelta(seconds=1), name="beat", catch_up=catch_up)
    def beat() -> None: ...

    first = queue_of(make_papp("restart"))
    first.scheduler.started_at = 100.5
    first.scheduler.step(100.5)
    first.scheduler.step(101.0)
    first.shutdown(wait=False)  # releases the host lock; its waiting job is cancelled
    second = queue_of(_second_app(mq, make_papp))
    second.scheduler.started_at = 106.5  # every process was down over 102..106
    second.scheduler.step(106.5)
    assert waiting_ticks(second) == ([106.0] if catch_up else [])
    second.scheduler.step(107.0)
    assert waiting_ticks(second) == ([106.0, 107.0] if catch_up else [107.0])
    second.storage.drop_waiting()


def _second_app(mq: MemQueue, make_papp: Callable[..., Flask]) -> Flask:
    """The same app (same name, same instance folder) started again, as a new process would."""
    other = MemQueue()
    for task in mq.registry.periodic.values():
        other.registry.add_task(task)
    return make_papp("restart", mq=other)


def test_only_the_holder_of_the_host_lock_schedules_in_memory_mode(
    every_second: Any, make_papp: Callable[..., Flask]
) -> None:
    """Two "processes" of one app on one host (two queues, one instance folder): one schedule."""
    first = queue_of(make_papp("pair"))
    other = MemQueue()
    other.registry.add_task(every_second)
    second = queue_of(make_papp("pair", mq=other))
    for q in (first, second):
        q.scheduler.started_at = 100.5
        q.scheduler.step(100.5)
    assert first.scheduler.holds_schedule is True and second.scheduler.holds_schedule is False
    for t in (101.0, 102.0):
        first.scheduler.step(t)
        second.scheduler.step(t)
    assert waiting_ticks(first) == [101.0, 102.0] and waiting_ticks(second) == []
    assert second.scheduler.info()["scheduler"]["holder_pid"] == os.getpid()
    first.shutdown(wait=False)  # the holder goes: the other takes over at its next tick
    second.scheduler.step(103.0)
    assert second.scheduler.holds_schedule is True
    assert waiting_ticks(second) == [103.0]  # 102 was claimed by the first: never again
    second.storage.drop_waiting()


def test_apps_of_other_names_hold_their_own_schedules(every_second: Any, make_papp: Callable[..., Flask]) -> None:
    one, two = queue_of(make_papp("one")), queue_of(make_papp("two"))
    for q in (one, two):
        q.scheduler.step(100.5)
    assert one.scheduler.holds_schedule and two.scheduler.holds_schedule
    assert one.scheduler.host_lock is not None and two.scheduler.host_lock is not None
    assert one.scheduler.host_lock.path != two.scheduler.host_lock.path


def test_a_shared_store_claims_each_tick_for_one_process(every_second: Any, make_papp: Callable[..., Flask],
                                                         tmp_path: Path) -> None:
    journal = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = queue_of(make_papp("shared", MEMQUEUE_STORAGE=journal))
    other = MemQueue()
    other.registry.add_task(every_second)
    second = queue_of(make_papp("shared", mq=other, instance="elsewhere", MEMQUEUE_STORAGE=journal))
    assert first.scheduler.host_lock is None and second.scheduler.holds_schedule is None
    for q in (first, second):
        q.scheduler.started_at = 100.5
        q.scheduler.step(100.5)
    for t in (101.0, 102.0, 103.0):
        second.scheduler.step(t)
        first.scheduler.step(t + 0.01)
    assert waiting_ticks(first) == [101.0, 102.0, 103.0]
    assert len(first.storage.jobs(limit=50)) == 3
    late = MemQueue()
    late.registry.add_task(every_second)
    third = queue_of(make_papp("shared", mq=late, instance="third", MEMQUEUE_STORAGE=journal))
    third.scheduler.started_at = 103.5
    third.scheduler.step(103.5)  # a late process: tick 103 is claimed already
    assert len(first.storage.jobs(limit=50)) == 3
    first.storage.drop_waiting()


# -- the thread ---------------------------------------------------------------------------------
def test_the_thread_queues_one_job_per_tick_and_stops_at_shutdown(mq: MemQueue,
                                                                 make_papp: Callable[..., Flask]) -> None:
    ran: list[float] = []
    lock = threading.Lock()

    @mq.periodic(every=dt.timedelta(seconds=0.2), name="fast")
    def fast() -> None:
        with lock:
            ran.append(current_job.tick)

    app = make_papp(MEMQUEUE_AUTOSTART=True, MEMQUEUE_PERIODIC=True)
    queue = queue_of(app)
    assert queue.scheduler.alive and [t.name for t in scheduler_threads()] == ["memqueue-scheduler[periodic]"]
    wait_until(lambda: len(ran) >= 3)
    queue.shutdown(wait=True, timeout=TIMEOUT)
    assert scheduler_threads() == []
    assert queue.scheduler.host_lock is not None and not queue.scheduler.host_lock.held
    assert len(ran) == len(set(ran))
    steps = [round((b - a) / 0.2) for a, b in zip(ran, ran[1:], strict=False)]
    assert all(step >= 1 for step in steps)


def test_the_scheduler_starts_with_the_consumers_and_not_in_the_watcher(
    every_second: Any, make_papp: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_RUN_FROM_CLI", "true")  # as `flask run` sets it; no WERKZEUG_RUN_MAIN: the watcher
    monkeypatch.delenv("WERKZEUG_RUN_MAIN", raising=False)
    app = make_papp(MEMQUEUE_AUTOSTART=True, MEMQUEUE_PERIODIC=True)
    queue = queue_of(app)
    assert not queue.scheduler.alive  # AUTOSTART does nothing in the watcher
    with app.app_context():
        every_second.delay()  # an enqueue there (flask shell) runs its job, not the schedule
    assert not queue.scheduler.alive
    assert app.test_client().get("/ping-none").status_code == 404  # a request: this process serves
    assert queue.scheduler.alive and queue.consumer_alive


def test_memqueue_periodic_false_never_starts_it(every_second: Any, make_papp: Callable[..., Flask]) -> None:
    app = make_papp(MEMQUEUE_PERIODIC=False, MEMQUEUE_AUTOSTART=True)
    app.test_client().get("/")
    assert not queue_of(app).scheduler.alive and scheduler_threads() == []
    assert queue_of(app).scheduler.info()["enabled"] is False


def test_no_periodic_task_no_thread_and_no_lock_file(make_papp: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_papp(MEMQUEUE_AUTOSTART=True, MEMQUEUE_PERIODIC=True)
    app.test_client().get("/")
    assert scheduler_threads() == []
    assert not (tmp_path / "instance").exists()


def test_a_dead_scheduler_thread_is_started_again_by_the_next_request(
    every_second: Any, make_papp: Callable[..., Flask]
) -> None:
    app = make_papp(MEMQUEUE_AUTOSTART=True, MEMQUEUE_PERIODIC=True)
    queue = queue_of(app)
    first = queue.scheduler.thread
    queue.scheduler.stop()
    queue.scheduler.join(TIMEOUT)
    assert not queue.scheduler.alive and not queue.consumer_alive
    app.test_client().get("/")
    assert queue.scheduler.alive and queue.scheduler.thread is not first and queue.scheduler.starts == 2


# -- fork ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_inherit_the_schedule(every_second: Any, make_papp: Callable[..., Flask]) -> None:
    from support.forks import in_child

    queue = queue_of(make_papp())
    queue.scheduler.step(100.5)
    lock = queue.scheduler.host_lock
    assert lock is not None and lock.held

    def child() -> dict[str, Any]:
        fresh = HostLock(lock.directory, "periodic")
        return {
            "inherited_held": lock.held,
            "queue_holds": queue.scheduler.holds_schedule,
            "can_take": fresh.acquire(),  # the parent still holds it: the child must not get it
        }

    assert in_child(child) == {"inherited_held": False, "queue_holds": False, "can_take": False}
    assert lock.held  # the child's exit did not unlock the parent
    assert HostLock(lock.directory, "periodic").acquire() is False


# -- what it shows ---------------------------------------------------------------------------------
def test_info_lists_each_task_with_its_next_and_last_run(mq: MemQueue, make_papp: Callable[..., Flask]) -> None:
    @mq.periodic("0 9 * * 1-5", name="digest", timezone=PARIS)
    def digest() -> None: ...

    @mq.periodic(every=dt.timedelta(seconds=1), name="beat")
    def beat() -> None: ...

    queue = queue_of(make_papp())
    scheduler: Scheduler = queue.scheduler
    scheduler.started_at = 100.5
    scheduler.step(100.5)
    scheduler.step(101.0)
    info = scheduler.info()
    assert info["mode"] == "host lock" and info["timezone"] == "UTC"
    assert info["scheduler"]["holds_schedule"] is True and info["scheduler"]["holder_pid"] == os.getpid()
    by_name = {t["name"]: t for t in info["tasks"]}
    assert by_name["digest"]["schedule"] == "0 9 * * 1-5" and by_name["digest"]["timezone"] == PARIS
    assert by_name["beat"]["schedule"] == "every 1s" and by_name["beat"]["timezone"] is None
    last = by_name["beat"]["last_run"]
    assert last["tick"].startswith("1970-01-01T00:01:41") and last["status"] == "queued"
    job: Job | None = queue.get_job(last["job_id"])
    assert job is not None and job.tick == 101.0
    assert by_name["digest"]["next_run"] is not None
    queue.storage.drop_waiting()


def test_the_route_the_dashboard_and_the_cli_show_the_schedule(
    mq: MemQueue, make_papp: Callable[..., Flask]
) -> None:
    @mq.periodic("*/10 * * * *", name="purge_sessions")
    def purge_sessions() -> None: ...

    app = make_papp()
    queue = queue_of(app)
    queue.scheduler.started_at = 0.5
    queue.scheduler.step(0.5)
    queue.scheduler.step(600.0)
    client = app.test_client()
    body = client.get("/memqueue/periodic").get_json()
    [task] = body["tasks"]
    assert task["name"] == "purge_sessions" and task["schedule"] == "*/10 * * * *" and task["timezone"] == "UTC"
    assert task["last_run"]["tick"] == "1970-01-01T00:10:00+00:00"
    assert task["last_run"]["status"] in ("queued", "running", "succeeded")  # the request started the consumer
    assert body["scheduler"]["holds_schedule"] is True and body["mode"] == "host lock"
    page = client.get("/memqueue/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "Periodic tasks" in page and 'data-periodic="purge_sessions"' in page and task["last_run"]["job_id"] in page
    result = app.test_cli_runner().invoke(args=["memqueue", "periodic"])
    assert result.exit_code == 0, result.output
    assert "held by process" in result.output
    assert "purge_sessions\t*/10 * * * *\tUTC\t" in result.output and task["last_run"]["job_id"] in result.output
    queue.storage.drop_waiting()


def test_the_route_keeps_the_access_rules(mq: MemQueue, tmp_path: Path) -> None:
    mq.periodic(every=60, name="minutely")(lambda: None)
    app = Flask("prod", instance_path=str(tmp_path))
    app.config.update(MEMQUEUE_PERIODIC=False)
    mq.init_app(app)
    try:
        assert app.test_client().get("/memqueue/periodic").status_code == 403  # production, no token
    finally:
        queue_of(app).shutdown()
    token = "s3cret-token-0123456789"
    app = Flask("prod2", instance_path=str(tmp_path))
    app.config.update(MEMQUEUE_PERIODIC=False, MEMQUEUE_TOKEN=token)
    mq.init_app(app)
    try:
        client = app.test_client()
        assert client.get("/memqueue/periodic").status_code == 401
        ok = client.get("/memqueue/periodic", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.get_json()["tasks"][0]["name"] == "minutely"
    finally:
        queue_of(app).shutdown()


def test_the_cli_says_when_there_is_no_periodic_task(make_papp: Callable[..., Flask]) -> None:
    result = make_papp().test_cli_runner().invoke(args=["memqueue", "periodic"])
    assert result.exit_code == 0 and "no periodic tasks" in result.output
