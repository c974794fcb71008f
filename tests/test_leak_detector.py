"""The suite's own guard: the autouse leak detector (tests/support/fixtures.py) catches what it promises.

Each test runs pytest in a subprocess on a project whose conftest is the
suite's own (it loads ``support.fixtures``, found through ``PYTHONPATH``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.processes

TESTS = Path(__file__).resolve().parent
CONFTEST = (TESTS / "conftest.py").read_text()


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return pytester


def test_a_leaked_app_context_fails_the_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        def test_leaks_an_app_context(make_app):
            make_app().app_context().push()

        def test_leaks_a_request_context(make_app):
            make_app().test_request_context().push()

        def test_leaks_over_pytest_flasks_context(app):
            app.app_context().push()

        def test_clean(app, make_app):
            with make_app("other").app_context():
                pass
        """
    )
    result = inner.runpytest_subprocess()
    result.assert_outcomes(passed=4, errors=3)
    result.stdout.fnmatch_lines(["*left context(s) pushed*"])


def test_a_leaked_consumer_thread_fails_the_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from flask import Flask
        from flask_memqueue import MemQueue

        def test_leaks():
            app = Flask(__name__)
            app.config["TESTING"] = True
            mq = MemQueue(app)
            with app.app_context():
                mq.enqueue(print, "hi")
                assert mq.join(5)

        def test_after(app, mq):
            assert mq.enqueue(lambda: 1).wait(5) == 1
        """
    )
    result = inner.runpytest_subprocess()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*left consumer or scheduler thread(s) running*memqueue-consumer*"])


def test_a_leaked_scheduler_thread_fails_the_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        from datetime import timedelta
        from flask import Flask
        from flask_memqueue import MemQueue

        def test_leaks(tmp_path):
            mq = MemQueue()
            mq.periodic(every=timedelta(hours=1), name="hourly")(lambda: None)
            app = Flask(__name__, instance_path=str(tmp_path))
            app.config.update(TESTING=True, MEMQUEUE_CONSUMER=False)
            mq.init_app(app)
            app.test_client().get("/")
        """
    )
    result = inner.runpytest_subprocess()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*left consumer or scheduler thread(s) running*memqueue-scheduler*"])
