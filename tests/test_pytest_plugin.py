"""The pytest plugin (flask_memqueue/pytest_plugin.py), run as a user runs it: in pytester.

Each test writes a small project (an app factory, a conftest with an ``app``
fixture, a test file) and runs pytest on it in a subprocess, where the
plugin arrives through its ``pytest11`` entry point as it would for a user.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from flask_memqueue import MemQueue, MemQueueConfigWarning

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.processes

#: A user's app: tasks on a module-level MemQueue, an app factory, one view that enqueues.
APP = """
from flask import Flask, request
from flask_memqueue import MemQueue

mq = MemQueue()
sent = []

@mq.task
def send_mail(to, subject="hi"):
    sent.append((to, subject))
    return f"sent to {to}"

@mq.task(name="app.broken")
def broken():
    raise ValueError("the mail server said no")

@mq.handler("orders")
def on_order(message):
    sent.append(("order", message))

def create_app(config=None):
    app = Flask("userapp")
    app.config.update(TESTING=True)
    app.config.update(config or {})
    mq.init_app(app)

    @app.post("/signup")
    def signup():
        send_mail.delay(request.form["email"], subject="welcome")
        return "", 204

    @app.post("/broken")
    def break_it():
        broken.delay()
        return "", 204

    return app
"""

#: The plain app-factory fixture of a user without pytest-flask.
CONFTEST = """
import pytest
from userapp import create_app, mq, sent

@pytest.fixture
def app():
    sent.clear()
    app = create_app()
    yield app
    app.extensions["memqueue"].shutdown(timeout=5)
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(userapp=APP)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    return pytester


def run(pytester: pytest.Pytester, *args: str, pytest_flask: bool = False) -> pytest.RunResult:
    """Run the inner suite; without pytest-flask unless asked (it registers as "flask")."""
    plugins = [] if pytest_flask else ["-p", "no:flask"]
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *plugins, *args)


def test_captured_records_every_enqueue_form_without_running(project: pytest.Pytester) -> None:
    project.makeconftest(CONFTEST)
    project.makepyfile(
        """
        import datetime as dt
        import pytest
        from flask_memqueue import UnknownQueueError
        from userapp import mq, on_order, send_mail, sent

        def test_capture(app, memqueue_captured):
            with app.test_client() as client:
                assert client.post("/signup", data={"email": "a@example.com"}).status_code == 204
                r = client.post("/memqueue/produce", json={"message": {"n": 1}, "topic": "orders"})
                assert r.status_code == 202
            with app.app_context():
                job = send_mail.delay("b@example.com")
                mq.enqueue_in(60, send_mail, "c@example.com", subject="later")
                mq.enqueue_at(dt.datetime.now(dt.timezone.utc), "userapp.send_mail", "d@example.com")
            assert sent == []  # nothing ran
            assert job.status == "queued" and job.id
            assert memqueue_captured.names == [
                "userapp.send_mail", "message:orders", "userapp.send_mail", "userapp.send_mail", "userapp.send_mail"
            ]
            first = memqueue_captured[0]
            assert (first.args, first.kwargs) == (("a@example.com",), {"subject": "welcome"})
            assert (first.queue, first.eta) == ("default", None)
            assert memqueue_captured[1].args == ({"n": 1},)
            later = memqueue_captured.of(send_mail)[2]
            assert later.kwargs == {"subject": "later"} and later.eta is not None and later.job.status == "scheduled"
            assert len(memqueue_captured.of("userapp.send_mail")) == 4
            assert len(memqueue_captured.of(on_order)) == 1
            with app.app_context():
                send_mail.options(priority=9).delay("f@example.com")
            assert (memqueue_captured[-1].queue, memqueue_captured[-1].priority) == ("default", 9)
            with app.app_context(), pytest.raises(UnknownQueueError, match="nowhere"):
                send_mail.options(queue="nowhere").delay("g@example.com")
            assert first.run() == "sent to a@example.com" and sent == [("a@example.com", "welcome")]
            assert app.extensions["memqueue"].storage.depth() == 0

        def test_after_the_capture_jobs_run_again(app):
            with app.app_context():
                from userapp import send_mail
                assert send_mail.delay("e@example.com").wait(timeout=10) == "sent to e@example.com"
        """
    )
    run(project).assert_outcomes(passed=2)


def test_eager_runs_jobs_inline_and_lists_them(project: pytest.Pytester) -> None:
    project.makeconftest(CONFTEST)
    project.makepyfile(
        """
        import threading
        from userapp import send_mail, sent

        def test_eager(app, memqueue_eager):
            with app.test_client() as client:
                client.post("/signup", data={"email": "a@example.com"})
                client.post("/broken")
            assert sent == [("a@example.com", "welcome")]  # done when the response came back
            ok, failed = memqueue_eager
            assert ok.status == "succeeded" and ok.result == "sent to a@example.com"
            assert failed.status == "failed" and "the mail server said no" in failed.error
            assert not [t for t in threading.enumerate() if t.name.startswith("memqueue-consumer")]

        def test_not_eager_afterwards(app):
            assert app.extensions["memqueue"].config.eager is False
        """
    )
    run(project).assert_outcomes(passed=2)


def test_drain_runs_the_jobs_and_fails_the_test_with_the_jobs_traceback(project: pytest.Pytester) -> None:
    project.makeconftest(CONFTEST)
    project.makepyfile(
        """
        from userapp import sent

        def test_drained(app, memqueue_drain):
            with app.test_client() as client:
                client.post("/signup", data={"email": "a@example.com"})
            memqueue_drain(timeout=10)
            assert sent == [("a@example.com", "welcome")]

        def test_a_failing_job_fails_the_test(app, memqueue_drain):
            with app.test_client() as client:
                client.post("/broken")
            memqueue_drain(timeout=10)
        """
    )
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*1 job(s) failed while draining the queue:*",
        "*job *-1 (app.broken), 1 attempt(s): ValueError: the mail server said no",
        "Traceback (most recent call last):",
        '*raise ValueError("the mail server said no")*',
    ])


def test_drain_steps_a_queue_without_consumer_and_reports_a_timeout(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        import pytest
        from userapp import create_app, sent

        @pytest.fixture
        def app():
            sent.clear()
            app = create_app({"MEMQUEUE_CONSUMER": False})  # a testing app steps its own queue
            yield app
            app.extensions["memqueue"].shutdown(wait=False)
        """
    )
    project.makepyfile(
        """
        import threading
        from userapp import mq, sent

        def test_stepped(app, memqueue_drain):
            with app.test_client() as client:
                client.post("/signup", data={"email": "a@example.com"})
                client.post("/signup", data={"email": "b@example.com"})
            memqueue_drain()
            assert [to for to, _ in sent] == ["a@example.com", "b@example.com"]
            assert threading.current_thread() is threading.main_thread()

        def test_a_job_scheduled_for_later_is_not_drained(app, memqueue_drain):
            with app.app_context():
                mq.enqueue_in(3600, print, "in an hour")
            memqueue_drain(timeout=0)
        """
    )
    result = run(project)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the queue of app 'userapp' did not drain within 0 s: 1 job(s) still waiting*"])


def test_fixtures_use_pytest_flasks_app_and_client(project: pytest.Pytester) -> None:
    pytest.importorskip("pytest_flask")
    project.makeconftest(CONFTEST)  # pytest-flask's client fixture takes this `app`
    project.makepyfile(
        """
        from userapp import sent

        def test_with_client(client, memqueue_captured):
            client.post("/signup", data={"email": "a@example.com"})
            assert memqueue_captured.names == ["userapp.send_mail"] and sent == []

        def test_with_client_eager(client, memqueue_eager):
            client.post("/signup", data={"email": "a@example.com"})
            assert sent == [("a@example.com", "welcome")]

        def test_with_client_drain(client, memqueue_drain):
            client.post("/signup", data={"email": "a@example.com"})
            memqueue_drain()
            assert sent == [("a@example.com", "welcome")]
        """
    )
    result = run(project, pytest_flask=True)  # it arrives by its entry point, as ours does
    result.assert_outcomes(passed=3)


def test_without_an_app_fixture_the_error_says_what_to_write(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_no_app(memqueue_captured):
            pass
        """
    )
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*memqueue_captured fixture needs an 'app' fixture*", "*def app():*"])


def test_the_plugin_imports_nothing_heavy() -> None:
    code = textwrap.dedent(
        """
        import sys
        import flask_memqueue.pytest_plugin
        heavy = sorted(m for m in ("flask", "werkzeug", "blinker", "flask_memqueue.extension") if m in sys.modules)
        assert heavy == [], heavy
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_key_changed_after_init_app_warns_at_the_first_enqueue(mq: MemQueue, make_app: object) -> None:
    app = make_app()  # type: ignore[operator]
    app.config["MEMQUEUE_EAGER"] = True  # too late: init_app has read it
    with app.app_context():
        with pytest.warns(MemQueueConfigWarning, match=r"MEMQUEUE_EAGER was changed on app.config after init_app "
                          r"\(False -> True\).*set them before mq.init_app\(app\)") as record:
            job = mq.enqueue(lambda: "ran")
        assert len(record) == 1
        assert record[0].filename == __file__  # points at the enqueue, not into flask_memqueue
        assert job.wait(timeout=10) == "ran"  # in the consumer thread: the change did nothing
        mq.enqueue(lambda: None).wait(timeout=10)  # warned once per app, not per enqueue


def test_an_unchanged_config_does_not_warn(mq: MemQueue, make_app: object) -> None:
    app = make_app(MEMQUEUE_MAXSIZE=5)  # type: ignore[operator]
    app.config["UNRELATED"] = 1
    with app.app_context():
        assert mq.enqueue(lambda: 1).wait(timeout=10) == 1  # filterwarnings=error: a warning would fail
