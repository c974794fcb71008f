"""Workflows (issue 21): chains, groups, chords and depends_on, on every store that declares them.

Each test runs against the memory store, the SQLite journal, the test dict store
(tests/dictstore.py), Redis and PostgreSQL (the stores that declare
``capabilities.workflows``); a store without it must refuse a workflow clearly.
The consumer runs in its thread; tests wait with ``wait(timeout)`` / ``join``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.backends import STORAGE_BACKENDS, backend_params
from support.waiting import TIMEOUT

from flask_memqueue import DependencyError, JobFailed, JobStatus, MemQueue, QueueFull, WorkflowsUnsupported

WORKFLOW_BACKENDS = ["memory", "sqlite", "dict", "redis", "postgres"]
#: Gates by name: a job of wf.held waits until its gate is set (JSON arguments: a name, not an object).
_GATES: dict[str, threading.Event] = {}


def new_gate() -> str:
    name = f"gate-{len(_GATES)}"
    _GATES[name] = threading.Event()
    return name


class Tasks:
    def __init__(self, mq: MemQueue) -> None:
        @mq.task(name="wf.add")
        def add(x: int, y: int = 0) -> int:
            return x + y

        @mq.task(name="wf.total")
        def total(values: list[int], extra: int = 0) -> int:
            return sum(values) + extra

        @mq.task(name="wf.boom")
        def boom(x: Any = None) -> int:
            raise ValueError(f"boom {x}")

        @mq.task(name="wf.flaky", retries=1, retry_delay=0.0)
        def flaky(x: int) -> int:
            from flask_memqueue import current_job

            if current_job.attempts < 2:
                raise RuntimeError("once")
            return x * 10

        @mq.task(name="wf.held")
        def held(gate: str) -> str:
            if not _GATES[gate].wait(TIMEOUT):
                raise TimeoutError("the gate was never opened")
            return gate

        @mq.task(name="wf.unjson")
        def unjson() -> object:
            return object()

        self.add, self.total, self.boom, self.flaky, self.held, self.unjson = add, total, boom, flaky, held, unjson


def store_config(backend: str, tmp_path: Path) -> dict[str, Any]:
    """The config of ``backend`` in a folder of this test's own (the shared servers' stores
    are kept apart per test by support/backends.py)."""
    folder = tmp_path / "store"
    folder.mkdir(exist_ok=True)
    return STORAGE_BACKENDS[backend](folder)


@pytest.fixture(params=backend_params(WORKFLOW_BACKENDS))
def wf_app(request: pytest.FixtureRequest, make_app: Callable[..., Flask], mq: MemQueue,
           tmp_path: Path) -> tuple[Flask, Tasks]:
    tasks = Tasks(mq)
    app = make_app(**store_config(request.param, tmp_path))
    return app, tasks


def test_a_chain_passes_each_result_on_and_wait_returns_the_last(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    with app.app_context():
        last = mq.chain(t.add.s(1, 2), t.add.s(y=10), t.add.s(100)).delay()
        assert last.wait(TIMEOUT) == 113
        info = last.to_dict()
        assert info["status"] == "succeeded" and len(info["depends_on"]) == 1
        middle = mq.get_job(info["depends_on"][0])
        assert middle is not None and middle.result == 13 and middle.dependents() == [last.id]


def test_si_ignores_the_previous_result(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    with app.app_context():
        assert mq.chain(t.add.s(1, 2), t.add.si(5, 5)).delay().wait(TIMEOUT) == 10


def test_a_group_runs_its_members_and_reads_back_by_id(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    with app.app_context():
        group = mq.group(*(t.add.s(i, 1) for i in range(20))).delay()
        assert group.results(TIMEOUT) == [i + 1 for i in range(20)]
        assert group.status == "succeeded" and len(group.jobs) == 20
        assert group.results(float("inf")) == group.results(1e12) == [i + 1 for i in range(20)]  # no end
        with pytest.raises(ValueError, match="nan"):
            group.results(float("nan"))  # was a TimeoutError "within nan s"
        again = mq.get_group(group.id)
        assert again is not None and [j.id for j in again.jobs] == [j.id for j in group.jobs]
        assert again.jobs[3].to_dict()["group"] == group.id
        assert mq.get_group("nope") is None
        body = app.test_client().get(f"/memqueue/groups/{group.id}").get_json()
        assert body["status"] == "succeeded" and [j["result"] for j in body["jobs"]] == [i + 1 for i in range(20)]
        listed = app.test_client().get(f"/memqueue/jobs?group={group.id}&limit=5").get_json()
        assert listed["total"] == 20 and [j["id"] for j in listed["jobs"]] == [j.id for j in group.jobs[:5]]
        assert app.test_client().get("/memqueue/groups/nope").status_code == 404


def test_the_group_and_a_filter_combine_and_a_listing_reads_dependents_once(
    wf_app: tuple[Flask, Tasks], mq: MemQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, t = wf_app
    with app.app_context():
        callback = mq.chord(mq.group(t.add.s(1), t.add.s(2), t.boom.s(3), t.add.s(4)), t.total.s()).delay()
        with pytest.raises(JobFailed):
            callback.wait(TIMEOUT)
        member = mq.get_job(callback.to_dict()["depends_on"][0])
        assert member is not None
        gid = member.to_dict()["group"]
        storage = app.extensions["memqueue"].storage
        # A listing asks the store for its page's dependents in one call, never once per job.
        monkeypatch.setattr(storage, "dependents", lambda job_id: pytest.fail("dependents() asked per job"))
        client = app.test_client()
        both = client.get(f"/memqueue/jobs?group={gid}&task=wf.boom").get_json()
        assert [j["task"] for j in both["jobs"]] == ["wf.boom"] and both["total"] == 1 and both["group"] == gid
        assert both["jobs"][0]["dependents"] == [callback.id]
        text = client.get(f"/memqueue/jobs?group={gid}&q=4").get_json()
        assert [j["args"] for j in text["jobs"]] == [[4]]
        failed = client.get(f"/memqueue/jobs?group={gid}&status=failed,succeeded&task=wf.add").get_json()
        assert failed["total"] == 3 and all(j["status"] == "succeeded" for j in failed["jobs"])
        assert client.get(f"/memqueue/jobs?group={gid}&since=2000-01-01T00:00:00Z").get_json()["total"] == 4
        assert client.get(f"/memqueue/jobs?group={gid}&until=2000-01-01T00:00:00Z").get_json()["total"] == 0
        page = client.get("/memqueue/jobs?limit=500").get_json()
        assert {j["id"]: j["dependents"] for j in page["jobs"]}[member.id] == [callback.id]


def test_the_dashboard_shows_a_workflow_and_a_group(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    with app.app_context():
        last = mq.chain(t.add.s(1), t.add.s(2), t.add.s(3)).delay()
        assert last.wait(TIMEOUT) == 6
        first = mq.get_job(mq.get_job(last.to_dict()["depends_on"][0]).to_dict()["depends_on"][0])  # type: ignore[union-attr]
        assert first is not None
        chord = mq.chord(mq.group(t.add.s(1), t.add.s(2)), t.total.s()).delay()
        assert chord.wait(TIMEOUT) == 3
        gid = mq.get_job(chord.to_dict()["depends_on"][0]).to_dict()["group"]  # type: ignore[union-attr]
    client = app.test_client()
    page = client.get(f"/memqueue/ui/jobs/{first.id}/workflow").get_data(as_text=True)
    spots = [page.index(f'data-id="{i}"') for i in (first.id, *first.dependents(), last.id)]
    assert spots == sorted(spots) and len(set(spots)) == 3, "the chain's links, parents first"
    own = client.get(f"/memqueue/ui/jobs/{last.id}").get_data(as_text=True)
    assert 'id="job-workflow"' in own and f'href="/memqueue/ui/jobs/{last.id}/workflow"' in own
    group = client.get(f"/memqueue/ui/groups/{gid}").get_data(as_text=True)
    assert f'data-id="{chord.id}"' in group and 'id="group-status" title="Group.status">succeeded' in group
    assert client.get("/memqueue/ui/groups/nope").status_code == 404
    assert client.get("/memqueue/ui/jobs/nope/workflow").status_code == 404
    listed = client.get(f"/memqueue/?group={gid}&refresh=0", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert listed.count('data-c="workflow" href') == 3 and 'id="act-on-matches"' not in listed  # 2 + the template


def test_a_chord_gives_the_callback_every_result_in_member_order(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    with app.app_context():
        callback = mq.chord(mq.group(*(t.add.s(i) for i in range(50))), t.total.s(extra=1000)).delay()
        assert callback.wait(TIMEOUT) == sum(range(50)) + 1000
        assert callback.args[0] == list(range(50))


def test_a_failure_cancels_what_waits_on_it_transitively(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    with app.app_context():
        last = mq.chain(t.add.s(1), t.boom.s(), t.add.s(), t.add.s()).delay()
        with pytest.raises(JobFailed):
            last.wait(TIMEOUT)
        assert mq.join(TIMEOUT)
        failed_id = mq.get_job(mq.get_job(last.to_dict()["depends_on"][0]).to_dict()["depends_on"][0])  # type: ignore[union-attr]
        assert failed_id is not None and failed_id.status == "failed"
        for job_id in (last.id, last.to_dict()["depends_on"][0]):
            job = mq.get_job(job_id)
            assert job is not None and job.status == "cancelled"
            assert job.error == f"dependency {failed_id.id} (wf.boom) failed: ValueError: boom 1"


def test_a_retried_link_does_not_release_until_it_succeeds(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    with app.app_context():
        assert mq.chain(t.flaky.s(4), t.add.s(1)).delay().wait(TIMEOUT) == 41


def test_a_failed_member_cancels_the_chord_callback_and_results_raises_for_it(
    wf_app: tuple[Flask, Tasks], mq: MemQueue
) -> None:
    app, t = wf_app
    with app.app_context():
        group = mq.group(t.add.s(1), t.boom.s(2), t.add.s(3))
        callback = mq.chord(group, t.total.s()).delay()
        with pytest.raises(JobFailed):
            callback.wait(TIMEOUT)
        assert callback.status == "cancelled" and callback.error is not None
        assert callback.error.startswith("dependency ")
        assert callback.error.endswith("(wf.boom) failed: ValueError: boom 2")
        assert mq.join(TIMEOUT)
        members = mq.group(t.add.s(1), t.boom.s(2), t.boom.s(3)).delay()
        with pytest.raises(JobFailed) as caught:
            members.results(TIMEOUT)
        assert caught.value.job.id == members.jobs[1].id
        assert mq.join(TIMEOUT)
        assert members.status == "failed"


def test_depends_on_waits_for_every_job_and_passes_nothing(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    gate = new_gate()
    with app.app_context():
        first = t.held.delay(gate)
        second = t.add.delay(1)
        after = t.add.options(depends_on=[first, second.id]).delay(7)
        assert after.status == "deferred"
        assert app.test_client().get("/memqueue/jobs?status=deferred").get_json()["total"] == 1
        info = app.test_client().get(f"/memqueue/jobs/{after.id}").get_json()
        assert info["status"] == "deferred" and info["depends_on"] == [first.id, second.id]
        assert mq.get_job(first.id).dependents() == [after.id]  # type: ignore[union-attr]
        _GATES[gate].set()
        assert after.wait(TIMEOUT) == 7


@pytest.mark.parametrize("backend", backend_params(WORKFLOW_BACKENDS))
def test_a_chain_link_with_an_extra_depends_on_gets_its_links_result_whichever_finishes_last(
    backend: str, make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    t = Tasks(mq)
    app = make_app(MEMQUEUE_QUEUES={"default": 2}, **store_config(backend, tmp_path))  # held + the chain
    gate = new_gate()
    with app.app_context():
        other = t.held.delay(gate)
        last = mq.chain(t.add.s(1, 2), t.add.s(10).options(depends_on=other)).delay()
        link_id, other_id = last.to_dict()["depends_on"]
        assert other_id == other.id
        assert mq.get_job(link_id).wait(TIMEOUT) == 3  # type: ignore[union-attr]
        assert last.status == "deferred"
        _GATES[gate].set()  # the extra dependency finishes last: its result ("gate-...") is not passed
        assert last.wait(TIMEOUT) == 13


def test_depends_on_a_finished_job_runs_at_once_or_is_cancelled(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    with app.app_context():
        ok = t.add.delay(1)
        ok.wait(TIMEOUT)
        assert mq.options(depends_on=ok).enqueue(t.add, 2).wait(TIMEOUT) == 2
        bad = t.boom.delay(1)
        with pytest.raises(JobFailed):
            bad.wait(TIMEOUT)
        doomed = t.add.options(depends_on=bad).delay(3)
        with pytest.raises(JobFailed):
            doomed.wait(TIMEOUT)
        assert doomed.error == f"dependency {bad.id} (wf.boom) failed: ValueError: boom 1"


def test_cancelling_a_deferred_job_cancels_what_waits_on_it(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    app, t = wf_app
    gate = new_gate()
    with app.app_context():
        blocker = t.held.delay(gate)
        middle = t.add.options(depends_on=blocker).delay(1)
        last = t.add.options(depends_on=middle).delay(2)
        response = app.test_client().post(f"/memqueue/jobs/{middle.id}/cancel")
        assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
        _GATES[gate].set()
        assert blocker.wait(TIMEOUT) == gate
        with pytest.raises(JobFailed):
            last.wait(TIMEOUT)
        assert last.error == f"dependency {middle.id} (wf.add) was cancelled"


def test_a_result_json_cannot_hold_fails_its_link_clearly(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    t = Tasks(mq)
    app = make_app(**store_config("sqlite", tmp_path))
    with app.app_context():
        last = mq.chain(t.unjson.s(), t.add.s()).delay()
        with pytest.raises(JobFailed):
            last.wait(TIMEOUT)
        assert last.error is not None
        assert "(wf.unjson) failed: TypeError: the result of wf.unjson is not JSON" in last.error


@pytest.mark.parametrize("backend", backend_params(WORKFLOW_BACKENDS))
def test_a_workflow_that_does_not_fit_is_refused_whole(
    backend: str, make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    t = Tasks(mq)
    app = make_app(MEMQUEUE_MAXSIZE=5, MEMQUEUE_CONSUMER=False, **store_config(backend, tmp_path))
    with app.app_context():
        t.add.delay(1)
        mq.chain(t.add.s(1), t.add.s(), t.add.s()).delay()  # 4 of 5: deferred jobs count
        with pytest.raises(QueueFull, match="none of them was queued"):
            mq.chord(mq.group(t.add.s(1), t.add.s(2)), t.total.s()).delay()
        counts = app.extensions["memqueue"].storage.counts()
        assert counts["queued"] == 2 and counts["deferred"] == 2


def test_dependency_errors_are_clear_and_queue_nothing(wf_app: tuple[Flask, Tasks], mq: MemQueue,
                                                       make_app: Callable[..., Flask]) -> None:
    app, t = wf_app
    other = make_app("other_app")
    with other.app_context():
        foreign = t.add.delay(1)
        foreign.wait(TIMEOUT)
    with app.app_context():
        before = app.extensions["memqueue"].storage.counts()
        with pytest.raises(DependencyError, match="belongs to another app's queue"):
            t.add.options(depends_on=foreign).delay(1)
        with pytest.raises(DependencyError, match="holds no job 'nope-1'"):
            mq.chain(t.add.s(1), t.add.s().options(depends_on="nope-1")).delay()
        assert app.extensions["memqueue"].storage.counts()["deferred"] == before["deferred"]
        with pytest.raises(TypeError, match="call objects"):
            mq.chain(t.add)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one"):
            mq.group()
        with pytest.raises(TypeError):
            t.add.options(depends_on=42).delay(1)  # type: ignore[arg-type]


def test_eager_mode_runs_workflows_inline_in_order(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    t = Tasks(mq)
    app = make_app(MEMQUEUE_EAGER=True)
    with app.app_context():
        last = mq.chain(t.add.s(1, 2), t.add.s(3)).delay()
        assert last.status == "succeeded" and last.result == 6
        callback = mq.chord(mq.group(t.add.s(1), t.add.s(2)), t.total.s()).delay()
        assert callback.result == 3
        cancelled = mq.chain(t.boom.s(1), t.add.s()).delay()
        assert cancelled.status == "cancelled" and cancelled.error is not None
        assert "(wf.boom) failed: ValueError: boom 1" in cancelled.error
        assert mq.pause("default")  # the store holds a workflow's jobs, as for a worker (docs/workflows.md)
        assert t.add.delay(1, 1).result == 2  # a plain job runs regardless
        paused = mq.chain(t.add.s(1, 2), t.add.s(3)).delay()
        assert paused.status == "deferred"
        assert mq.resume("default") and mq.run_once() and mq.run_once() and paused.result == 6


@pytest.mark.parametrize("backend", backend_params(WORKFLOW_BACKENDS))
def test_eager_mode_writes_the_links_and_groups_as_a_store_does(
    backend: str, make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    """Users test workflows in eager mode: ``mq.get_group()`` and ``Job.dependents`` answer
    there as with a worker, on every store (the workflow is put in the store, then its jobs
    are taken and run inline as the store releases them), and a failure's cancellation
    reaches the handles ``.delay()`` returned."""
    t = Tasks(mq)
    ran: list[str] = []
    app = make_app(MEMQUEUE_EAGER=True, **store_config(backend, tmp_path))
    from flask_memqueue import job_enqueued

    job_enqueued.connect(lambda sender, job, **kw: ran.append(job.id), app, weak=False)
    with app.app_context():
        last = mq.chain(t.add.s(1, 2), t.add.s(y=10), t.add.s(100)).delay()
        assert last.status is JobStatus.SUCCEEDED and last.result == 113  # ran before delay() returned
        (middle_id,) = last.to_dict()["depends_on"]
        middle = mq.get_job(middle_id)
        assert middle is not None and middle.result == 13 and middle.dependents() == [last.id]
        (first_id,) = middle.to_dict()["depends_on"]
        assert ran == [first_id, middle_id, last.id]  # in order, each once

        group = mq.group(*(t.add.s(i, 1) for i in range(3))).delay()
        assert group.status == "succeeded" and group.results(0) == [1, 2, 3]
        again = mq.get_group(group.id)
        assert again is not None and [j.id for j in again.jobs] == [j.id for j in group.jobs]
        assert [j.result for j in again.jobs] == [1, 2, 3] and again.status == "succeeded"

        callback = mq.chord(mq.group(t.add.s(1), t.flaky.s(2)), t.total.s()).delay()
        assert callback.result == 21  # the retry ran at once, without its delay
        members = callback.to_dict()["depends_on"]
        assert all(mq.get_job(m).dependents() == [callback.id] for m in members)  # type: ignore[union-attr]
        chord_group = mq.get_job(members[0]).to_dict()["group"]  # type: ignore[union-attr]
        assert chord_group is not None and mq.get_group(chord_group) is not None

        cancelled = mq.chain(t.boom.s(1), t.add.s(), t.add.s(5)).delay()
        assert cancelled.status is JobStatus.CANCELLED and cancelled.error is not None
        read = mq.get_job(cancelled.id)
        assert read is not None and read.status is JobStatus.CANCELLED
        (before_id,) = cancelled.to_dict()["depends_on"]
        before = mq.get_job(before_id)
        assert before is not None and before.status is JobStatus.CANCELLED
        assert "(wf.boom) failed: ValueError: boom 1" in (before.error or "")
        assert before.id not in ran and cancelled.id not in ran  # cancelled ones never ran

        after = t.add.options(depends_on=[last]).delay(1)  # a parent that ran already counts at once
        assert after.result == 1 and mq.get_job(last.id).dependents() == [after.id]  # type: ignore[union-attr]
        plain = t.add.delay(2, 2)  # ran inline at enqueue, never queued: it counts too
        assert t.add.options(depends_on=[plain]).delay(1).result == 1

        @mq.task(name="wf.nested")
        def nested(n: int) -> int:  # a workflow queued from a job that eager mode runs
            inner = mq.chain(t.add.s(n, 1), t.add.s(100)).delay()
            assert inner.status is JobStatus.SUCCEEDED
            return int(inner.result)

        outer = mq.group(nested.s(1), nested.s(2), nested.s(3)).delay()
        assert outer.results(0) == [102, 103, 104]  # each job ran once (the order across the two may mix)
        with pytest.raises(DependencyError, match="has not run; in eager mode"):
            t.add.options(depends_on=["nope-1"]).delay(1)
        assert mq.join(0) and app.extensions["memqueue"].storage.depth() == 0  # nothing left waiting


@pytest.mark.parametrize("backend", backend_params(WORKFLOW_BACKENDS))
def test_a_chords_results_outlive_its_members_records_and_its_rows_go_with_the_last_record(
    backend: str, make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    """Purging (or pruning) finished members while the callback waits loses none of the results
    it is given; once every record of the chord is gone, so are its links, counters and group
    rows (SQLite and PostgreSQL: a trigger on delete, by key)."""
    t = Tasks(mq)
    name = f"outlive{uuid.uuid4().hex[:8]}"  # an app of its own: a shared server keeps other tests' jobs
    app = make_app(name, MEMQUEUE_CONSUMER=False, **store_config(backend, tmp_path))
    queue = app.extensions["memqueue"]
    storage = queue.storage
    with app.app_context():
        callback = mq.chord(mq.group(t.add.s(1), t.add.s(2), t.add.s(3)), t.total.s()).delay()
        for _ in range(2):
            job = storage.take(0)
            assert job is not None
            queue.consumer.execute(job)
            storage.finish(job)
        assert storage.purge_finished() == 2 and storage.counts()["deferred"] == 1
        last = storage.take(0)
        assert last is not None
        queue.consumer.execute(last)
        released = storage.take(0, last)
        assert released is not None and released.id == callback.id and released.args == ([1, 2, 3],)
        queue.consumer.execute(released)
        storage.finish(released)
        assert callback.wait(TIMEOUT) == 6
        assert storage.purge_finished() == 2
    if backend == "sqlite":
        import sqlite3

        with sqlite3.connect(tmp_path / "store" / "journal.db") as conn:
            left = [conn.execute(f"SELECT count(*) FROM memqueue_{t}").fetchone()[0] for t in ("links", "waits",
                                                                                                "groups")]
        assert left == [0, 0, 0]


@pytest.mark.parametrize("backend", backend_params(["sqlite", "dict", "postgres"]))
def test_eager_workflow_records_show_depends_on_and_group_in_every_process(
    backend: str, make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path
) -> None:
    """Eager mode stores a workflow's jobs as they finish: read back in another process (a
    second app on the store), ``to_dict()`` shows ``depends_on`` and ``group`` as a worker's
    records do (the options are stored with the record)."""
    t = Tasks(mq)
    config = {"MEMQUEUE_EAGER": True, **store_config(backend, tmp_path)}
    app, other = make_app("eagerwf", **config), make_app("eagerwf", **config)
    with app.app_context():
        last = mq.chain(t.add.s(1, 2), t.add.s(3)).delay()
        callback = mq.chord(mq.group(t.add.s(1), t.add.s(2)), t.total.s()).delay()
    first_id = last.to_dict()["depends_on"][0]
    member_ids = callback.to_dict()["depends_on"]
    with other.app_context():
        read = {job_id: mq.get_job(job_id) for job_id in (last.id, first_id, callback.id, *member_ids)}
    shown = {job_id: job.to_dict() for job_id, job in read.items() if job is not None}
    assert len(shown) == 5 and all(d["status"] == "succeeded" for d in shown.values())
    assert shown[last.id]["depends_on"] == [first_id] and shown[last.id]["result"] == 6
    assert shown[callback.id]["depends_on"] == member_ids and shown[callback.id]["result"] == 3
    groups = {shown[m]["group"] for m in member_ids}
    assert len(groups) == 1 and None not in groups and shown[callback.id]["group"] is None


def test_a_store_without_workflows_refuses_them_clearly(make_app: Callable[..., Flask], mq: MemQueue,
                                                        tmp_path: Path) -> None:
    from dictstore import PLAIN_SCHEME, open_plain

    from flask_memqueue.storage import register_backend

    register_backend(PLAIN_SCHEME, open_plain)  # the dict store without capabilities.workflows
    t = Tasks(mq)
    app = make_app(MEMQUEUE_STORAGE=f"{PLAIN_SCHEME}:///{tmp_path}")
    with app.app_context(), pytest.raises(WorkflowsUnsupported, match="capabilities.workflows"):
        mq.chain(t.add.s(1), t.add.s()).delay()


def test_an_aborted_link_cancels_what_waits_on_it(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    """An aborted parent is a final outcome like a failure: its dependents are cancelled
    with the failure wording (and its abort reason), never left deferred."""
    app, t = wf_app
    started = threading.Event()

    @mq.task(name="wf.polite")
    def polite() -> str:
        from flask_memqueue import current_job

        started.set()
        deadline = time.monotonic() + TIMEOUT
        while not current_job.abort_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        return "stopped"

    with app.app_context():
        last = mq.chain(polite.s(), t.add.s(1), t.add.s()).delay()
        assert started.wait(TIMEOUT)
        first_id = mq.get_job(last.to_dict()["depends_on"][0]).to_dict()["depends_on"][0]  # type: ignore[union-attr]
        assert mq.abort(first_id, by="the test") is True
        with pytest.raises(JobFailed):
            last.wait(TIMEOUT)
        assert mq.join(TIMEOUT)
        first = mq.get_job(first_id)
        assert first is not None and first.status == "aborted"
        for job_id in (last.to_dict()["depends_on"][0], last.id):
            job = mq.get_job(job_id)
            assert job is not None and job.status == "cancelled"
            assert job.error is not None and job.error.startswith(
                f"dependency {first_id} (wf.polite) failed: aborted by the test at ")


def test_async_tasks_compose_like_plain_ones(wf_app: tuple[Flask, Tasks], mq: MemQueue) -> None:
    """An ``async def`` task is a link, a member and a chord callback as any task is: its
    coroutine's result is what the next link is given."""
    import asyncio

    app, t = wf_app

    @mq.task(name="wf.adouble")
    async def adouble(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    with app.app_context():
        assert mq.chain(t.add.s(1, 2), adouble.s(), t.add.s(100)).delay().wait(TIMEOUT) == 106
        callback = mq.chord(mq.group(*(adouble.s(i) for i in range(5))), t.total.s()).delay()
        assert callback.wait(TIMEOUT) == 2 * sum(range(5))


def test_linked_options_are_what_the_generic_replace_makes() -> None:
    """JobOptions.linked (the workflow enqueue's fast copy) makes what for_job().replace(...) does."""
    from flask_memqueue.options import job_options

    for base in (job_options(), job_options("q", 3), job_options("q", 0).replace(time_limit=5.0, eta=12.0,
                                                                                  depends_on=("a-1",))):
        for after, group, bind in ((("p-1",), None, "first"), (None, "g-1", None), (("p-1", "p-2"), "g", "list"),
                                   (None, None, None)):
            assert base.linked(after, group, bind) == base.for_job().replace(after=after, group=group, bind=bind)


def test_a_workflow_page_shows_at_most_500_jobs_and_says_so(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    t = Tasks(mq)
    app = make_app(MEMQUEUE_CONSUMER=False)  # a testing app: nothing runs, the chord waits
    with app.app_context():
        callback = mq.chord(mq.group(*(t.add.s(i) for i in range(600))), t.total.s()).delay()
        member = mq.get_job(callback.to_dict()["depends_on"][0])
        assert member is not None
        gid = member.to_dict()["group"]
        client = app.test_client()
        for url in (f"/memqueue/ui/groups/{gid}", f"/memqueue/ui/jobs/{callback.id}/workflow"):
            page = client.get(url).get_data(as_text=True)
            assert page.count("<tr role=\"row\" data-id=") == 500 and "Only the first 500 jobs" in page
        mq.get_group(gid).cancel()  # type: ignore[union-attr]
