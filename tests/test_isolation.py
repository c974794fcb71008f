"""Isolated jobs (issue 22) in this process: each job of ``tests/apps/iso_app.py`` runs in a real
child process (``python -m flask_memqueue.runtime.child``) that rebuilt the app from its factory.

What a thread could not survive (SIGKILL, a segfault, memory past the limit, a C-level sleep past the
time limit, an abort of code that never looks) fails the job, naming why, and the consumer runs the next
job. No sleeps: every wait is a job's ``wait(timeout)``, a gate file, or a poll with a deadline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import (
    ConfigurationError,
    JobFailed,
    JobStatus,
    MemQueue,
)
from flask_memqueue.runtime.appref import AppRef, find_app_ref

pytestmark = [pytest.mark.processes]

DEADLINE = 60.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not reaped yet) is gone for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEMQUEUE_TEST_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def iso(data: Path, leak_detector: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The module ``apps.iso_app`` with an app made by its factory; shut down after the test.
    ``make(**env)`` sets its settings in the environment for the whole test: the child process
    inherits them, and its app is made with the same."""
    from apps import iso_app

    made: list[Flask] = []

    def make(**env: str) -> Flask:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        app = iso_app.create_app()
        made.append(app)
        return app

    iso_app.make = make
    yield iso_app
    for app in made:
        queue = app.extensions["memqueue"]
        if not queue.closed:
            queue.shutdown(wait=True, timeout=TIMEOUT)
        assert not [pid for pid in queue.children.pids() if alive(pid)], "shutdown left child processes"


def children(app: Flask) -> list[int]:
    return app.extensions["memqueue"].children.pids()  # type: ignore[no-any-return]


def test_the_factory_that_called_init_app_is_what_the_child_imports(iso: Any) -> None:
    app = iso.make()
    ref = app.extensions["memqueue"].children.app_ref
    assert ref == AppRef(module="apps.iso_app", attr="create_app", name="iso_app",
                         how="the factory that called init_app")


def test_a_result_and_an_error_come_back_with_the_apps_config_and_progress(iso: Any) -> None:
    app = iso.make()
    with app.app_context():
        job = iso.add.delay(2, 3)
        result = job.wait(timeout=DEADLINE)
        assert result["sum"] == 5 and result["pid"] != os.getpid()
        assert result["greeting"] == "hello from the config" and result["extension"] is True
        assert result["job"] == job.id and result["attempt"] == 1
        assert job.progress == 0.5 and job.progress_message == "half way"  # from the child to the parent
        assert result["pid"] in children(app)  # warm: kept for the next job

        failing = iso.boom.delay("no good")
        with pytest.raises(JobFailed):
            failing.wait(timeout=DEADLINE)
        assert failing.error == "ValueError: no good"
        assert "in the isolated job's child process" in failing.traceback
        assert 'raise ValueError(text)' in failing.traceback  # the child's own frames
        assert iso.add.delay(1, 1).wait(timeout=DEADLINE)["pid"] == result["pid"]  # the same warm child


@pytest.mark.parametrize(("task", "signame"), [("kill", "SIGKILL"), ("segfault", "SIGSEGV")])
def test_a_child_that_dies_fails_the_job_naming_the_signal_and_the_consumer_lives(
    iso: Any, task: str, signame: str
) -> None:
    app = iso.make(ISO_THREADS="1")
    with app.app_context():
        job = getattr(iso, task).delay()
        after = iso.add.delay(1, 2)
        with pytest.raises(JobFailed):
            job.wait(timeout=DEADLINE)
        assert job.error is not None and job.error.startswith("ChildProcessDied: the child process ")
        assert f"was killed by signal {signame}" in job.error, job.error
        assert after.wait(timeout=DEADLINE)["sum"] == 3  # the one consumer thread runs the next job


def test_memory_past_the_limit_fails_clearly_and_the_child_is_replaced(iso: Any) -> None:
    app = iso.make(ISO_THREADS="1")
    with app.app_context():
        small = iso.hog.delay(16)
        assert small.wait(timeout=DEADLINE) == 16 * 1024 * 1024
        first = children(app)
        job = iso.hog.delay(512)
        with pytest.raises(JobFailed):
            job.wait(timeout=DEADLINE)
        assert job.error == "MemoryError: (memory_limit of 256M reached)", job.error
        assert iso.hog.delay(16).wait(timeout=DEADLINE) == 16 * 1024 * 1024
        assert children(app) != first  # a child that ran out of memory is not reused


def test_the_time_limit_kills_a_child_in_a_c_level_sleep(iso: Any, data: Path) -> None:
    app = iso.make(ISO_THREADS="1")
    with app.app_context():
        job = iso.sleep.options(time_limit=0.5).delay(1)
        after = iso.add.delay(1, 2)
        with pytest.raises(JobFailed):
            job.wait(timeout=DEADLINE)
        assert job.error is not None and job.error.startswith("TimeLimitExceeded: time limit of 0.5 s exceeded")
        child = int((data / "runs.log").read_text().split()[2])
        assert not alive(child)
        assert after.wait(timeout=DEADLINE)["sum"] == 3


def test_abort_asks_then_kills_a_running_isolated_job(iso: Any, data: Path) -> None:
    app = iso.make()
    with app.app_context():
        polite = iso.polite.delay(1)
        stubborn = iso.wait.delay(2, "never")
        wait_until(lambda: len((data / "runs.log").read_text().split("\n")) > 2 if (data / "runs.log").exists()
                   else False, DEADLINE, "both jobs to start")
        assert polite.abort() and stubborn.abort()
        wait_until(lambda: polite.finished and stubborn.finished, DEADLINE, "both to end")
        assert polite.status == JobStatus.ABORTED and stubborn.status == JobStatus.ABORTED
        assert "saw 1" in (data / "runs.log").read_text()  # the child saw abort_requested
        lines = (data / "runs.log").read_text().splitlines()
        pids = {int(line.split()[2]) for line in lines if line.startswith("start 2")}
        wait_until(lambda: not any(alive(p) for p in pids), DEADLINE, "the stubborn job's child to be killed")


def test_n_threads_run_n_children_at_once(iso: Any, data: Path) -> None:
    app = iso.make(ISO_THREADS="2")
    with app.app_context():
        jobs = [iso.wait.delay(n, "both") for n in (1, 2)]

        def started() -> list[list[str]]:
            log = data / "runs.log"
            return [line.split() for line in log.read_text().splitlines()] if log.exists() else []

        wait_until(lambda: len(started()) == 2, DEADLINE, "two jobs running at once")
        (data / "both").touch()
        pids = {job.wait(timeout=DEADLINE) for job in jobs}
        assert len(pids) == 2 and os.getpid() not in pids
        assert {int(f[2]) for f in started()} == pids


def test_retries_apply_and_a_child_is_replaced_after_max_jobs(iso: Any) -> None:
    app = iso.make(ISO_THREADS="1", ISO_MAX_JOBS="2")
    with app.app_context():
        assert iso.flaky.delay().wait(timeout=DEADLINE) == 2  # failed in the child, retried, succeeded
        pids = [iso.pid.delay().wait(timeout=DEADLINE) for _ in range(4)]
        assert pids[0] == pids[1] != pids[2] == pids[3]  # each child ran 2 jobs
        assert iso.plain_pid.delay().wait(timeout=DEADLINE) == os.getpid()
        assert iso.plain_pid.options(isolated=True).delay().wait(timeout=DEADLINE) != os.getpid()
        assert iso.pid.options(isolated=False).delay().wait(timeout=DEADLINE) == os.getpid()


def test_what_json_cannot_carry_fails_the_job_clearly(iso: Any) -> None:
    app = iso.make()
    with app.app_context():
        with pytest.raises(TypeError, match="task 'iso_add' runs isolated: its arguments cross to the child"):
            iso.add.delay({1, 2}, 3)  # a set: refused at enqueue, nothing queued
        assert app.extensions["memqueue"].storage.depth() == 0
        job = iso.returns_object.delay()
        with pytest.raises(JobFailed):
            job.wait(timeout=DEADLINE)
        assert job.error is not None and "crosses to the parent as JSON" in job.error


def test_eager_mode_runs_isolated_jobs_inline(iso: Any) -> None:
    app = iso.make()
    queue = app.extensions["memqueue"]
    import dataclasses

    queue.config = dataclasses.replace(queue.config, eager=True)
    with app.app_context():
        assert iso.pid.delay().wait(timeout=DEADLINE) == os.getpid()
    assert children(app) == []


def test_shutdown_stops_the_children(iso: Any) -> None:
    app = iso.make()
    with app.app_context():
        pid = iso.pid.delay().wait(timeout=DEADLINE)
    assert alive(pid)
    app.extensions["memqueue"].shutdown(timeout=TIMEOUT)
    wait_until(lambda: not alive(pid), DEADLINE, "the idle child to end")


def test_bad_isolation_options_are_refused_naming_the_task_and_the_value(mq: MemQueue) -> None:
    def f() -> None: ...

    with pytest.raises(ConfigurationError, match=r"task 'f1': memory_limit must be a number of bytes.*'lots'"):
        mq.task(name="f1", isolated=True, memory_limit="lots")(f)
    with pytest.raises(ConfigurationError, match=r"task 'f2': memory_limit='1G' needs isolated=True"):
        mq.task(name="f2", memory_limit="1G")(f)
    with pytest.raises(ConfigurationError, match=r"task 'f3': isolated must be True or False, not 'yes'"):
        mq.task(name="f3", isolated="yes")(f)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"memory_limit must be a number of bytes of at least 32M"):
        mq.task(name="f4", isolated=True, memory_limit=1000)(f)
    task = mq.task(name="f5", isolated=True, memory_limit="1.5G")(f)
    assert task.memory_limit == 1536 * 1024 * 1024 and task.isolated
    assert mq.task(name="f6", isolated=True, memory_limit=2**30)(f).memory_limit == 2**30
    with pytest.raises(ValueError, match=r"options\(memory_limit=\.\.\.\) must be"):
        task.options(memory_limit="-1M")
    with pytest.raises(ValueError, match=r"options\(isolated=\.\.\.\) must be True .* not 1"):
        task.options(isolated=1)  # type: ignore[arg-type]


def test_a_memory_limit_on_a_call_in_a_thread_is_refused(mq: MemQueue, make_app: Any) -> None:
    app = make_app()
    task = mq.task(name="threaded")(lambda: None)
    with app.app_context(), pytest.raises(ValueError, match="'threaded' needs isolated=True"):
        task.options(memory_limit="1G").delay()


@pytest.mark.parametrize("value", ["not a path", "mod:attr:more", 42, "mod:"])
def test_a_bad_isolation_app_is_refused_at_init_app(value: Any) -> None:
    app = Flask("bad")
    app.config["MEMQUEUE_ISOLATION_APP"] = value
    with pytest.raises(ConfigurationError, match="MEMQUEUE_ISOLATION_APP must name where"):
        MemQueue(app)


def test_max_jobs_per_child_is_validated() -> None:
    app = Flask("bad")
    app.config["MEMQUEUE_MAX_JOBS_PER_CHILD"] = 0
    with pytest.raises(ConfigurationError, match="MEMQUEUE_MAX_JOBS_PER_CHILD must be a whole number from 1 to "):
        MemQueue(app)


def test_an_app_made_where_no_child_can_find_it_fails_its_isolated_jobs_saying_what_to_set(
    make_app: Any, mq: MemQueue
) -> None:
    app = make_app()  # made in a pytest fixture: nothing importable made it
    assert app.extensions["memqueue"].children.app_ref is None
    task = mq.task(name="lost", isolated=True)(os.getpid)
    with app.app_context():
        job = task.delay()
        with pytest.raises(JobFailed):
            job.wait(timeout=DEADLINE)
    assert job.error is not None and "set MEMQUEUE_ISOLATION_APP = 'package.module:create_app'" in job.error


def test_a_child_that_cannot_build_the_app_fails_the_job_saying_what_it_tried(make_app: Any, mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_ISOLATION_APP="no_such_module_here:create_app")
    task = mq.task(name="unbuildable", isolated=True)(os.getpid)
    with app.app_context():
        job = task.delay()
        with pytest.raises(JobFailed):
            job.wait(timeout=DEADLINE)
    assert job.error is not None and job.error.startswith(
        "IsolationError: the child process could not import no_such_module_here:create_app (MEMQUEUE_ISOLATION_APP):"
        " ModuleNotFoundError"), job.error


def test_the_child_never_runs_a_consumer_even_with_autostart(iso: Any, tmp_path: Path) -> None:
    """With a store other processes share, a consumer in the child would take jobs of its own."""
    app = iso.make(ISO_URL=f"sqlite:///{tmp_path / 'jobs.db'}", ISO_AUTOSTART="1")
    assert app.extensions["memqueue"].consumer_alive  # the parent's started at init_app
    with app.app_context():
        assert iso.consumers.delay().wait(timeout=DEADLINE) is False


def test_the_explicit_key_wins() -> None:
    app = Flask("named")
    assert find_app_ref(app, "pkg.mod:make") == AppRef(module="pkg.mod", attr="make", name="named",
                                                       how="MEMQUEUE_ISOLATION_APP")


def test_a_child_of_a_dead_parent_dies(iso: Any, data: Path) -> None:
    """The pipe's EOF: a child whose parent's end closed (as the kernel does when the parent is
    SIGKILLed) kills itself, even in the middle of a job."""
    app = iso.make(ISO_THREADS="1")
    with app.app_context():
        job = iso.wait.delay(1, "never")
        wait_until(lambda: (data / "runs.log").exists(), DEADLINE, "the job to start")
        child_pid = int((data / "runs.log").read_text().split()[2])
        queue = app.extensions["memqueue"]
        busy = next(iter(queue.children._busy))
        assert busy.pid == child_pid
        busy._out.close()  # what the kernel does to the descriptors of a SIGKILLed parent
        busy._ctl.close()
        with pytest.raises(JobFailed):
            job.wait(timeout=DEADLINE)
        assert job.error is not None and job.error.startswith("ChildProcessDied:")
        assert "was killed by signal SIGKILL" in job.error
    assert not alive(child_pid)


def test_the_child_finds_a_module_level_app_and_passes_over_a_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "modapp.py").write_text(
        "from flask import Flask\nfrom flask_memqueue import MemQueue\n"
        "app = Flask('modapp')\nmq = MemQueue(app)\n"
    )
    (tmp_path / "mainapp.py").write_text(
        "from flask import Flask\nfrom flask_memqueue import MemQueue\n"
        "def make(kind):\n    app = Flask(kind)\n    MemQueue(app)\n    return app\n"
        "def main():\n    return make('mainapp')\n"
        "built = main()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import mainapp  # type: ignore[import-not-found]
    import modapp  # type: ignore[import-not-found]

    assert modapp.app.extensions["memqueue"].children.app_ref == AppRef(
        module="modapp", attr="app", name="modapp", how="the module that called init_app")
    # main() runs a program: not a factory; the module's top level is where the app is found
    assert mainapp.built.extensions["memqueue"].children.app_ref == AppRef(
        module="mainapp", attr=None, name="mainapp", how="the module that called init_app")
    for module in (modapp, mainapp):
        app = getattr(module, "app", None) or module.built
        app.extensions["memqueue"].shutdown()
