"""Fixtures of the core test suite.

- ``mq``: a fresh :class:`MemQueue` per test (tasks are registered on it, so
  tests never see each other's tasks).
- ``make_app``: an app factory; every app it builds is shut down after the test.
- ``app``: one app built by ``make_app`` with ``testing=True``; pytest-flask's
  ``client`` fixture uses it. ``@pytest.mark.app_config(MEMQUEUE_MAXSIZE=2)``
  passes config to it (it must be known at ``init_app``).
- ``rabbitmq``: a real RabbitMQ broker for the session (``tests/amqp_broker.py``).
- ``leak_detector`` (autouse): fails a test that leaves an app or request
  context pushed or a ``memqueue-consumer[...]`` thread running.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, jsonify
from flask.globals import _cv_app, _cv_request

from flask_memqueue import Job, MemQueue
from flask_memqueue.state import _QUEUES, AppQueue

#: Every name a consumer thread has starts with this.
CONSUMER_PREFIX = "memqueue-consumer["
#: Every name a scheduler thread (periodic tasks) has starts with this.
SCHEDULER_PREFIX = "memqueue-scheduler["

#: Seconds any single wait in a test may take before the test fails.
TIMEOUT = 10.0

@pytest.fixture(scope="session", autouse=True)
def _stop_redis_server() -> Iterator[None]:
    """Stops the session's redis-server, if a test started it."""
    yield
    module = sys.modules.get("redis_server")  # imported only by the tests that use Redis
    if module is not None:
        module.stop_shared_server()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "app_config(**config): config for the `app` fixture, set before init_app"
    )


def consumer_threads() -> list[threading.Thread]:
    """Every live consumer thread of this process."""
    return [t for t in threading.enumerate() if t.name.startswith(CONSUMER_PREFIX) and t.is_alive()]


def scheduler_threads() -> list[threading.Thread]:
    """Every live scheduler thread (periodic tasks) of this process."""
    return [t for t in threading.enumerate() if t.name.startswith(SCHEDULER_PREFIX) and t.is_alive()]


def wait_until(condition: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.005) -> Any:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


class Gate:
    """A job that blocks the consumer until the test opens the gate.

    ``entered`` is set once the job runs; ``release()`` lets it finish. The
    job waits at most :data:`TIMEOUT` seconds, so a test that forgets to
    release never hangs.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self) -> str:
        self.entered.set()
        if not self.opened.wait(TIMEOUT):
            raise TimeoutError("the gate was never opened")
        return "gate"

    def wait_entered(self) -> None:
        assert self.entered.wait(TIMEOUT), "the gate job never started"

    def release(self) -> None:
        self.opened.set()


@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release()


def _pop_leaked_contexts() -> list[Any]:
    leaks: list[Any] = []
    while (request_ctx := _cv_request.get(None)) is not None:
        leaks.append(request_ctx)
        request_ctx.pop()
    while (app_ctx := _cv_app.get(None)) is not None:
        leaks.append(app_ctx)
        app_ctx.pop()
    return leaks


@pytest.fixture(autouse=True)
def leak_detector() -> Iterator[None]:
    """Fail a test that leaves a context pushed or a consumer thread alive.

    A consumer that is still finishing its last job gets a moment to end;
    one that would run forever is stopped, so the next test starts clean.
    """
    before = {t.ident for t in consumer_threads() + scheduler_threads()}
    yield
    leaked_contexts = _pop_leaked_contexts()
    threads = [t for t in consumer_threads() + scheduler_threads() if t.ident not in before]
    deadline = time.monotonic() + 2.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t for t in threads if t.is_alive()]
    if alive:
        idents = {t.ident for t in alive}
        for queue in list(_QUEUES):
            if queue.consumer_ident in idents or queue.scheduler.ident in idents:
                queue.shutdown(wait=False)
        for thread in alive:
            thread.join(TIMEOUT)
    assert leaked_contexts == [], f"the test left context(s) pushed: {leaked_contexts}"
    assert alive == [], f"the test left consumer or scheduler thread(s) running: {[t.name for t in alive]}"


def build_app(mq: MemQueue, name: str = "testapp", *, testing: bool = True, **config: Any) -> Flask:
    """What a user's app factory does: config, then ``mq.init_app``."""
    app = Flask(name)
    app.config["TESTING"] = testing
    app.config.update(config)
    mq.init_app(app)

    @app.get("/ping")
    def ping() -> Any:
        return jsonify(pong=True)

    return app


@pytest.fixture
def mq() -> MemQueue:
    return MemQueue()


@pytest.fixture
def make_app(leak_detector: None, mq: MemQueue) -> Iterator[Callable[..., Flask]]:
    """``make_app(name="x", testing=True, MEMQUEUE_...=...)``; shut down after the test.

    ``mq=`` binds another MemQueue than the ``mq`` fixture.
    """
    apps: list[Flask] = []

    def make(name: str = "testapp", *, mq: MemQueue = mq, testing: bool = True, **config: Any) -> Flask:
        app = build_app(mq, name, testing=testing, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        queue: AppQueue | None = app.extensions.get("memqueue")
        if queue is not None and not queue.closed:
            queue.shutdown(wait=True, timeout=TIMEOUT)


@pytest.fixture
def app(request: pytest.FixtureRequest, make_app: Callable[..., Flask]) -> Flask:
    config: dict[str, Any] = {}
    for marker in request.node.iter_markers("app_config"):
        config.update(marker.kwargs)
    return make_app(**config)


@pytest.fixture
def queue(app: Flask) -> AppQueue:
    """The app's per-app state (``app.extensions["memqueue"]``)."""
    return app.extensions["memqueue"]  # type: ignore[no-any-return]


# -- RabbitMQ ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[Any]:
    """A real RabbitMQ broker (tests/amqp_broker.py), started once per session; skips without it, fails in CI."""
    from amqp_broker import broker_fixture

    yield from broker_fixture()


def new_job(queue: AppQueue, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Job:
    """A job record as ``enqueue`` makes it, not yet handed to the store."""
    task = queue.registry.resolve(func)
    return Job(queue, next(queue._ids), task, args, kwargs or None, time.time())
