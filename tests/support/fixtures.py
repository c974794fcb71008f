"""The suite's fixtures and hooks: a pytest plugin, loaded by ``tests/conftest.py``.

- ``mq``: a fresh :class:`MemQueue` per test (tasks are registered on it, so
  tests never see each other's tasks).
- ``make_app``: an app factory (:func:`support.factory.build_app`); every app
  it builds is shut down after the test.
- ``app``: one app built by ``make_app`` with ``testing=True``; pytest-flask's
  ``client`` fixture uses it. ``@pytest.mark.app_config(MEMQUEUE_MAXSIZE=2)``
  passes config to it (it must be known at ``init_app``).
- ``queue``: the app's per-app state; ``gate``: a :class:`~support.waiting.Gate`.
- ``make_env``: :class:`support.harness.Env` for the process tests; whatever
  they started is killed after the test.
- The servers (:mod:`support.servers`), each started once per session and
  stopped at its end: ``redis_server`` (flushed for each test), ``rabbitmq``
  and ``postgres`` (tests keep apart by a schema each: ``postgres_url``).
- ``leak_detector`` (autouse): fails a test that leaves an app or request
  context pushed or a ``memqueue-consumer[...]`` / ``memqueue-scheduler[...]``
  thread running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from flask import Flask, has_app_context, has_request_context
from flask.globals import app_ctx, request_ctx

from flask_memqueue import MemQueue
from flask_memqueue.state import _QUEUES, AppQueue
from support import markers
from support.factory import build_app
from support.harness import Env
from support.servers import stop_shared
from support.servers.postgres import PostgresServer, fresh_schema, shared_postgres
from support.servers.rabbitmq import Broker, shared_rabbitmq
from support.servers.redis import RedisServer, shared_redis
from support.threads import consumer_threads, scheduler_threads
from support.waiting import TIMEOUT, Gate


# -- hooks ------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Tell :mod:`support.markers` which test runs (setup, call and teardown)."""
    markers.set_current(item)
    try:
        return (yield)
    finally:
        markers.set_current(None)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a fixture of :data:`support.markers.FIXTURE_MARKERS` (directly or not)."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in markers.FIXTURE_MARKERS.items():
            if fixture in used:
                item.add_marker(marker)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the servers the session started (:func:`support.servers.shared`)."""
    stop_shared()


# -- the leak detector ------------------------------------------------------------------
def _pop_leaked_contexts() -> list[Any]:
    """Pop every context left pushed; the public proxies name them (no private Flask names)."""
    leaks: list[Any] = []
    while has_request_context():
        leaks.append(cast(Any, request_ctx)._get_current_object())
        leaks[-1].pop()
    while has_app_context():
        leaks.append(cast(Any, app_ctx)._get_current_object())
        leaks[-1].pop()
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


# -- apps in this process -----------------------------------------------------------------
@pytest.fixture
def gate() -> Iterator[Gate]:
    g = Gate()
    yield g
    g.release()


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


# -- real processes ---------------------------------------------------------------------
@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """``make_env("journal_app", JT_JOURNAL=...)`` -> :class:`support.harness.Env` (same arguments,
    after ``tmp_path``); whatever its processes left running is killed after the test."""
    envs: list[Env] = []

    def make(app: str, **kwargs: Any) -> Env:
        envs.append(Env(tmp_path, app, **kwargs))
        return envs[-1]

    yield make
    for env in envs:
        env.cleanup()


# -- real servers (support/servers/): once per session, stopped by pytest_sessionfinish --------
@pytest.fixture
def redis_server() -> RedisServer:
    """The session's redis-server, flushed; skips without redis-server (fails under CI)."""
    server = shared_redis()
    server.flush()
    return server


@pytest.fixture
def rabbitmq() -> Broker:
    """The session's RabbitMQ broker; skips without rabbitmq-server (fails under CI).

    Function-scoped (the broker is still one per session) so that every test
    using it is checked for the ``servers`` marker."""
    return shared_rabbitmq()


@pytest.fixture
def postgres() -> PostgresServer:
    """The session's PostgreSQL server; skips without PostgreSQL (fails under CI)."""
    return shared_postgres()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A ``postgresql://`` URL on the session's server in a schema no other test uses."""
    return str(postgres.url(schema=fresh_schema()))
