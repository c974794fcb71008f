"""The storage contract as a test suite: run it against your own backend, in your own CI.

Every store of flask-memqueue (the memory store, the SQLite journal, Redis, the
project's test-only dict store) passes these tests; a third-party backend
proves it honours :class:`~flask_memqueue.storage.Storage` the same way.
Subclass the test classes in a test module of your project and give them the
config that selects your store, as the fixture ``store_config``::

    import pytest

    from flask_memqueue.testing import SharedStorageContract, StorageContract


    class TestMyStore(StorageContract, SharedStorageContract):
        @pytest.fixture
        def store_config(self):
            # a fresh, empty directory per store (stores made `like=` another share it)
            return lambda directory: {"MEMQUEUE_STORAGE": f"mystore:///{directory}/jobs"}

:class:`StorageContract` is for every store; :class:`SharedStorageContract`
adds what a store that declares ``capabilities.shared`` (other processes see
its jobs) must do: JSON round trips, take-over of a dead owner's jobs, apps
kept apart by name. A store on a server should give each test an empty
namespace (a database or key prefix per test, or a flush at its first store:
app names repeat from test to test).

The tests build each store as ``init_app`` does (a Flask app with the config,
``TESTING = True``) and call the store directly, as the consumer and the
routes do; they never start a consumer thread. They use registered tasks and
JSON arguments only, and compare jobs by id, so that a durable store (records,
not objects) passes the same tests as the memory store.

pytest is imported here, and nowhere else in the package: it stays a
dependency of your tests only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from ..exceptions import DependencyError, QueueFull
from ..extension import MemQueue
from ..job import Job, JobStatus
from ..jobfilter import JobFilter
from ..state import AppQueue
from ..storage import Link, Storage

#: Task names that look like a code ("#1"), a JSON string, or hold a newline (the contract registers them).
ODD_NAMES = ("#1", '"quoted', "two\nlines")
#: Seconds any single wait in a test may take before the test fails.
TIMEOUT = 10.0

#: ``make_store(MEMQUEUE_MAXSIZE=2, like=other, name="app")`` -> the queue of a new app on the store.
Factory = Callable[..., AppQueue]
#: What ``store_config`` returns: the app config that selects the store, given a directory.
StoreConfig = Callable[[Path], Mapping[str, Any]]


class _Harness:
    """The fixtures every contract test uses."""

    @pytest.fixture
    def store_config(self) -> StoreConfig:
        """Override in your subclass: the config that opens your store, given an empty directory."""
        raise NotImplementedError(
            "define the fixture store_config in your subclass of StorageContract: it returns a function"
            " that gives the app config selecting your store, e.g."
            " lambda directory: {'MEMQUEUE_STORAGE': 'mystore://...'}"
        )

    @pytest.fixture
    def contract_mq(self) -> MemQueue:
        """The MemQueue of the test's apps, with the contract's tasks registered."""
        mq = MemQueue()

        @mq.task(name="contract.echo")
        def echo(value: Any = None) -> Any:
            return value

        @mq.task(name="contract.fail")
        def fail(value: Any = None) -> Any:
            raise ValueError(f"failed {value}")

        @mq.task(name="contract.retry", retries=1, retry_delay=0.0)
        def retry(value: Any = None) -> Any:
            raise ValueError("retry me")

        for name in ODD_NAMES:  # names a compact store must not mistake (Redis: "#1" is its codes' form)
            mq.task(name=name)(echo.func)
        return mq

    @pytest.fixture
    def make_store(self, store_config: StoreConfig, contract_mq: MemQueue, tmp_path: Path) -> Iterator[Factory]:
        """``make_store(**config)``: the queue (``app.extensions["memqueue"]``) of a new app on a
        fresh store; ``like=queue``: on the same store as ``queue`` (as another process
        would open it), as the same app unless ``name`` says otherwise."""
        queues: list[AppQueue] = []
        directories: dict[int, Path] = {}

        def make(*, like: AppQueue | None = None, name: str | None = None, **config: Any) -> AppQueue:
            if like is None:
                directory = tmp_path / f"store-{len(queues) + 1}"
                directory.mkdir()
                app_name = name or f"contract{len(queues) + 1}"
            else:
                directory = directories[id(like)]
                app_name = name or like.app.name
            app = Flask(app_name, instance_path=str(directory / "instance"))
            app.config.update(TESTING=True, **{**store_config(directory), **config})
            contract_mq.init_app(app)
            queue: AppQueue = app.extensions["memqueue"]
            queues.append(queue)
            directories[id(queue)] = directory
            return queue

        yield make
        for queue in queues:  # jobs the contract took and never finished must not be waited for
            queue.shutdown(wait=False)

    @pytest.fixture
    def queue(self, make_store: Factory) -> AppQueue:
        """The queue of one app on a fresh store."""
        return make_store()


# -- what the tests do with a store ---------------------------------------------------------------
def new_job(queue: AppQueue, task: str, *args: Any, **kwargs: Any) -> Job:
    """A job as ``enqueue`` makes it (the queue's id sequence), not yet handed to the store.
    The arguments are not checked against the task's signature: a store never calls it."""
    return Job(queue.jobs, queue.producer.next_key(), queue.registry.resolve(task), args, kwargs or None,
               time.time())


def ids(jobs: list[Job] | list[Job | None]) -> list[str | None]:
    return [None if job is None else job.id for job in jobs]


def run(queue: AppQueue, job: Job) -> Job:
    """What the consumer does with a job it took (without handing it back)."""
    queue.consumer.execute(job)
    return job


def status_of(storage: Storage, job: Job) -> str | None:
    found = storage.get(job.id)
    return None if found is None else found.status.value


def queued(queue: AppQueue, value: Any = None, task: str = "contract.echo") -> Job:
    job = new_job(queue, task, value)
    queue.storage.put(job)
    return job


def queued_at(queue: AppQueue, enqueued_at: float, value: Any = None) -> Job:
    """A job queued as if at Unix time ``enqueued_at`` (the stores order by it, so a
    test can set every due time in the past instead of waiting for one)."""
    job = new_job(queue, "contract.echo", value)
    job.enqueued_at = enqueued_at
    queue.storage.put(job)
    return job


def scheduled(queue: AppQueue, eta: float, value: Any = None, task: str = "contract.echo") -> Job:
    job = new_job(queue, task, value)
    job.mark_scheduled(eta)
    queue.storage.schedule(job)
    return job


def in_queue(queue: AppQueue, name: str, priority: int = 0, value: Any = None, eta: float | None = None) -> Job:
    job = new_job(queue, "contract.echo", value)
    job.queue, job.priority = name, priority
    if eta is None:
        queue.storage.put(job)
    else:
        job.mark_scheduled(eta)
        queue.storage.schedule(job)
    return job


def take_all(queue: AppQueue, name: str) -> list[Job]:
    out = []
    while (job := queue.storage.take(0, queue=name)) is not None:
        out.append(job)
        queue.storage.finish(run(queue, job))
    return out


def keyed(queue: AppQueue, key: str, value: Any = None, eta: float | None = None,
          task: str = "contract.echo") -> tuple[Job, Job]:
    """``(the job made, the job put_unique returned)``."""
    job = new_job(queue, task, value)
    job.unique_key = key
    if eta is not None:
        job.mark_scheduled(eta)
    return job, queue.storage.put_unique(job)


def tick_job(queue: AppQueue, tick: float) -> Job:
    job = new_job(queue, "contract.echo", "tick")
    job.tick = tick
    return job


# -- the contract -----------------------------------------------------------------------------------

class _PutAndTake(_Harness):
    """Put, schedule, take (blocking, due order, the previous job recorded with the next claim), finish."""

    def test_is_a_storage(self, queue: AppQueue) -> None:
        assert isinstance(queue.storage, Storage)

    def test_put_take_fifo(self, queue: AppQueue) -> None:
        storage = queue.storage
        jobs = [queued(queue, i) for i in range(5)]
        assert storage.depth() == 5
        taken = [storage.take(0) for _ in range(5)]
        assert ids(taken) == ids(jobs)
        assert all(job is not None and job.status == "running" for job in taken)
        assert storage.take(0) is None
        assert storage.depth() == 0
        assert storage.counts()["running"] == 5

    def test_take_with_a_timeout_returns_none_when_nothing_is_due(self, queue: AppQueue) -> None:
        assert queue.storage.take(0.05) is None
        scheduled(queue, time.time() + 3600)
        assert queue.storage.take(0.05) is None
        assert queue.storage.depth() == 1

    def test_take_blocks_until_a_put(self, queue: AppQueue) -> None:
        got: list[Job | None] = []
        taker = threading.Thread(target=lambda: got.append(queue.storage.take(TIMEOUT)))
        taker.start()
        job = queued(queue, "late")
        taker.join(TIMEOUT)
        assert not taker.is_alive()
        assert ids(got) == [job.id]

    def test_scheduled_jobs_run_when_due_in_due_order_before_queued_ones(self, queue: AppQueue) -> None:
        storage = queue.storage
        now = time.time()
        first_queued = queued(queue, "q1")
        later = scheduled(queue, now + 3600, "later")
        due_second = scheduled(queue, now - 1, "due2")
        due_first = scheduled(queue, now - 2, "due1")
        second_queued = queued(queue, "q2")
        assert storage.depth() == 5
        assert storage.counts()["scheduled"] == 3 and storage.counts()["queued"] == 2
        taken = [storage.take(0) for _ in range(5)]
        assert ids(taken) == [due_first.id, due_second.id, first_queued.id, second_queued.id, None]
        assert status_of(storage, later) == "scheduled"

    def test_take_wakes_up_when_a_scheduled_job_becomes_due(self, queue: AppQueue) -> None:
        eta = time.time() + 0.05
        job = scheduled(queue, eta)
        taken = queue.storage.take(TIMEOUT)
        assert taken is not None and taken.id == job.id
        assert time.time() >= eta

    def test_take_done_records_the_previous_job(self, queue: AppQueue) -> None:
        storage = queue.storage
        a, b = queued(queue, "a"), queued(queue, "b")
        first = storage.take(0)
        assert first is not None and first.id == a.id
        run(queue, first)
        assert first.status == "succeeded"
        second = storage.take(0, done=first)
        assert second is not None and second.id == b.id
        assert status_of(storage, a) == "succeeded"
        assert storage.get(a.id).result == "a"  # type: ignore[union-attr]
        counts = storage.counts()
        assert counts["succeeded"] == 1 and counts["running"] == 1
        run(queue, second)
        assert storage.take(0.01, done=second) is None  # recorded even when nothing follows
        assert status_of(storage, b) == "succeeded"
        assert storage.counts()["running"] == 0

    def test_take_done_reschedules_a_retry(self, queue: AppQueue) -> None:
        storage = queue.storage
        job = queued(queue, None, "contract.retry")
        taken = storage.take(0)
        assert taken is not None
        run(queue, taken)
        assert taken.status == "scheduled" and taken.eta is not None
        again = storage.take(TIMEOUT, done=taken)  # retry_delay=0: due at once
        assert again is not None and again.id == job.id and again.status == "running"
        run(queue, again)
        assert again.status == "failed" and again.attempts == 2
        storage.finish(again)
        assert status_of(storage, job) == "failed"

    def test_put_after_take_done_found_nothing_never_breaks(self, queue: AppQueue) -> None:
        """The consumer's loop: take(done=last) finds nothing, then producers put again (twice)."""
        storage = queue.storage
        last = None
        for i in range(3):
            job = queued(queue, i)
            taken = storage.take(TIMEOUT, done=last) if last is not None else storage.take(TIMEOUT)
            assert taken is not None and taken.id == job.id
            last = run(queue, taken)
            assert storage.take(0.01, done=last) is None
            last = None
        assert storage.counts()["succeeded"] == 3

    def test_finish(self, queue: AppQueue) -> None:
        storage = queue.storage
        queued(queue, "x")
        queued(queue, "y", "contract.fail")
        for _ in range(2):
            job = storage.take(0)
            assert job is not None
            waiter = storage.waiter(job)
            assert waiter is not None and not waiter.wait(0)
            run(queue, job)
            storage.finish(job)
            assert waiter.wait(TIMEOUT)
            assert storage.waiter(job) is None
        counts = storage.counts()
        assert (counts["succeeded"], counts["failed"], counts["running"]) == (1, 1, 0)
        failed = storage.jobs(JobStatus.FAILED)[0]
        assert failed.error == "ValueError: failed y" and failed.traceback

class _SingleJobsAndListings(_Harness):
    """Cancel, requeue and get one job; listings, counts and purge."""

    def test_cancel_only_waiting_jobs(self, queue: AppQueue) -> None:
        storage = queue.storage
        running = queued(queue, "r")
        taken = storage.take(0)
        assert taken is not None
        waiting = queued(queue, "w")
        later = scheduled(queue, time.time() + 3600)
        assert storage.cancel(waiting) is True
        assert waiting.status == "cancelled" and status_of(storage, waiting) == "cancelled"
        assert storage.cancel(waiting) is False
        assert storage.cancel(later) is True and status_of(storage, later) == "cancelled"
        assert storage.cancel(taken) is False and status_of(storage, running) == "running"
        assert storage.depth() == 0 and storage.take(0) is None
        run(queue, taken)
        storage.finish(taken)
        assert storage.cancel(taken) is False and status_of(storage, running) == "succeeded"

    def test_abort_requests_reach_the_running_job_only(self, queue: AppQueue) -> None:
        storage = queue.storage
        if not storage.capabilities.abort_flags:
            pytest.skip("the store does not declare abort_flags")
        job = queued(queue, "a")
        assert storage.request_abort(job.id, "aborted by a test") is False  # waiting: cancel() is for it
        assert storage.request_abort("no-such-job", "aborted by a test") is False
        taken = storage.take(0)
        assert taken is not None and taken.id == job.id
        other = queued(queue, "b")
        assert storage.abort_requests([taken.id, other.id]) == {}
        assert storage.request_abort(taken.id, "aborted by a test at noon") is True
        assert storage.abort_requests([taken.id, other.id]) == {taken.id: "aborted by a test at noon"}
        assert storage.abort_requests([]) == {}
        taken.mark_aborted(time.time(), "aborted by a test at noon")
        storage.finish(taken)
        assert status_of(storage, job) == "aborted" and storage.counts()["aborted"] == 1
        assert storage.abort_requests([taken.id]) == {}
        assert storage.request_abort(taken.id, "again") is False  # finished
        found = storage.get(job.id)
        assert found is not None and found.error == "aborted by a test at noon" and found.finished
        # an aborted job can be queued again, and its new run reads no old request
        assert storage.cancel(other) is True
        assert storage.requeue(found) is True and status_of(storage, job) == "queued"
        again = storage.take(0)
        assert again is not None and again.id == job.id
        assert storage.abort_requests([job.id]) == {}
        run(queue, again)
        storage.finish(again)
        assert status_of(storage, job) == "succeeded"

    def test_cancel_sets_the_waiter(self, queue: AppQueue) -> None:
        job = queued(queue)
        waiter = queue.storage.waiter(job)
        assert waiter is not None
        assert queue.storage.cancel(job)
        assert waiter.wait(TIMEOUT)

    def test_requeue_failed_or_cancelled_jobs(self, queue: AppQueue) -> None:
        storage = queue.storage
        queued(queue, 1, "contract.fail")
        failed = storage.take(0)
        assert failed is not None
        run(queue, failed)
        storage.finish(failed)
        assert failed.status == "failed"
        assert storage.requeue(failed) is True
        assert failed.status == "queued" and failed.attempts == 0 and failed.error is None
        assert storage.depth() == 1
        again = storage.take(0)
        assert again is not None and again.id == failed.id
        run(queue, again)
        storage.finish(again)

        cancelled = queued(queue)
        storage.cancel(cancelled)
        assert storage.requeue(cancelled) is True and status_of(storage, cancelled) == "queued"

        ok = queued(queue, "ok")
        assert storage.requeue(ok) is False  # queued
        taken = storage.take(0)
        assert taken is not None and taken.id == cancelled.id
        taken = storage.take(0)
        assert taken is not None and taken.id == ok.id
        assert storage.requeue(taken) is False  # running
        run(queue, taken)
        storage.finish(taken)
        assert storage.requeue(taken) is False  # succeeded

    def test_get(self, queue: AppQueue) -> None:
        storage = queue.storage
        running = queued(queue, "r")
        taken = storage.take(0)
        assert taken is not None
        waiting = queued(queue, "w")
        later = scheduled(queue, time.time() + 3600, "s")
        assert status_of(storage, waiting) == "queued"
        assert status_of(storage, later) == "scheduled"
        assert status_of(storage, running) == "running"
        found = storage.get(waiting.id)
        assert found is not None and found.id == waiting.id and found.args == ("w",) and found.name == "contract.echo"
        run(queue, taken)
        storage.finish(taken)
        assert status_of(storage, running) == "succeeded"
        for unknown in ("nope", "", "-", f"{queue.token}-999999", "0badc0de-1", f"{queue.token}-x"):
            assert storage.get(unknown) is None

    def test_get_job_refuses_an_id_that_is_not_a_string(self, make_store: Factory) -> None:
        queue = make_store()
        with pytest.raises(TypeError, match="a job id is a string"):
            queue.get_job(123)  # type: ignore[arg-type]

    def test_jobs_newest_first_with_status_filter_limit_and_offset(self, queue: AppQueue) -> None:
        storage = queue.storage
        made = []
        start = time.time()
        for i in range(6):
            job = new_job(queue, "contract.echo", i)
            job.enqueued_at = start + i / 1000  # distinct enqueue times, without sleeping
            storage.put(job)
            made.append(job)
        for _ in range(2):
            taken = storage.take(0)
            assert taken is not None
            run(queue, taken)
            storage.finish(taken)
        newest_first = ids(list(reversed(made)))
        assert ids(storage.jobs()) == newest_first
        assert ids(storage.jobs(JobStatus.QUEUED)) == newest_first[:4]
        assert ids(storage.jobs(JobStatus.SUCCEEDED)) == newest_first[4:]
        assert storage.jobs(JobStatus.FAILED) == []
        assert ids(storage.jobs(limit=2)) == newest_first[:2]
        assert ids(storage.jobs(limit=2, offset=3)) == newest_first[3:5]
        assert ids(storage.jobs(JobStatus.QUEUED, limit=2, offset=1)) == newest_first[1:3]
        assert storage.jobs(offset=10) == []

    def test_jobs_with_one_enqueue_time_keep_their_order(self, queue: AppQueue) -> None:
        storage = queue.storage
        at = time.time()
        made = []
        for i in range(12):
            job = new_job(queue, "contract.echo", i)
            job.enqueued_at = at
            storage.put(job)
            made.append(job)
        assert ids(storage.jobs()) == ids(list(reversed(made)))
        for _ in made:
            taken = storage.take(0)
            assert taken is not None
            run(queue, taken)
            storage.finish(taken)
        assert ids(storage.jobs()) == ids(list(reversed(made)))

    def test_counts_and_depth(self, queue: AppQueue) -> None:
        storage = queue.storage
        assert storage.counts() == dict.fromkeys((s.value for s in JobStatus), 0)
        queued(queue, 1, "contract.fail")
        queued(queue, 2)
        taken = storage.take(0)
        assert taken is not None
        run(queue, taken)
        storage.finish(taken)
        running = storage.take(0)
        assert running is not None
        queued(queue, 3)
        scheduled(queue, time.time() + 3600)
        storage.cancel(queued(queue, 4))
        assert storage.counts() == {
            "queued": 1, "scheduled": 1, "deferred": 0, "running": 1, "succeeded": 0, "failed": 1, "cancelled": 1,
            "aborted": 0,
        }
        assert storage.depth() == 2

    def test_purge_finished(self, queue: AppQueue) -> None:
        storage = queue.storage
        done = [queued(queue, i) for i in range(3)]
        for _ in done:
            job = storage.take(0)
            assert job is not None
            run(queue, job)
            storage.finish(job)
        waiting = queued(queue, "w")
        assert storage.purge_finished() == 3
        assert all(storage.get(job.id) is None for job in done)
        assert status_of(storage, waiting) == "queued"
        assert storage.purge_finished() == 0
        assert storage.depth() == 1

class _WaitingAndBounds(_Harness):
    """join(), waiters, wake(), drop_waiting(); MEMQUEUE_MAXSIZE, MAX_FINISHED and RESULT_TTL;
    declared capabilities; apps kept apart."""

    def test_join(self, queue: AppQueue) -> None:
        storage = queue.storage
        assert storage.join(0) is True
        queued(queue, 1)
        assert storage.join(0.01) is False

        def drain() -> None:
            job = storage.take(TIMEOUT)
            assert job is not None
            run(queue, job)
            storage.finish(job)

        worker = threading.Thread(target=drain)
        worker.start()
        assert storage.join(TIMEOUT) is True
        worker.join(TIMEOUT)
        assert storage.counts()["succeeded"] == 1

    def test_join_waits_for_running_jobs(self, queue: AppQueue) -> None:
        queued(queue)
        taken = queue.storage.take(0)
        assert taken is not None
        assert queue.storage.depth() == 0
        assert queue.storage.join(0.01) is False
        run(queue, taken)
        queue.storage.finish(taken)
        assert queue.storage.join(TIMEOUT) is True

    def test_waiter_is_not_set_by_a_retry(self, queue: AppQueue) -> None:
        storage = queue.storage
        queued(queue, None, "contract.retry")
        taken = storage.take(0)
        assert taken is not None
        waiter = storage.waiter(taken)
        assert waiter is not None
        run(queue, taken)
        storage.schedule(taken, retry=True)
        assert not waiter.wait(0)
        again = storage.take(TIMEOUT)
        assert again is not None
        run(queue, again)
        storage.finish(again)
        assert waiter.wait(TIMEOUT)

    def test_wake_makes_a_blocked_take_return(self, queue: AppQueue) -> None:
        got: list[Job | None] = []
        done = threading.Event()

        def take_forever() -> None:
            got.append(queue.storage.take(None))
            done.set()

        taker = threading.Thread(target=take_forever)
        taker.start()
        queue.storage.wake()
        assert done.wait(TIMEOUT), "take(None) did not return after wake()"
        taker.join(TIMEOUT)
        assert got == [None]

    def test_drop_waiting(self, queue: AppQueue) -> None:
        storage = queue.storage
        queued(queue, "r")
        running = storage.take(0)
        assert running is not None
        waiting = [queued(queue, "w"), scheduled(queue, time.time() + 3600)]
        dropped = storage.drop_waiting()
        assert sorted(ids(dropped)) == sorted(ids(waiting))  # type: ignore[type-var]
        assert storage.depth() == 0 and storage.take(0) is None
        assert status_of(storage, running) == "running"

    def test_wait_on_another_object_of_the_job_gets_its_outcome(self, make_store: Factory) -> None:
        queue = make_store()
        job = queued(queue, "outcome")
        other = queue.storage.get(job.id)
        assert other is not None
        event = queue.storage.waiter(other)
        assert event is not None
        taken = queue.storage.take(0)
        assert taken is not None
        run(queue, taken)
        queue.storage.finish(taken)
        assert event.wait(TIMEOUT)
        assert other.status == "succeeded" and other.result == "outcome"

    def test_queue_full(self, make_store: Factory) -> None:
        queue = make_store(MEMQUEUE_MAXSIZE=2)
        storage = queue.storage
        queued(queue, "r", "contract.retry")
        running = storage.take(0)
        assert running is not None
        queued(queue, 1)
        scheduled(queue, time.time() + 3600)
        with pytest.raises(QueueFull):
            queued(queue, 2)
        with pytest.raises(QueueFull):
            scheduled(queue, time.time())
        assert storage.depth() == 2
        run(queue, running)
        storage.schedule(running, retry=True)  # a retry is never refused
        assert storage.depth() == 3

    def test_max_finished(self, make_store: Factory) -> None:
        queue = make_store(MEMQUEUE_MAX_FINISHED=2)
        made = [queued(queue, i) for i in range(5)]
        for _ in made:
            job = queue.storage.take(0)
            assert job is not None
            run(queue, job)
            queue.storage.finish(job)
        assert queue.storage.take(0) is None  # an idle turn: a store may apply its bounds as late as this
        assert [queue.storage.get(job.id) is not None for job in made] == [False, False, False, True, True]
        assert queue.storage.counts()["succeeded"] == 2

    def test_result_ttl(self, make_store: Factory) -> None:
        queue = make_store(MEMQUEUE_RESULT_TTL=0)
        job = queued(queue)
        taken = queue.storage.take(0)
        assert taken is not None
        run(queue, taken)
        queue.storage.finish(taken)
        assert queue.storage.take(0) is None  # an idle turn: a store may apply its bounds as late as this
        assert queue.storage.get(job.id) is None
        assert queue.storage.counts()["succeeded"] == 0

    def test_capabilities_are_declared(self, queue: AppQueue) -> None:
        caps = queue.storage.capabilities
        if caps.shared:  # a job another process runs must be readable there
            assert caps.json_only
        assert queue.storage_url.split("://")[0] == queue.config.storage.split("://")[0]

    def test_another_app_never_sees_a_jobs_by_id(self, make_store: Factory) -> None:
        first = make_store()
        other = make_store(like=first, name="another-app")
        job = queued(first, "mine")
        assert first.storage.get(job.id) is not None
        assert other.storage.get(job.id) is None
        assert other.storage.cancel(job) is False
        assert other.storage.requeue(job) is False
        assert other.storage.jobs() == [] and other.storage.depth() == 0
        assert other.storage.take(0) is None
        assert status_of(first.storage, job) == "queued"

class _QueuesAndPriorities(_Harness):
    """Named queues and priorities: each consumer takes from its own queue, the highest priority
    first, then the earliest due time (a queued job's is its enqueue time)."""

    def test_take_is_by_priority_then_due_time(self, queue: AppQueue) -> None:
        # e and f became due a second before a, b and d were queued
        past = time.time() - 1
        plan = [in_queue(queue, "q", 0, "a"), in_queue(queue, "q", 5, "b"), in_queue(queue, "q", -5, "c"),
                in_queue(queue, "q", 5, "d"), in_queue(queue, "q", 0, "e", eta=past),
                in_queue(queue, "q", 5, "f", eta=past), in_queue(queue, "q", 100, "later", eta=time.time() + 3600)]
        taken = take_all(queue, "q")
        assert [j.args[0] for j in taken] == ["f", "b", "d", "e", "a", "c"]
        assert queue.storage.depth("q") == 1 and plan[-1].status is JobStatus.SCHEDULED

    def test_within_a_priority_the_earlier_due_time_runs_first(self, queue: AppQueue) -> None:
        """A job queued at t0 runs before a scheduled job of its priority due at t0 + 0.3 s,
        and after one due at t0 - 0.3 s (a queued job's due time is its enqueue time, a
        scheduled one's its eta). Every time is in the past, so all four are due at the
        first take: one thread, nothing waited for."""
        storage = queue.storage
        t0 = time.time() - 60
        a = queued_at(queue, t0, "a")
        b = scheduled(queue, t0 + 0.3, "b")
        c = scheduled(queue, t0 - 0.3, "c")
        d = queued(queue, "d")  # now: after all three
        assert ids([storage.take(0) for _ in range(5)]) == [c.id, a.id, b.id, d.id, None]

    def test_a_requeued_job_is_due_when_it_was_requeued(self, queue: AppQueue) -> None:
        """The dashboard's retry: the job takes its place by the time of the requeue,
        behind the jobs of its priority queued before it and ahead of those queued after."""
        storage = queue.storage
        queued(queue, "x", "contract.fail")
        failed = storage.take(0)
        assert failed is not None
        storage.finish(run(queue, failed))
        before = queued(queue, "before")
        assert storage.requeue(failed) is True
        assert failed.status is JobStatus.QUEUED and failed.eta is not None and failed.eta >= before.enqueued_at
        after = queued_at(queue, failed.eta + 1.0, "after")
        assert ids([storage.take(0) for _ in range(4)]) == [before.id, failed.id, after.id, None]

    def test_a_consumer_takes_from_its_own_queue_only(self, queue: AppQueue) -> None:
        a = in_queue(queue, "a", value=1)
        b = in_queue(queue, "b", value=2)
        assert queue.storage.take(0, queue="nowhere") is None
        assert ids([queue.storage.take(0, queue="b")]) == [b.id]
        assert queue.storage.depth() == 1 and queue.storage.depth("a") == 1 and queue.storage.depth("b") == 0
        counts = queue.storage.queue_counts()
        assert counts["a"] == {"queued": 1, "scheduled": 0, "running": 0}
        assert counts["b"] == {"queued": 0, "scheduled": 0, "running": 1}
        assert ids(queue.storage.jobs(queue="a")) == [a.id]
        assert queue.storage.counts("b")["running"] == 1 and queue.storage.counts("a")["running"] == 0
        found = queue.storage.get(a.id)
        assert found is not None and (found.queue, found.priority) == ("a", 0)

    def test_join_of_one_queue_ignores_the_others(self, queue: AppQueue) -> None:
        in_queue(queue, "busy")
        assert queue.storage.join(0.05, queue="idle") is True
        assert queue.storage.join(0.05, queue="busy") is False
        take_all(queue, "busy")
        assert queue.storage.join(TIMEOUT, queue="busy") is True

    def test_several_threads_take_from_one_queue_and_each_job_goes_to_one(self, queue: AppQueue) -> None:
        jobs = [in_queue(queue, "pool", value=i) for i in range(200)]
        got: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(4)

        def taker() -> None:
            barrier.wait(TIMEOUT)
            while (job := queue.storage.take(0, queue="pool")) is not None:
                with lock:
                    got.append(job.id)
                queue.storage.finish(run(queue, job))

        threads = [threading.Thread(target=taker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert sorted(got) == sorted(j.id for j in jobs) and len(set(got)) == 200

    def test_wake_releases_every_blocked_taker_whose_stop_says_so(self, queue: AppQueue) -> None:
        stopping = threading.Event()
        returned: list[Job | None] = []
        threads = [
            threading.Thread(target=lambda: returned.append(
                queue.storage.take(None, queue="pool", stop=stopping.is_set)))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        stopping.set()
        queue.storage.wake()
        for t in threads:
            t.join(TIMEOUT)
        assert not any(t.is_alive() for t in threads) and returned == [None, None, None]

    def test_a_put_wakes_a_blocked_taker_of_that_queue(self, queue: AppQueue) -> None:
        got: list[Job | None] = []
        taker = threading.Thread(target=lambda: got.append(queue.storage.take(TIMEOUT, queue="wake")))
        taker.start()
        job = in_queue(queue, "wake", value="x")
        taker.join(TIMEOUT)
        assert ids(got) == [job.id]
        queue.storage.finish(run(queue, got[0]))  # type: ignore[arg-type]

class _UniqueKeysAndTicks(_Harness):
    """Unique keys (put_unique) and periodic ticks (claim_tick), each one atomic step of the store."""

    def test_a_unique_key_returns_the_live_holder_until_it_finishes(self, queue: AppQueue) -> None:
        storage = queue.storage
        first, got = keyed(queue, "report:42", 1)
        assert got.id == first.id
        _, again = keyed(queue, "report:42", 2)
        assert again.id == first.id and storage.depth() == 1
        _, other = keyed(queue, "report:43", 3)
        assert other.id != first.id and storage.depth() == 2
        running = storage.take(0)
        assert running is not None and running.id == first.id
        _, while_running = keyed(queue, "report:42", 4)
        assert while_running.id == first.id and storage.depth() == 1
        storage.finish(run(queue, running))
        fresh, after = keyed(queue, "report:42", 5)
        assert after.id == fresh.id != first.id
        assert after.unique_key == "report:42" and after.args == (5,)

    def test_a_unique_key_is_held_through_a_retry_and_freed_by_a_failure_or_a_cancel(self, queue: AppQueue) -> None:
        storage = queue.storage
        job, _ = keyed(queue, "k", task="contract.retry")
        taken = storage.take(0)
        assert taken is not None
        run(queue, taken)
        assert taken.status == "scheduled"
        storage.schedule(taken, retry=True)
        assert keyed(queue, "k")[1].id == job.id  # a retry still holds it
        taken = storage.take(0)
        assert taken is not None and taken.id == job.id
        storage.finish(run(queue, taken))
        assert status_of(storage, job) == "failed"
        fresh, got = keyed(queue, "k", eta=time.time() + 3600)
        assert got.id == fresh.id and status_of(storage, fresh) == "scheduled"
        assert keyed(queue, "k")[1].id == fresh.id  # a scheduled job holds it
        assert got.cancel()
        newest, got = keyed(queue, "k")
        assert got.id == newest.id

    def test_a_full_store_refuses_a_new_key_but_returns_a_holder(self, make_store: Factory) -> None:
        queue = make_store(MEMQUEUE_MAXSIZE=1)
        held, _ = keyed(queue, "held")
        with pytest.raises(QueueFull):
            keyed(queue, "new")
        assert keyed(queue, "held")[1].id == held.id
        assert queue.storage.depth() == 1

    def test_eight_threads_racing_with_one_key_make_one_job(self, make_store: Factory) -> None:
        first = make_store()
        # With a shared store the racers are two "processes" (stores) of one app, four threads each.
        other = make_store(like=first) if first.storage.capabilities.shared else first
        barrier = threading.Barrier(8)
        got: list[str] = []
        lock = threading.Lock()

        def racer(queue: AppQueue) -> None:
            barrier.wait(TIMEOUT)
            _, job = keyed(queue, "race", "x")
            with lock:
                got.append(job.id)

        threads = [threading.Thread(target=racer, args=(first if i % 2 else other,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert len(got) == 8 and len(set(got)) == 1
        assert first.storage.depth() == 1

    def test_a_tick_is_claimed_once_with_its_job(self, queue: AppQueue) -> None:
        storage = queue.storage
        job = tick_job(queue, 100.0)
        assert storage.claim_tick("contract.periodic", 100.0, job) is True
        assert storage.depth() == 1
        assert storage.claim_tick("contract.periodic", 100.0, tick_job(queue, 100.0)) is False
        assert storage.claim_tick("contract.periodic", 99.0, tick_job(queue, 99.0)) is False  # never an older one
        assert storage.depth() == 1
        last = storage.last_ticks()["contract.periodic"]
        assert (last.tick, last.job_id) == (100.0, job.id)
        taken = storage.take(0)
        assert taken is not None and taken.id == job.id and taken.tick == 100.0
        storage.finish(run(queue, taken))
        storage.purge_finished()
        assert storage.claim_tick("contract.periodic", 100.0, tick_job(queue, 100.0)) is False  # kept after its job
        assert storage.claim_tick("contract.periodic", 101.0, None) is True  # a claim without a job
        assert storage.depth() == 0
        last = storage.last_ticks()["contract.periodic"]
        assert (last.tick, last.job_id) == (101.0, None)
        assert storage.claim_tick("contract.other", 50.0, None) is True  # tasks keep apart
        assert set(storage.last_ticks()) == {"contract.periodic", "contract.other"}

    def test_a_full_store_claims_no_tick(self, make_store: Factory) -> None:
        queue = make_store(MEMQUEUE_MAXSIZE=1)
        queued(queue, "fills it")
        with pytest.raises(QueueFull):
            queue.storage.claim_tick("contract.periodic", 100.0, tick_job(queue, 100.0))
        assert "contract.periodic" not in queue.storage.last_ticks()

    def test_eight_threads_racing_for_one_tick_claim_it_once(self, make_store: Factory) -> None:
        first = make_store()
        other = make_store(like=first) if first.storage.capabilities.shared else first
        barrier = threading.Barrier(8)
        won: list[bool] = []
        lock = threading.Lock()

        def racer(queue: AppQueue) -> None:
            barrier.wait(TIMEOUT)
            claimed = queue.storage.claim_tick("contract.periodic", 7.0, tick_job(queue, 7.0))
            with lock:
                won.append(claimed)

        threads = [threading.Thread(target=racer, args=(first if i % 2 else other,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert sorted(won) == [False] * 7 + [True]
        assert first.storage.depth() == 1

def linked(queue: AppQueue, value: Any = None, *, bind: str | None = None, group: str | None = None,
           after: tuple[str, ...] = (), task: str = "contract.echo") -> Job:
    """A job for :meth:`Storage.put_workflow`: deferred if it waits on ``after``."""
    job = new_job(queue, task, value) if value is not None or bind is None else new_job(queue, task)
    job.options = job.options.replace(after=after or None, group=group, bind=bind)
    if after:
        job.status = JobStatus.DEFERRED
    return job


def settle_and_take(queue: AppQueue, job: Job) -> Job | None:
    """Run ``job`` and record it as a consumer does: with the claim of the next one."""
    return queue.storage.take(0, run(queue, job))


class _Workflows(_Harness):
    """Dependencies (``capabilities.workflows``): release and cancel in the outcome's atomic step."""

    @pytest.fixture
    def wf(self, queue: AppQueue) -> AppQueue:
        if not queue.storage.capabilities.workflows:
            pytest.skip("the store does not declare capabilities.workflows")
        return queue

    def test_a_child_is_released_with_the_result_in_the_step_that_records_its_parent(self, wf: AppQueue) -> None:
        parent = linked(wf, 5)
        child = linked(wf, "tail", bind="first", after=(parent.id,))
        wf.storage.put_workflow([parent, child], [Link(parent.id, child.id, 0)])
        assert status_of(wf.storage, child) == "deferred"
        assert wf.storage.counts()["deferred"] == 1 and wf.storage.dependents(parent.id) == [child.id]
        taken = wf.storage.take(0)
        assert taken is not None and taken.id == parent.id
        assert wf.storage.take(0) is None  # the child waits
        released = settle_and_take(wf, taken)  # one step: records the parent, releases and claims the child
        assert released is not None and released.id == child.id and released.args == (5, "tail")

    def test_a_chord_counter_releases_once_with_results_in_member_order(self, wf: AppQueue) -> None:
        members = [linked(wf, i, group="g1") for i in range(3)]
        callback = linked(wf, bind="list", after=tuple(m.id for m in members))
        wf.storage.put_workflow([*members, callback], [Link(m.id, callback.id, i) for i, m in enumerate(members)])
        taken = [wf.storage.take(0) for _ in members]
        assert all(t is not None for t in taken)
        for job in reversed(taken):  # finished out of order
            assert job is not None
            wf.storage.finish(run(wf, job))
        released = wf.storage.take(0)
        assert released is not None and released.id == callback.id and released.args == ([0, 1, 2],)
        assert wf.storage.take(0) is None
        group = wf.storage.group_jobs("g1")
        assert group is not None and ids(group) == ids(members)

    def test_a_failure_cancels_dependents_transitively_naming_the_failed_job(self, wf: AppQueue) -> None:
        parent = linked(wf, 1, task="contract.fail")
        child = linked(wf, bind="first", after=(parent.id,))
        grandchild = linked(wf, bind="first", after=(child.id,))
        wf.storage.put_workflow([parent, child, grandchild],
                                [Link(parent.id, child.id, 0), Link(child.id, grandchild.id, 0)])
        taken = wf.storage.take(0)
        assert taken is not None
        assert settle_and_take(wf, taken) is None
        for job in (child, grandchild):
            found = wf.storage.get(job.id)
            assert found is not None and found.status == "cancelled"
            assert found.error == f"dependency {parent.id} (contract.fail) failed: ValueError: failed 1"
        assert wf.storage.counts()["deferred"] == 0

    def test_a_retry_releases_nothing(self, wf: AppQueue) -> None:
        parent = linked(wf, 1, task="contract.retry")
        child = linked(wf, after=(parent.id,))
        wf.storage.put_workflow([parent, child], [Link(parent.id, child.id, -1)])
        taken = wf.storage.take(0)
        assert taken is not None
        wf.storage.finish(run(wf, taken))
        assert status_of(wf.storage, taken) == "scheduled" and status_of(wf.storage, child) == "deferred"

    def test_cancelling_a_deferred_job_cancels_what_waits_on_it(self, wf: AppQueue) -> None:
        parent = linked(wf, 1)
        child = linked(wf, after=(parent.id,))
        grandchild = linked(wf, after=(child.id,))
        wf.storage.put_workflow([parent, child, grandchild],
                                [Link(parent.id, child.id, -1), Link(child.id, grandchild.id, -1)])
        found = wf.storage.get(child.id)
        assert found is not None and wf.storage.cancel(found)
        gone = wf.storage.get(grandchild.id)
        assert gone is not None and gone.status == "cancelled"
        assert gone.error == f"dependency {child.id} (contract.echo) was cancelled"
        taken = wf.storage.take(0)
        assert taken is not None and settle_and_take(wf, taken) is None  # nothing left to release

    def test_a_bulk_cancel_cancels_what_waits_on_each_job_in_its_batch(self, wf: AppQueue) -> None:
        parent = linked(wf, 1)
        child = linked(wf, after=(parent.id,))
        grandchild = linked(wf, after=(child.id,))
        wf.storage.put_workflow([parent, child, grandchild],
                                [Link(parent.id, child.id, -1), Link(child.id, grandchild.id, -1)])
        found = wf.storage.get(parent.id)
        assert found is not None and wf.storage.act_on_batch("cancel", [found]) == 1
        for job in (child, grandchild):  # transitively (which ancestor the error names is the store's)
            gone = wf.storage.get(job.id)
            assert gone is not None and gone.status == "cancelled"
            assert gone.error is not None and gone.error.endswith("(contract.echo) was cancelled")
        gone = wf.storage.get(child.id)
        assert gone is not None and gone.error == f"dependency {parent.id} (contract.echo) was cancelled"
        assert wf.storage.take(0) is None and wf.storage.counts()["deferred"] == 0

    def test_a_missing_parent_is_refused_and_nothing_is_queued(self, wf: AppQueue) -> None:
        first = linked(wf, 1)
        child = linked(wf, after=("nobody-1",))
        with pytest.raises(DependencyError, match="nobody-1"):
            wf.storage.put_workflow([first, child], [Link("nobody-1", child.id, -1)])
        assert wf.storage.take(0) is None and wf.storage.counts()["deferred"] == 0

    def test_a_finished_parent_counts_at_once(self, wf: AppQueue) -> None:
        parent = queued(wf, 7)
        taken = wf.storage.take(0)
        assert taken is not None
        wf.storage.finish(run(wf, taken))
        child = linked(wf, bind="first", after=(parent.id,))
        wf.storage.put_workflow([child], [Link(parent.id, child.id, 0)])
        released = wf.storage.take(0)
        assert released is not None and released.id == child.id and released.args == (7,)

    def test_dependents_many_reads_each_jobs_children_at_once(self, wf: AppQueue) -> None:
        first, second, loner = linked(wf, 1), linked(wf, 2), linked(wf, 3)
        both = linked(wf, after=(first.id, second.id))
        tail = linked(wf, after=(first.id,))
        wf.storage.put_workflow([first, second, loner, both, tail],
                                [Link(first.id, both.id, -1), Link(second.id, both.id, -1),
                                 Link(first.id, tail.id, -1)])
        found = wf.storage.dependents_many([first.id, second.id, loner.id, "nobody-1"])
        assert found == {first.id: [both.id, tail.id], second.id: [both.id]}
        assert found[first.id] == wf.storage.dependents(first.id)
        assert wf.storage.dependents_many([]) == {}

    def test_drop_waiting_drops_deferred_jobs_too(self, wf: AppQueue) -> None:
        """A dropped parent's deferred child is dropped with it: it would otherwise wait for ever."""
        parent = linked(wf, 1)
        child = linked(wf, after=(parent.id,))
        wf.storage.put_workflow([parent, child], [Link(parent.id, child.id, -1)])
        dropped = wf.storage.drop_waiting()
        assert ids(dropped) == [parent.id, child.id]
        assert wf.storage.counts()["deferred"] == 0 and wf.storage.counts()["queued"] == 0
        assert wf.storage.get(child.id) is None and wf.storage.take(0) is None

    def test_deferred_jobs_count_toward_maxsize_and_a_workflow_is_refused_whole(self, make_store: Factory) -> None:
        queue = make_store(MEMQUEUE_MAXSIZE=3)
        if not queue.storage.capabilities.workflows:
            pytest.skip("the store does not declare capabilities.workflows")
        parent = linked(queue, 1)
        child = linked(queue, after=(parent.id,))
        queue.storage.put_workflow([parent, child], [Link(parent.id, child.id, -1)])
        a, b = linked(queue, 2), linked(queue, 3)
        with pytest.raises(QueueFull):
            queue.storage.put_workflow([a, b], [])
        assert queue.storage.counts()["queued"] == 1 and queue.storage.counts()["deferred"] == 1

    def test_the_last_two_members_finishing_at_once_in_two_processes_release_once(
        self, make_store: Factory
    ) -> None:
        first = make_store()
        if not first.storage.capabilities.workflows or not first.storage.capabilities.shared:
            pytest.skip("a store other processes share, with workflows")
        second = make_store(like=first)
        for _ in range(5):
            members = [linked(first, i) for i in range(2)]
            callback = linked(first, bind="list", after=tuple(m.id for m in members))
            links = [Link(m.id, callback.id, i) for i, m in enumerate(members)]
            first.storage.put_workflow([*members, callback], links)
            a, b = first.storage.take(0), second.storage.take(0)
            assert a is not None and b is not None
            run(first, a), run(second, b)
            start = threading.Barrier(2)

            def finish(queue: AppQueue, job: Job, start: threading.Barrier = start) -> None:
                start.wait(TIMEOUT)
                queue.storage.finish(job)

            threads = [threading.Thread(target=finish, args=(q, j)) for q, j in ((first, a), (second, b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(TIMEOUT)
            released = [j for j in (first.storage.take(0), second.storage.take(0)) if j is not None]
            assert ids(released) == [callback.id] and released[0].args == ([0, 1],)
            first.storage.finish(run(first, released[0]))


def failed_job(queue: AppQueue, value: Any) -> Job:
    """A job of ``contract.fail`` run to its failure and recorded (in the queue ``failures``)."""
    job = new_job(queue, "contract.fail", value)
    job.queue = "failures"
    queue.storage.put(job)
    taken = queue.storage.take(0, queue="failures")
    assert taken is not None
    queue.storage.finish(run(queue, taken))
    assert taken.status == "failed"
    return taken


class _ManyPauseAndSearch(_Harness):
    """Issue 24: many jobs in one step, paused queues, one filter to find jobs and act on all it matches."""

    def test_put_many_queues_every_job_in_order(self, queue: AppQueue) -> None:
        storage = queue.storage
        jobs = [new_job(queue, "contract.echo", i) for i in range(5)]
        jobs[2].queue = "other"
        later = new_job(queue, "contract.echo", "later")
        later.mark_scheduled(time.time() + 3600)
        storage.put_many([*jobs, later])
        assert storage.depth() == 6 and status_of(storage, later) == "scheduled"
        assert ids(take_all(queue, "default")) == ids([jobs[0], jobs[1], jobs[3], jobs[4]])
        assert ids(take_all(queue, "other")) == ids([jobs[2]])
        storage.put_many([])  # nothing to do, no error
        assert storage.depth() == 1

    def test_put_many_is_all_or_nothing_under_maxsize(self, make_store: Factory) -> None:
        queue = make_store(MEMQUEUE_MAXSIZE=10)
        storage = queue.storage
        queued(queue, "first")
        too_many = [new_job(queue, "contract.echo", i) for i in range(10)]
        with pytest.raises(QueueFull, match="MEMQUEUE_MAXSIZE"):
            storage.put_many(too_many)
        assert storage.depth() == 1 and all(storage.get(job.id) is None for job in too_many)
        fits = [new_job(queue, "contract.echo", i) for i in range(9)]
        storage.put_many(fits)
        assert storage.depth() == 10
        assert all(status_of(storage, job) == "queued" for job in fits)

    def test_a_paused_queue_takes_jobs_and_starts_none_until_resumed(self, queue: AppQueue) -> None:
        storage = queue.storage
        if not storage.capabilities.pausable:
            pytest.skip("the store does not declare 'pausable'")
        running = queued(queue, "running")
        taken = storage.take(0)
        assert taken is not None and taken.id == running.id
        assert storage.pause("default") is True and storage.pause("default") is False
        assert storage.paused() == {"default"}
        waiting = queued(queue, "waiting")
        other = in_queue(queue, "other")
        assert storage.take(0.05, done=run(queue, taken)) is None  # records what ran, starts nothing
        assert status_of(storage, running) == "succeeded" and status_of(storage, waiting) == "queued"
        assert ids(take_all(queue, "other")) == ids([other])  # another queue goes on
        assert storage.resume("default") is True and storage.resume("default") is False
        assert storage.paused() == set()
        again = storage.take(TIMEOUT)
        assert again is not None and again.id == waiting.id
        storage.finish(run(queue, again))

    def test_a_paused_taker_is_woken_by_resume(self, queue: AppQueue) -> None:
        storage = queue.storage
        if not storage.capabilities.pausable:
            pytest.skip("the store does not declare 'pausable'")
        storage.pause("default")
        job = queued(queue, "x")
        got: list[Job | None] = []
        taker = threading.Thread(target=lambda: got.append(storage.take(TIMEOUT)))
        taker.start()
        try:
            assert storage.take(0.05) is None
            storage.resume("default")
        finally:
            taker.join(TIMEOUT)
        assert not taker.is_alive() and ids(got) == [job.id]
        storage.finish(run(queue, got[0]))  # type: ignore[arg-type]

    def test_find_by_task_text_status_queue_and_time(self, queue: AppQueue) -> None:
        storage = queue.storage
        failed = failed_job(queue, "eve")
        start = time.time() + 1
        made = []
        for i, value in enumerate(["alice@example.com", "bob@example.com", "Carol O'Hara", "dave"]):
            job = new_job(queue, "contract.echo", value)
            job.enqueued_at = start + i
            storage.put(job)
            made.append(job)
        other = in_queue(queue, "other", value="alice again")
        every = JobFilter()
        assert {j.id for j in storage.find(every, limit=100)} == {j.id for j in [*made, failed, other]}
        assert ids(storage.find(JobFilter(q="EXAMPLE.com"))) == ids([made[1], made[0]])  # newest first
        assert ids(storage.find(JobFilter(q="o'hara"))) == ids([made[2]])
        assert ids(storage.find(JobFilter(q="failed eve"))) == ids([failed])  # in the error
        assert ids(storage.find(JobFilter(q="100%"))) == []
        assert ids(storage.find(JobFilter(task="contract.fail"))) == ids([failed])
        assert ids(storage.find(JobFilter(statuses=("failed",)))) == ids([failed])
        assert {j.id for j in storage.find(JobFilter(statuses=("queued", "failed")), limit=100)} == {
            j.id for j in [*made, failed, other]}
        assert ids(storage.find(JobFilter(queue="other"))) == ids([other])
        assert ids(storage.find(JobFilter(q="alice", queue="default"))) == ids([made[0]])
        assert ids(storage.find(JobFilter(since=start + 1, until=start + 2.5))) == ids([made[2], made[1]])
        assert ids(storage.find(JobFilter(since=start + 1, until=start + 2.5), limit=1, offset=1)) == ids([made[1]])
        assert storage.count_matching(every) == 6
        assert storage.count_matching(JobFilter(q="example")) == 2
        assert storage.count_matching(JobFilter(task="nope")) == 0

    def test_act_on_retries_cancels_and_deletes_every_match(self, queue: AppQueue) -> None:
        storage = queue.storage
        failures = [failed_job(queue, f"f{i}") for i in range(3)]
        waiting = [queued(queue, f"w{i}") for i in range(3)]
        assert storage.act_on(JobFilter(q="f1"), "retry") == 1
        assert status_of(storage, failures[1]) == "queued"
        assert storage.act_on(JobFilter(task="contract.fail"), "cancel") == 1  # the retried one waits again
        assert status_of(storage, failures[1]) == "cancelled"
        assert storage.act_on(JobFilter(statuses=("queued",)), "retry") == 0  # not failed: left alone
        assert storage.act_on(JobFilter(task="contract.echo"), "cancel") == 3
        assert all(status_of(storage, job) == "cancelled" for job in waiting)
        assert storage.act_on(JobFilter(), "retry") == 6
        assert storage.depth() == 6
        assert storage.act_on(JobFilter(), "delete") == 0  # nothing finished: waiting jobs are never deleted
        assert storage.act_on(JobFilter(task="contract.echo"), "cancel") == 3
        assert storage.act_on(JobFilter(statuses=("cancelled",)), "delete") == 3
        assert all(storage.get(job.id) is None for job in waiting)
        assert storage.count_matching(JobFilter()) == 3
        with pytest.raises(ValueError, match="action"):
            storage.act_on(JobFilter(), "explode")

    def test_act_on_batch_retries_a_batch_and_skips_what_changed(self, queue: AppQueue) -> None:
        storage = queue.storage
        failures = [failed_job(queue, f"f{i}") for i in range(3)]
        waiting = queued(queue, "w")
        seen: list[str] = []
        assert storage.act_on_batch("retry", [*failures, waiting], lambda job: seen.append(job.id)) == 3
        assert set(seen) == set(ids(failures)) and status_of(storage, waiting) == "queued"
        assert all(status_of(storage, job) == "queued" for job in failures)
        again = take_all(queue, "failures")  # each runs again (a new first attempt), and fails again
        assert set(ids(again)) == set(ids(failures)) and all(job.attempts == 1 for job in again)
        assert all(status_of(storage, job) == "failed" for job in failures)
        assert storage.act_on_batch("retry", [waiting]) == 0 and status_of(storage, waiting) == "queued"

    def test_act_on_batch_cancels_a_batch_and_skips_what_changed(self, queue: AppQueue) -> None:
        storage = queue.storage
        done_already = queued(queue, "done")
        later = scheduled(queue, time.time() + 3600, "later")
        failed = failed_job(queue, "f")
        assert ids(take_all(queue, "default")) == [done_already.id]  # it ran meanwhile: the cancel skips it
        running = queued(queue, "runs")
        taken = storage.take(0)
        assert taken is not None and taken.id == running.id
        seen: list[str] = []
        assert storage.act_on_batch("cancel", [done_already, later, running, failed], lambda j: seen.append(j.id)) == 1
        assert seen == [later.id] and status_of(storage, later) == "cancelled" and later.status.value == "cancelled"
        assert status_of(storage, running) == "running" and status_of(storage, failed) == "failed"
        assert status_of(storage, done_already) == "succeeded" and storage.depth() == 0
        storage.finish(run(queue, taken))
        fresh = [queued(queue, f"n{i}") for i in range(4)]
        assert storage.act_on_batch("cancel", fresh) == 4
        assert storage.depth() == 0 and all(status_of(storage, job) == "cancelled" for job in fresh)
        assert storage.take(0) is None

    def test_act_on_batch_deletes_only_finished_jobs(self, queue: AppQueue) -> None:
        storage = queue.storage
        failed = [failed_job(queue, f"f{i}") for i in range(2)]
        waiting = queued(queue, "w")
        seen: list[str] = []
        assert storage.act_on_batch("delete", [*failed, waiting], lambda job: seen.append(job.id)) == 2
        assert set(seen) == set(ids(failed)) and len(seen) == 2
        assert all(storage.get(job.id) is None for job in failed) and status_of(storage, waiting) == "queued"
        assert storage.act_on_batch("delete", failed) == 0

    def test_act_on_works_in_batches_when_the_store_declares_bulk_actions(
        self, queue: AppQueue, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from ..storage import base

        storage = queue.storage
        monkeypatch.setattr(base, "BULK_BATCH", 2)
        failures = [failed_job(queue, f"f{i}") for i in range(5)]
        batches: list[int] = []
        real = storage.act_on_batch

        def spy(action: str, jobs: list[Job], done: Callable[[Job], None] | None = None) -> int:
            batches.append(len(jobs))
            return real(action, jobs, done)

        monkeypatch.setattr(storage, "act_on_batch", spy)
        assert storage.act_on(JobFilter(task="contract.fail"), "retry") == 5
        assert all(status_of(storage, job) == "queued" for job in failures)
        assert batches == ([2, 2, 1] if storage.capabilities.bulk_actions else [])

    def test_delete_forgets_only_a_finished_job(self, queue: AppQueue) -> None:
        storage = queue.storage
        waiting = queued(queue, "w")
        assert storage.delete(waiting) is False and status_of(storage, waiting) == "queued"
        failed = failed_job(queue, "f")
        assert storage.delete(failed) is True and storage.get(failed.id) is None
        assert storage.delete(failed) is False


class _StoredOptions(_Harness):
    """The options a job holds without a column of their own (``JobOptions``' stored
    fields: the trace context the OpenTelemetry hook records) come back with the job,
    whichever way it was put, taken, read or retried."""

    TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def _traced(self, queue: AppQueue, value: Any = None) -> Job:
        job = new_job(queue, "contract.retry", value)
        job.options = job.options.replace(traceparent=self.TRACEPARENT, tracestate="vendor=1", time_limit=7.5,
                                          isolated=False, memory_limit=2**30)
        return job

    def test_stored_options_come_back_from_put_take_get_and_a_retry(self, queue: AppQueue) -> None:
        job = self._traced(queue, "x")
        queue.storage.put(job)
        found = queue.storage.get(job.id)
        assert found is not None and found.options.traceparent == self.TRACEPARENT
        taken = queue.storage.take(0)
        assert taken is not None and taken.id == job.id
        assert (taken.options.traceparent, taken.options.tracestate) == (self.TRACEPARENT, "vendor=1")
        assert taken.options.time_limit == 7.5  # a call's own time limit reaches the worker that takes it
        assert (taken.options.isolated, taken.options.memory_limit) == (False, 2**30)  # and its isolation
        queue.consumer.execute(taken)  # contract.retry fails once, with a retry left
        assert taken.status is JobStatus.SCHEDULED
        queue.storage.schedule(taken, retry=True)
        again = queue.storage.take(0) or queue.storage.take(5)
        assert again is not None and again.id == job.id and again.options.traceparent == self.TRACEPARENT

    def test_stored_options_come_back_from_put_unique_and_a_scheduled_job(self, queue: AppQueue) -> None:
        keyed_job = self._traced(queue, "k")
        keyed_job.unique_key = "contract:traced"
        assert queue.storage.put_unique(keyed_job) is keyed_job
        later = self._traced(queue, "s")
        later.mark_scheduled(time.time() - 1)
        queue.storage.schedule(later)
        for job in (keyed_job, later):
            found = queue.storage.get(job.id)
            assert found is not None and found.options.tracestate == "vendor=1", job
        taken = [queue.storage.take(0), queue.storage.take(0)]
        assert sorted(ids(taken)) == sorted([keyed_job.id, later.id])  # type: ignore[type-var]
        assert all(t is not None and t.options.traceparent == self.TRACEPARENT for t in taken)

    def test_a_job_without_such_options_keeps_its_tasks_shared_options(self, queue: AppQueue) -> None:
        job = queued(queue, "plain")
        taken = queue.storage.take(0)
        assert taken is not None and taken.id == job.id
        assert taken.options.traceparent is None and taken.options == job.options


class _RateAndConcurrencyLimits(_Harness):
    """Issue 24: a store that declares ``capabilities.limits`` checks a job's rate and
    concurrency limits (its options) when it claims: a job over its limit stays queued and
    the claim takes the next job; a slot is freed by an outcome, a retry or a cancel."""

    def test_a_job_over_its_concurrency_limit_waits_queued_and_the_next_job_runs(self, queue: AppQueue) -> None:
        needs_limits(queue)
        storage = queue.storage
        first, second = limited(queue, "a", concurrency=1), limited(queue, "a", concurrency=1)
        plain = queued(queue, "plain")
        got = [storage.take(0), storage.take(0)]
        assert ids(got) == ids([first, plain])  # no head-of-line blocking behind the limited job
        assert storage.take(0) is None and status_of(storage, second) == "queued"
        again = storage.take(0, done=run(queue, got[0]))  # type: ignore[arg-type]  # its slot is free now
        assert again is not None and again.id == second.id
        storage.finish(run(queue, again))
        storage.finish(run(queue, got[1]))  # type: ignore[arg-type]
        assert storage.take(0) is None and storage.depth() == 0

    def test_each_key_has_its_own_slots(self, queue: AppQueue) -> None:
        needs_limits(queue)
        storage = queue.storage
        jobs = [limited(queue, key, concurrency=2) for key in ("a", "b", "a", "b", "a", "b")]
        got = [storage.take(0) for _ in range(4)]
        assert sorted(ids(got)) == sorted(ids(jobs[:4]))  # type: ignore[type-var]
        assert storage.take(0) is None
        uses = {(u.kind, u.key): u for u in storage.limit_uses()}
        a, b = uses[("concurrency", "contract.echo:a")], uses[("concurrency", "contract.echo:b")]
        assert (a.limit, a.in_use, a.waiting) == (2, 2, 1) and (b.in_use, b.waiting) == (2, 1)
        assert a.to_dict()["task"] == "contract.echo"
        for job in got:
            storage.finish(run(queue, job))  # type: ignore[arg-type]
        rest = [storage.take(0), storage.take(0)]
        assert sorted(ids(rest)) == sorted(ids(jobs[4:]))  # type: ignore[type-var]
        for job in rest:
            storage.finish(run(queue, job))  # type: ignore[arg-type]

    def test_a_retry_and_a_cancel_release_the_slot(self, queue: AppQueue) -> None:
        needs_limits(queue)
        storage = queue.storage
        failing = limited(queue, "r", concurrency=1, task="contract.retry")
        waiting = limited(queue, "r", concurrency=1)
        behind = limited(queue, "r", concurrency=1)
        taken = storage.take(0)
        assert taken is not None and taken.id == failing.id
        run(queue, taken)
        assert taken.status is JobStatus.SCHEDULED  # its retry waits: the slot is free
        assert storage.cancel(waiting) is True and status_of(storage, waiting) == "cancelled"
        nxt = storage.take(0, done=taken) or storage.take(TIMEOUT)
        assert nxt is not None and nxt.id == behind.id
        assert storage.take(0) is None  # the retry is due, but the one slot runs `behind`
        storage.finish(run(queue, nxt))
        retried = storage.take(TIMEOUT)
        assert retried is not None and retried.id == failing.id

    def test_a_bulk_cancel_of_jobs_held_for_a_slot_takes_them_out_of_the_wait(self, queue: AppQueue) -> None:
        needs_limits(queue)
        storage = queue.storage
        holder = limited(queue, "h", concurrency=1)
        held = limited(queue, "h", concurrency=1)
        behind = limited(queue, "h", concurrency=1)
        taken = storage.take(0)
        assert taken is not None and taken.id == holder.id
        assert storage.take(0) is None  # both wait for the one slot (a store may set them aside)
        found = storage.get(held.id)
        assert found is not None and storage.act_on_batch("cancel", [found]) == 1
        storage.finish(run(queue, taken))  # the slot frees: the first job still waiting gets it
        nxt = storage.take(TIMEOUT)
        assert nxt is not None and nxt.id == behind.id
        storage.finish(run(queue, nxt))
        assert storage.take(0) is None and status_of(storage, held) == "cancelled"

    def test_a_rate_limit_starts_at_most_its_limit_per_window(self, queue: AppQueue) -> None:
        needs_limits(queue)
        storage = queue.storage
        period = 3600.0
        for _ in range(3):  # a window edge crossed mid-test is the one thing that may change the count
            start = time.time() // period
            jobs = [limited(queue, "mail", rate=(2, period)) for _ in range(3)]
            plain = queued(queue, "plain")
            got = [storage.take(0), storage.take(0), storage.take(0)]
            if time.time() // period == start:
                break
            storage.drop_waiting()
        assert ids(got) == ids([jobs[0], jobs[1], plain])
        assert storage.take(0) is None and status_of(storage, jobs[2]) == "queued"
        (use,) = [u for u in storage.limit_uses() if u.kind == "rate"]
        assert (use.key, use.limit, use.in_use, use.waiting, use.period) == ("contract.echo:mail", 2, 2, 1, period)
        for job in got:
            storage.finish(run(queue, job))  # type: ignore[arg-type]
        assert storage.take(0) is None  # finished jobs do not give a window back
        assert storage.cancel(jobs[2]) is True

    def test_drop_waiting_drops_the_jobs_held_for_a_limit_and_their_counts(self, queue: AppQueue) -> None:
        """A purge (:meth:`drop_waiting`, what a shutdown that does not wait does) drops every
        waiting job, also one a store set aside for a concurrency slot or a rate window: none
        is left to run later, and no count still shows it."""
        needs_limits(queue)
        storage = queue.storage
        holder = limited(queue, "d", concurrency=1)
        held = limited(queue, "d", concurrency=1)
        rated = [limited(queue, "dm", rate=(1, 3600.0)) for _ in range(2)]
        plain = queued(queue, "plain")
        taken: list[Job] = []
        while (job := storage.take(0)) is not None:
            taken.append(job)
        # holder, rated[0] and plain run; held waits for the slot, rated[1] for the next window
        # (unless this one ended mid-test: then it ran too)
        assert holder.id in ids(taken) and held.id not in ids(taken)
        waiting = [job for job in (held, *rated, plain) if job.id not in ids(taken)]
        dropped = storage.drop_waiting()
        assert sorted(ids(dropped)) == sorted(ids(waiting))  # type: ignore[type-var]
        assert storage.depth() == 0 and storage.counts()["queued"] == 0
        assert all(row["queued"] == 0 for row in storage.queue_counts().values())
        assert [(u.key, u.waiting) for u in storage.limit_uses() if u.waiting] == []  # none still counted as held
        for job in taken:
            storage.finish(run(queue, job))  # the slot frees: nothing held comes back for it
        assert storage.take(0) is None and storage.depth() == 0
        assert all(storage.get(job.id) is None for job in waiting)

    def test_jobs_without_limits_show_none(self, queue: AppQueue) -> None:  # on every store
        queued(queue, "plain")
        assert queue.storage.limit_uses() == []


def needs_limits(queue: AppQueue) -> None:
    """Skip unless the store declares ``capabilities.limits``."""
    if not queue.storage.capabilities.limits:
        pytest.skip("the store does not declare capabilities.limits (rate and concurrency limits)")


def limited(queue: AppQueue, key: str, *, concurrency: int | None = None, rate: tuple[int, float] | None = None,
            task: str = "contract.echo") -> Job:
    """A job queued with a concurrency or rate limit on ``contract.echo:<key>`` (as ``@mq.task(...)``
    makes it; the key is the same whatever ``task``, so that jobs of two tasks can share it)."""
    job = new_job(queue, task, key)
    changes: dict[str, Any] = {}
    if concurrency is not None:
        changes.update(concurrency=concurrency, concurrency_key=f"contract.echo:{key}")
    if rate is not None:
        changes.update(rate_limit=rate[0], rate_period=rate[1], rate_key=f"contract.echo:{key}")
    job.options = job.options.replace(**changes)
    queue.storage.put(job)
    return job


class StorageContract(_PutAndTake, _SingleJobsAndListings, _WaitingAndBounds, _QueuesAndPriorities,
                      _UniqueKeysAndTicks, _Workflows, _ManyPauseAndSearch, _StoredOptions,
                      _RateAndConcurrencyLimits):
    """The storage contract every store passes (:class:`~flask_memqueue.storage.Storage`).

    Subclass it (its name does not start with ``Test``, so pytest collects
    your subclass only) and define the fixture ``store_config``.
    """


class SharedStorageContract(_Harness):
    """What a store that declares ``capabilities.shared`` must do besides :class:`StorageContract`:
    other processes read its jobs (JSON round trips), take over a dead owner's jobs, and
    keep the apps that share it apart. A store made ``like=`` another stands for another
    process on the same store."""

    def test_declares_that_other_processes_share_it(self, queue: AppQueue) -> None:
        caps = queue.storage.capabilities
        assert caps.shared, "a store run against SharedStorageContract declares capabilities.shared"
        assert caps.json_only, "a job another process runs must be readable there: arguments are JSON"

    def test_arguments_are_what_a_json_round_trip_gives(self, make_store: Factory) -> None:
        queue = make_store()
        payload = [1, (2, 3)]
        job = new_job(queue, "contract.echo", payload, value=None)
        job.kwargs = {"value": {1: "one"}}
        queue.storage.put(job)
        payload.append("later")  # a later change of the caller's object is not the job's
        assert job.args == ([1, [2, 3]],)
        assert job.kwargs == {"value": {"1": "one"}}
        taken = queue.storage.take(0)
        assert taken is not None and taken.args == job.args and taken.kwargs == job.kwargs

    def test_another_process_reads_and_runs_a_job_with_its_stored_options(self, make_store: Factory) -> None:
        first = make_store()
        second = make_store(like=first)
        job = new_job(first, "contract.echo", "traced")
        job.options = job.options.replace(traceparent=_StoredOptions.TRACEPARENT)
        first.storage.put(job)
        taken = second.storage.take(0)
        assert taken is not None and taken is not job and taken.id == job.id
        assert taken.options.traceparent == _StoredOptions.TRACEPARENT and taken.options.tracestate is None
        assert taken.options.queue == job.options.queue

    def test_task_names_and_enqueue_times_come_back_exactly(self, make_store: Factory) -> None:
        """A store may write a task name or a time compactly (Redis: a code, an 8-character
        stamp): a name that looks like a code or a JSON string or holds a newline, and any
        float time, come back the same to another process from get, a listing, a search by
        task and a take."""
        first = make_store()
        second = make_store(like=first)
        made = []
        for i, (name, at) in enumerate(zip(("contract.echo", *ODD_NAMES),  # (the first name stored: "#1" on Redis)
                                           (time.time(), 1700000000.1234567, 999.875, 2.0**31 + 0.5), strict=True)):
            job = new_job(first, name, i)
            job.enqueued_at = at
            first.storage.put(job)
            made.append(job)
        storage = second.storage
        expected = {(j.id, j.name, j.enqueued_at) for j in made}
        for job in made:
            found = storage.get(job.id)
            assert found is not None and found is not job
            assert (found.id, found.name, found.enqueued_at) == (job.id, job.name, job.enqueued_at)
            assert ids(storage.find(JobFilter(task=job.name))) == [job.id]
        assert {(j.id, j.name, j.enqueued_at) for j in storage.jobs(limit=10)} == expected
        taken = [storage.take(0) for _ in made]
        assert {(j.id, j.name, j.enqueued_at) for j in taken if j is not None} == expected

    def test_non_json_arguments_are_refused_at_enqueue(self, make_store: Factory) -> None:
        queue = make_store()
        for bad in (object(), float("nan"), {1, 2}):
            with pytest.raises(TypeError, match="contract.echo.*argument 0"):
                queued(queue, bad)
        assert queue.storage.depth() == 0

    def test_a_dead_owners_job_is_taken_over_counting_one_attempt(self, make_store: Factory) -> None:
        first = make_store()
        second = make_store(like=first)
        once = queued(first, "once")  # no retries: interrupted means failed
        twice = queued(first, None, "contract.retry")  # one retry left
        a, b = first.storage.take(0), first.storage.take(0)
        assert a is not None and b is not None
        assert second.storage.take(0) is None  # both running, owned by the first "process"
        storage: Any = second.storage
        if not callable(getattr(storage, "recover", None)) or not hasattr(storage, "_owner_alive"):
            pytest.skip("the store takes over a dead owner's jobs its own way (not DurableStorage.recover())")
        storage._owner_alive = lambda owner: False  # the first process died
        assert storage.recover() == 2
        assert storage.recover() == 0  # taken once only
        gone = storage.get(once.id)
        assert gone is not None and gone.status == "failed" and gone.error == "interrupted" and gone.attempts == 1
        again = storage.get(twice.id)
        assert again is not None and again.status == "scheduled" and again.attempts == 1
        assert again.error is not None and again.error.startswith("interrupted")
        retried = storage.take(TIMEOUT)  # retry_delay=0: due at once
        assert retried is not None and retried.id == twice.id

    def test_a_concurrency_slot_counts_across_processes_and_a_take_over_frees_it(self, make_store: Factory) -> None:
        first = make_store()
        if not first.storage.capabilities.limits:
            pytest.skip("the store does not declare capabilities.limits")
        second = make_store(like=first)
        held = limited(first, "x", concurrency=1)
        waiting = limited(first, "x", concurrency=1)
        taken = first.storage.take(0)
        assert taken is not None and taken.id == held.id
        assert second.storage.take(0) is None  # the one slot is held by the first "process"
        storage: Any = second.storage
        if not callable(getattr(storage, "recover", None)) or not hasattr(storage, "_owner_alive"):
            pytest.skip("the store takes over a dead owner's jobs its own way (not DurableStorage.recover())")
        storage._owner_alive = lambda owner: False  # the first process died: its lease frees the slot
        assert storage.recover() == 1
        nxt = storage.take(TIMEOUT)
        assert nxt is not None and nxt.id == waiting.id
    def test_a_dead_owners_job_asked_to_stop_ends_aborted_not_run_again(self, make_store: Factory) -> None:
        first = make_store()
        second = make_store(like=first)
        if not second.storage.capabilities.abort_flags:
            pytest.skip("the store does not declare abort_flags")
        job = queued(first, None, "contract.retry")  # a retry left: it would run again if interrupted
        taken = first.storage.take(0)
        assert taken is not None and taken.id == job.id
        assert second.storage.request_abort(job.id, "aborted by a test at noon") is True
        storage: Any = second.storage
        if not callable(getattr(storage, "recover", None)) or not hasattr(storage, "_owner_alive"):
            pytest.skip("the store takes over a dead owner's jobs its own way (not DurableStorage.recover())")
        storage._owner_alive = lambda owner: False  # its process died before it read the request
        assert storage.recover() == 1
        found = storage.get(job.id)
        assert found is not None and found.status == "aborted" and found.error == "aborted by a test at noon"
        assert storage.take(0) is None  # not run again
        assert storage.counts()["aborted"] == 1

    def test_a_result_is_what_a_json_round_trip_gives_on_every_object(
        self, make_store: Factory, contract_mq: MemQueue
        ) -> None:
        @contract_mq.task(name="contract.pair")
        def pair(value: Any = None) -> Any:
            return (1, {2: "two"})

        queue = make_store()
        job = queued(queue, task="contract.pair")
        taken = queue.storage.take(0)
        assert taken is not None
        run(queue, taken)
        queue.storage.finish(taken)
        found = queue.storage.get(job.id)
        assert found is not None
        assert taken.result == found.result == [1, {"2": "two"}]

    def test_a_shared_store_remembers_which_queues_a_process_declares(self, make_store: Factory) -> None:
        first = make_store()
        other = make_store(like=first)
        assert other.storage.known_queues() == set()
        first.storage.declare_queues(["emails", "default"])
        assert other.storage.known_queues() == {"emails", "default"}
        first.storage.declare_queues(["emails"])
        assert other.storage.known_queues() == {"emails"}
        stranger = make_store(like=first, name="another_app")
        assert stranger.storage.known_queues() == set()  # apps sharing a store keep apart

    def test_a_pause_holds_for_every_process_and_outlives_them(self, make_store: Factory) -> None:
        first = make_store()
        second = make_store(like=first)
        job = queued(second, "x")
        assert first.storage.pause("default")
        assert second.storage.paused() == {"default"}
        assert second.storage.take(0) is None  # another process obeys (its read of the state is new)
        stranger = make_store(like=first, name="another_app")
        assert stranger.storage.paused() == set()  # apps sharing a store keep apart
        first.storage.close()
        third = make_store(like=first)  # a restart: the state is the store's
        assert third.storage.paused() == {"default"}
        assert second.storage.resume("default")
        deadline = time.monotonic() + TIMEOUT
        taken = None
        while taken is None and time.monotonic() < deadline:
            taken = third.storage.take(0.2)
        assert taken is not None and taken.id == job.id
        third.storage.finish(run(third, taken))

    def test_unique_keys_of_two_apps_sharing_a_store_keep_apart(self, make_store: Factory) -> None:
        first = make_store()
        stranger = make_store(like=first, name="another_app")
        mine, _ = keyed(first, "k")
        theirs, got = keyed(stranger, "k")
        assert got.id == theirs.id != mine.id

    def test_ticks_of_two_apps_sharing_a_store_keep_apart(self, make_store: Factory) -> None:
        first = make_store()
        stranger = make_store(like=first, name="another_app")
        assert first.storage.claim_tick("contract.periodic", 5.0, None) is True
        assert stranger.storage.claim_tick("contract.periodic", 5.0, None) is True
        assert stranger.storage.last_ticks()["contract.periodic"].tick == 5.0


__all__ = ["TIMEOUT", "Factory", "SharedStorageContract", "StorageContract", "StoreConfig"]
