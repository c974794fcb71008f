"""The rough edges a new user hit (issue 15): each behaviour that changed, kept changed."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_memqueue import JournalError, MainModuleTaskWarning, MemQueue, QueueFull

TIMEOUT = 10.0


def test_threads_jobs_done_counts_jobs_and_attempts_counts_runs(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app()
    calls: list[int] = []

    @mq.task(retries=2, retry_delay=0)
    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("not yet")

    with app.app_context():
        for _ in range(3):
            mq.enqueue(len, "abc")
        flaky.delay()
        assert mq.join(TIMEOUT)
    consumer = app.test_client().get("/memqueue/threads").get_json()["consumer"]
    assert consumer["jobs_done"] == 4  # 4 jobs finished, not the 6 attempts they took
    assert consumer["attempts"] == 6


def test_eager_mode_logs_that_a_retry_runs_now(
    make_app: Callable[..., Flask], mq: MemQueue, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(MEMQUEUE_EAGER=True)

    @mq.task(retries=2, retry_delay=5)
    def fails() -> None:
        raise ValueError("no")

    with caplog.at_level(logging.WARNING, "flask_memqueue"), app.app_context():
        job = fails.delay()
    assert job.status == "failed" and job.attempts == 3
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert all("retrying now (eager mode)" in m for m in retries), retries
    assert not any("retrying in" in m for m in retries)


def test_the_non_eager_retry_log_still_says_when(
    make_app: Callable[..., Flask], mq: MemQueue, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(MEMQUEUE_CONSUMER=False)

    @mq.task(retries=1, retry_delay=5)
    def fails() -> None:
        raise ValueError("no")

    with caplog.at_level(logging.WARNING, "flask_memqueue"), app.app_context():
        fails.delay()
        assert mq.run_once()
    assert any("retrying in 5 s" in r.getMessage() for r in caplog.records)


def test_a_journal_that_is_a_folder_says_so(tmp_path: Path) -> None:
    app = Flask("folder")
    app.config.update(TESTING=True, MEMQUEUE_JOURNAL=str(tmp_path))
    with pytest.raises(JournalError, match=r"MEMQUEUE_JOURNAL '.*' is a folder .*it must name the journal file,"
                       r" e.g. '.*memqueue\.db'"):
        MemQueue(app)


def test_a_relative_journal_folder_in_the_instance_folder_says_so(tmp_path: Path) -> None:
    app = Flask("folder", instance_path=str(tmp_path / "instance"))
    (tmp_path / "instance" / "jobs").mkdir(parents=True)
    app.config.update(TESTING=True, MEMQUEUE_JOURNAL="jobs")
    with pytest.raises(JournalError,
                       match=r"MEMQUEUE_JOURNAL '.*/instance/jobs' is a folder .*e\.g\. '.*/jobs/memqueue\.db'"):
        MemQueue(app)


@pytest.mark.parametrize(
    ("kwargs", "sent"),
    [
        ({"data": {"message": "hi"}}, "a form (application/x-www-form-urlencoded)"),
        ({"data": "message=hi", "content_type": "text/plain"}, "text/plain"),
    ],
)
def test_produce_tells_a_form_post_to_send_json(
    make_app: Callable[..., Flask], mq: MemQueue, kwargs: dict[str, Any], sent: str
) -> None:
    app = make_app()
    mq.handler(lambda message: None)
    response = app.test_client().post("/memqueue/produce", **kwargs)
    assert response.status_code == 400
    body = response.get_json()
    assert body["status"] == 400
    assert body["error"].startswith("the body is not valid JSON: ")
    assert f"This request sent {sent}: send the message as JSON with 'Content-Type: application/json'" in body["error"]


def test_produce_still_takes_json_sent_as_a_form_content_type(make_app: Callable[..., Flask], mq: MemQueue) -> None:
    app = make_app(MEMQUEUE_CONSUMER=False)  # what `curl -d '{"message": "hi"}'` sends
    mq.handler(lambda message: None)
    response = app.test_client().post("/memqueue/produce", data='{"message": "hi"}',
                                      content_type="application/x-www-form-urlencoded")
    assert response.status_code == 202


@pytest.mark.parametrize("journal", [False, True], ids=["memory", "journal"])
@pytest.mark.parametrize(
    ("topic", "expected"),
    [(None, "the message for the default handler was not queued"),
     ("orders", "the message for topic 'orders' was not queued")],
)
def test_queue_full_names_the_message(
    make_app: Callable[..., Flask], mq: MemQueue, tmp_path: Path, journal: bool, topic: str | None, expected: str
) -> None:
    config: dict[str, Any] = {"MEMQUEUE_CONSUMER": False, "MEMQUEUE_MAXSIZE": 1}
    if journal:
        config["MEMQUEUE_JOURNAL"] = str(tmp_path / "journal.db")
    app = make_app(**config)
    mq.handler(topic)(lambda message: None)
    with app.app_context():
        mq.produce("first", topic)
        with pytest.raises(QueueFull) as info:
            mq.produce("second", topic)
    assert str(info.value) == f"the queue holds 1 waiting jobs (MEMQUEUE_MAXSIZE); {expected}"
    with app.app_context():
        @mq.task(name="named")
        def named() -> None: ...

        with pytest.raises(QueueFull, match="the job of task 'named' was not queued"):
            named.delay()


SCRIPT = """
import sys
from flask import Flask
from flask_memqueue import MemQueue

mq = MemQueue()

@mq.task
def resize(path):
    return path

@mq.task(name="thumbnails.make")
def named(path):
    return path

app = Flask(__name__)
app.config.update(TESTING=True, MEMQUEUE_CONSUMER=False, MEMQUEUE_JOURNAL=sys.argv[1])
mq.init_app(app)

@mq.task
def late(path):
    return path
"""


def test_tasks_of_a_script_run_as_main_warn_when_a_journal_needs_their_names(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result = subprocess.run([sys.executable, "-W", "default", str(script), str(tmp_path / "j.db")],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if MainModuleTaskWarning.__name__ in line]
    assert len(warned) == 2, result.stderr  # at init_app (resize), and when late is registered after it
    assert "task(s) __main__.resize were defined in a script run as __main__" in warned[0]
    assert "__main__.late" in warned[1]
    assert "thumbnails.make" not in result.stderr  # a named task is found by its name


def test_tasks_of_a_script_without_journal_do_not_warn(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT).replace("MEMQUEUE_JOURNAL=sys.argv[1]", "MEMQUEUE_MAXSIZE=5"))
    result = subprocess.run([sys.executable, "-W", "error", str(script), "unused"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
