"""The PostgreSQL store with a real server (tests/py): options, the schema and its
CLI, errors and redaction, wake-ups by NOTIFY, and jobs in the app's own transaction
(``session=``, with Flask-SQLAlchemy and plain SQLAlchemy) or after it (``on_commit=``).

The storage contract (tests/test_storage_contract.py) runs on this store too; the
tests with real worker processes, kills and restarts are in test_postgres_processes.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from support.servers.postgres import PostgresServer, fresh_schema
from support.waiting import TIMEOUT, wait_until

from flask_memqueue import ConfigurationError, MemQueue, PostgresUnavailable, SchemaError, StorageError
from flask_memqueue.cli import memqueue_cli
from flask_memqueue.state import AppQueue
from flask_memqueue.storage.postgres.schema import MIGRATIONS, SCHEMA_VERSION

pytestmark = pytest.mark.servers


@pytest.fixture
def server(postgres: PostgresServer) -> PostgresServer:
    return postgres


@pytest.fixture
def schema() -> str:
    return fresh_schema()


@pytest.fixture
def url(server: Any, schema: str) -> str:
    return str(server.url(schema=schema))


@pytest.fixture
def tasks(mq: MemQueue) -> dict[str, Any]:
    @mq.task(name="pg.echo")
    def echo(value: Any) -> Any:
        return value

    return {"echo": echo}


@pytest.fixture
def make(make_app: Callable[..., Flask], url: str) -> Callable[..., AppQueue]:
    """``make(**config)``: an app on the test's schema (the same app name: one "process" each)."""

    def build(**config: Any) -> AppQueue:
        app = make_app("pgapp", **{"MEMQUEUE_STORAGE": url, "MEMQUEUE_CONSUMER": False, **config})
        return app.extensions["memqueue"]  # type: ignore[no-any-return]

    return build


# -- options ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("options", "words"), [
    ({"schema": "bad name"}, "'schema'"),
    ({"lease": "0.5"}, "'lease'"),
    ({"pool_size": "0"}, "'pool_size'"),
    ({"notify": "maybe"}, "'notify'"),
    ({"connect_timeout": "-1"}, "'connect_timeout'"),
    ({"nonsense": "1"}, "'nonsense'"),
])
def test_bad_options_are_refused_at_init_app_naming_the_key(make_app: Callable[..., Flask], options: dict[str, str],
                                                             words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as caught:
        make_app(MEMQUEUE_STORAGE="postgresql://u:pw@127.0.0.1:1/db", MEMQUEUE_STORAGE_OPTIONS=options)
    assert "MEMQUEUE_STORAGE" in str(caught.value) and "pw" not in str(caught.value).replace("pool", "")


def test_every_scheme_and_libpq_parameters_open_without_connecting(make_app: Callable[..., Flask]) -> None:
    for scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        app = make_app(MEMQUEUE_STORAGE=f"{scheme}://u:pw@127.0.0.1:1/db?sslmode=disable&application_name=x&lease=5",
                       MEMQUEUE_CONSUMER=False)
        storage = app.extensions["memqueue"].storage
        assert storage.capabilities.shared and storage.capabilities.transactional
        assert storage.url.startswith(f"{scheme}://u:***@127.0.0.1:1/db")


# -- errors -------------------------------------------------------------------------------------------
def test_a_server_that_is_down_is_named_and_503_over_http(make_app: Callable[..., Flask], mq: MemQueue,
                                                          tasks: dict[str, Any]) -> None:
    app = make_app(MEMQUEUE_STORAGE="postgresql://u:s3cr3t@127.0.0.1:1/db?connect_timeout=1", MEMQUEUE_CONSUMER=False)
    with app.app_context(), pytest.raises(PostgresUnavailable) as caught:
        mq.enqueue(tasks["echo"], 1)
    assert isinstance(caught.value, StorageError)
    text = str(caught.value)
    assert "unreachable" in text and "postgresql://u:***@127.0.0.1:1/db" in text and "s3cr3t" not in text
    response = app.test_client().get("/memqueue/stats")
    assert response.status_code == 503 and "s3cr3t" not in response.get_data(as_text=True)


def test_a_wrong_password_is_named_as_such_and_never_shown(server: Any, make_app: Callable[..., Flask], mq: MemQueue,
                                                           tasks: dict[str, Any],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(MEMQUEUE_STORAGE=server.url(password="wr0ng-pa55", connect_timeout="1"), MEMQUEUE_CONSUMER=False)
    with app.app_context(), pytest.raises(PostgresUnavailable, match="refused the credentials") as caught:
        mq.enqueue(tasks["echo"], 1)
    shown = [str(caught.value), app.test_client().get("/memqueue/health").get_data(as_text=True)]
    shown += [r.getMessage() for r in caplog.records]
    for text in shown:
        assert "wr0ng-pa55" not in text


@pytest.fixture
def rejected_role(postgres: PostgresServer) -> Iterator[str]:
    """A role that may log in, with a password, that the server's pg_hba.conf rejects (a
    ``reject`` line ahead of the others, for this role only; removed afterwards)."""
    role = "memqueue_hba_rejected"
    postgres.execute(f"DROP ROLE IF EXISTS {role}")
    postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-one'")
    hba = postgres.data / "pg_hba.conf"
    before = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 reject\n" + before)
    postgres.execute("SELECT pg_reload_conf()")
    try:
        yield role
    finally:
        hba.write_text(before)
        postgres.execute("SELECT pg_reload_conf()")
        postgres.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize("case", ["wrong-password", "no-such-role", "pg-hba-reject"])
def test_refused_credentials_are_a_storage_refused_that_says_which(
        case: str, server: Any, make_app: Callable[..., Flask], mq: MemQueue, tasks: dict[str, Any],
        request: pytest.FixtureRequest) -> None:
    """A wrong password, a role that does not exist and a pg_hba.conf rejection are refused
    credentials: a PostgresCredentialsRefused, which is a PostgresUnavailable (an outage to
    code that catches those) and a StorageRefused (a configuration error: ``flask memqueue
    worker`` stops at once instead of retrying for ever), saying which, never showing the
    password; 503 over HTTP."""
    from flask_memqueue import StorageRefused
    from flask_memqueue.storage import PostgresCredentialsRefused

    url = server.url(password="wr0ng-pa55", connect_timeout="2")
    said = "wrong password or user name"
    if case == "no-such-role":
        url = url.replace("://memqueue:", "://nobody_here:", 1) if "://memqueue:" in url else None
        # scram-sha-256 does not tell a missing role from a wrong password (by design)
    elif case == "pg-hba-reject":
        role = request.getfixturevalue("rejected_role")
        url = url.split("://", 1)[0] + f"://{role}:right-one@" + url.split("@", 1)[1]
        said = "pg_hba.conf"
    assert url is not None, server.url()
    app = make_app(MEMQUEUE_STORAGE=url, MEMQUEUE_CONSUMER=False)
    with app.app_context(), pytest.raises(PostgresCredentialsRefused, match="refused the credentials") as caught:
        mq.enqueue(tasks["echo"], 1)
    assert isinstance(caught.value, PostgresUnavailable) and isinstance(caught.value, StorageRefused)
    assert said in str(caught.value), caught.value
    assert "wr0ng-pa55" not in str(caught.value) and "right-one" not in str(caught.value)
    answer = app.test_client().get("/memqueue/stats")
    assert answer.status_code == 503 and "refused the credentials" in answer.get_json()["error"]


# -- the schema ---------------------------------------------------------------------------------------
def test_a_production_app_without_the_schema_is_told_to_run_db_upgrade(make: Callable[..., AppQueue],
                                                                        mq: MemQueue, tasks: dict[str, Any],
                                                                        server: Any, schema: str) -> None:
    queue = make(testing=False)
    with queue.app.app_context(), pytest.raises(SchemaError, match="flask memqueue db upgrade"):
        mq.enqueue(tasks["echo"], 1)
    runner = queue.app.test_cli_runner()
    first = runner.invoke(memqueue_cli, ["db", "upgrade"])
    assert first.exit_code == 0 and f"from version 0 to {SCHEMA_VERSION}" in first.output, first.output
    again = runner.invoke(memqueue_cli, ["db", "upgrade"])
    assert again.exit_code == 0 and f"current (version {SCHEMA_VERSION})" in again.output
    with queue.app.app_context():
        assert mq.enqueue(tasks["echo"], 1).status == "queued"
    assert server.execute(f"SELECT count(*) FROM {schema}.memqueue_jobs") == [(1,)]


def test_db_sql_is_one_transaction_that_can_run_twice(make: Callable[..., AppQueue], server: Any,
                                                      schema: str) -> None:
    queue = make(testing=False)
    result = queue.app.test_cli_runner().invoke(memqueue_cli, ["db", "sql"])
    assert result.exit_code == 0
    sql = result.output
    assert sql.startswith("BEGIN;") and sql.rstrip().endswith("COMMIT;") and "memqueue_schema" in sql
    for _ in range(2):  # as a team would apply it in a migration, and once more by mistake
        with server.connect(autocommit=True) as conn:
            conn.execute(sql)
    versions = server.execute(f"SELECT version FROM {schema}.memqueue_schema ORDER BY version")
    assert versions == [(m[0],) for m in MIGRATIONS]  # 5 is reserved (workflows)
    assert queue.storage.upgrade_schema() == (SCHEMA_VERSION, SCHEMA_VERSION)


def test_a_version_1_schema_is_upgraded_to_record_aborts(make: Callable[..., AppQueue], server: Any,
                                                         schema: str) -> None:
    from flask_memqueue.storage.postgres.schema import schema_sql

    with server.connect(autocommit=True) as conn:  # what 1.0 created
        conn.execute(schema_sql(schema).split("-- version 2")[0] + "COMMIT;")
    queue = make(testing=False)
    assert queue.storage.upgrade_schema() == (1, SCHEMA_VERSION)
    assert server.execute(f"SELECT count(*) FROM {schema}.memqueue_aborts") == [(0,)]


@pytest.mark.processes
def test_two_processes_upgrading_an_empty_database_at_once_both_succeed(url: str, tmp_path: Path,
                                                                        server: Any, schema: str) -> None:
    app_file = tmp_path / "upapp.py"
    app_file.write_text(
        "from flask import Flask\nfrom flask_memqueue import MemQueue\n"
        f"app = Flask('upapp')\napp.config['MEMQUEUE_STORAGE'] = {url!r}\nMemQueue(app)\n"
    )
    flask = str(Path(sys.executable).parent / "flask")
    procs = [subprocess.Popen([flask, "--app", "upapp", "memqueue", "db", "upgrade"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sorted(f"from version 0 to {SCHEMA_VERSION}" in o for o in outputs) == [False, True], outputs
    versions = server.execute(f"SELECT version FROM {schema}.memqueue_schema ORDER BY version")
    assert versions == [(m[0],) for m in MIGRATIONS]  # 5 is reserved (workflows)


def test_once_current_starting_runs_no_ddl_behind_an_open_transaction(make: Callable[..., AppQueue], mq: MemQueue,
                                                                      tasks: dict[str, Any], server: Any,
                                                                      schema: str) -> None:
    """An open transaction that enqueued a job holds a lock DDL would wait for: a new
    process (a testing app, which would create missing tables) must start and work anyway."""
    first = make()
    with first.app.app_context():
        mq.enqueue(tasks["echo"], 0)  # creates the schema
    with server.connect() as open_tx:  # not autocommit: the transaction stays open
        open_tx.execute(f"INSERT INTO {schema}.memqueue_jobs (id, ns, lane, task, args, status, enqueued_at)"
                        " VALUES ('x-1', 'other', 'default', 't', '[]', 'queued', 0)")
        open_tx.execute("SET lock_timeout = '5s'")
        second = make()  # a fresh store: checks the schema, creates nothing
        done = threading.Event()

        def enqueue() -> None:
            with second.app.app_context():
                mq.enqueue(tasks["echo"], 1)
            done.set()

        thread = threading.Thread(target=enqueue)
        thread.start()
        thread.join(TIMEOUT)
        assert done.is_set(), "the new process waited behind the open transaction (it ran DDL)"
        open_tx.rollback()
    assert server.execute(f"SELECT count(*) FROM {schema}.memqueue_jobs") == [(2,)]


# -- wake-ups and waits by NOTIFY ---------------------------------------------------------------------
def test_an_idle_take_wakes_on_another_processes_enqueue_by_notify(make: Callable[..., AppQueue], mq: MemQueue,
                                                                   tasks: dict[str, Any]) -> None:
    consumer, producer = make(), make()
    storage: Any = consumer.storage
    storage.idle_wait = 3600.0  # no poll: only a notification can wake it in time
    assert storage.take(0) is None
    wait_until(lambda: storage.session.listening.is_set())
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(storage.take(TIMEOUT)))
    thread.start()
    with producer.app.app_context():
        job = mq.enqueue(tasks["echo"], "wake")
    thread.join(TIMEOUT)
    assert got and got[0] is not None and got[0].id == job.id
    consumer.storage.finish(got[0]) if got[0].status == "running" else None


def test_wait_on_a_job_another_process_finishes_is_woken_by_notify(make: Callable[..., AppQueue], mq: MemQueue,
                                                                   tasks: dict[str, Any]) -> None:
    web, worker = make(), make()
    web.storage.waiter_poll_interval = 3600.0  # type: ignore[attr-defined]
    with web.app.app_context():
        job = mq.enqueue(tasks["echo"], "done")
    taken = worker.storage.take(TIMEOUT)
    assert taken is not None
    event = web.storage.waiter(job)
    assert event is not None
    worker.app.extensions["memqueue"].consumer.execute(taken)
    worker.storage.finish(taken)
    assert event.wait(TIMEOUT)
    assert job.status == "succeeded" and job.result == "done"


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "notify-false"])
def test_progress_of_a_newly_claimed_job_is_written_at_once(make: Callable[..., AppQueue], mq: MemQueue,
                                                           monkeypatch: pytest.MonkeyPatch, notify: bool) -> None:
    """Progress reaches another process within 0.1 s (the documented promise) even when the
    session thread was asleep until its next renewal. The lease is an hour and the
    listening thread's waits as long (``LISTEN_SLICE``), so that sleep lasts 20 minutes:
    only the wake-up a claim gives the thread can write the progress within the test's
    wait (it came up to a second late with notify, up to lease/3 without)."""
    from flask_memqueue import current_job
    from flask_memqueue.storage.postgres import session as session_module

    monkeypatch.setattr(session_module, "LISTEN_SLICE", 3600.0)
    gate = threading.Event()

    @mq.task(name="pg.progress")
    def progress() -> str:
        current_job.set_progress(0.5, "half way")
        assert gate.wait(TIMEOUT)
        return "done"

    @mq.task(name="pg.first")
    def first() -> None:
        pass

    options = {"lease": 3600, "notify": notify}
    web, worker = make(), make(MEMQUEUE_STORAGE_OPTIONS=options)
    storage: Any = worker.storage
    session = storage.session
    asleep = threading.Event()
    real_wait = session._wait

    def recording_wait(next_renew: float) -> None:
        if session.registered and not session._running:
            asleep.set()  # nothing runs here: it sleeps until its next renewal (or a wake-up)
        real_wait(next_renew)

    session._wait = recording_wait
    with web.app.app_context():
        mq.enqueue(first)
    taken = storage.take(TIMEOUT)  # registers the lease, starts the session thread
    assert taken is not None
    worker.consumer.execute(taken)
    asleep.clear()  # before the finish: a wait after it, with nothing running, sets it again
    storage.finish(taken)
    assert asleep.wait(TIMEOUT), "the session thread never went to sleep with nothing running"
    with web.app.app_context():
        job = mq.enqueue(progress)
    taken = storage.take(TIMEOUT)
    assert taken is not None and taken.id == job.id
    runner = threading.Thread(target=worker.consumer.execute, args=(taken,))
    with worker.app.app_context():
        runner.start()
    try:
        seen = wait_until(lambda: (j := web.storage.get(job.id)) is not None and j.progress == 0.5 and j)
        assert seen.progress_message == "half way"
    finally:
        gate.set()
        runner.join(TIMEOUT)
    storage.finish(taken)
    done = web.storage.get(job.id)
    assert done is not None and done.status == "succeeded" and done.progress == 0.5


# -- jobs in the app's transaction --------------------------------------------------------------------
@pytest.fixture
def sqla_app(make_app: Callable[..., Flask], mq: MemQueue, server: Any, url: str) -> Iterator[tuple[Flask, Any, Any]]:
    """A Flask-SQLAlchemy app on the same database (psycopg 3 driver), with one model."""
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()
    schema = url.rpartition("schema=")[2]

    class Order(db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "orders"
        __table_args__ = {"schema": schema}
        id = db.Column(db.Integer, primary_key=True)
        item = db.Column(db.String(50))

    app = make_app("pgapp", MEMQUEUE_STORAGE=url, MEMQUEUE_CONSUMER=False,
                   SQLALCHEMY_DATABASE_URI=server.url(scheme="postgresql+psycopg"))
    db.init_app(app)
    with app.app_context():
        db.session.execute(db.text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        db.session.commit()
        db.create_all()
        app.extensions["memqueue"].storage.upgrade_schema()
    yield app, db, Order
    with app.app_context():
        db.engine.dispose()


def _jobs(server: Any, url: str) -> list[tuple[str, str]]:
    schema = url.rpartition("schema=")[2]
    return [(r[0], r[1]) for r in server.execute(f"SELECT id, status FROM {schema}.memqueue_jobs ORDER BY seq")]


def test_a_job_in_a_session_that_rolls_back_never_existed(sqla_app: tuple[Flask, Any, Any], mq: MemQueue,
                                                          tasks: dict[str, Any], server: Any, url: str) -> None:
    app, db, Order = sqla_app
    other = app.extensions["memqueue"]
    with app.app_context():
        db.session.add(Order(item="book"))
        job = tasks["echo"].options(session=db.session).delay("for the book")
        assert _jobs(server, url) == []  # not visible outside the transaction
        assert other.storage.take(0) is None
        db.session.rollback()
    assert _jobs(server, url) == []
    assert other.storage.take(0) is None and other.storage.get(job.id) is None


def test_a_job_in_a_session_that_commits_exists_once_and_runs_after_the_commit(
    sqla_app: tuple[Flask, Any, Any], mq: MemQueue, tasks: dict[str, Any], server: Any, url: str, make: Any
) -> None:
    app, db, Order = sqla_app
    worker = make()  # another "process" on the same store: it claims nothing before the commit
    storage: Any = worker.storage
    storage.idle_wait = 3600.0
    assert storage.take(0) is None
    wait_until(lambda: storage.session.listening.is_set())
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(storage.take(TIMEOUT)))
    with app.app_context():
        db.session.add(Order(item="pen"))
        job = mq.options(session=db.session).enqueue(tasks["echo"], "for the pen")
        thread.start()
        assert not got  # the worker sees nothing while the transaction is open
        db.session.commit()
    thread.join(TIMEOUT)
    assert got and got[0] is not None and got[0].id == job.id  # woken by the NOTIFY sent at commit
    assert _jobs(server, url) == [(job.id, "running")]
    storage.finish(got[0])


def test_a_unique_key_in_two_sessions_makes_one_job(sqla_app: tuple[Flask, Any, Any], mq: MemQueue,
                                                    tasks: dict[str, Any], server: Any, url: str) -> None:
    app, db, _ = sqla_app
    with app.app_context():
        first = tasks["echo"].options(session=db.session, unique_key="k").delay(1)
        same = tasks["echo"].options(session=db.session, unique_key="k").delay(2)
        assert same.id == first.id  # the holder is a job of this very transaction
        results: list[str] = []

        def second_session() -> None:
            with app.app_context():
                with db.engine.connect() as conn:  # a plain SQLAlchemy Connection
                    results.append(tasks["echo"].options(session=conn, unique_key="k").delay(3).id)
                    conn.commit()

        thread = threading.Thread(target=second_session)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive(), "the second transaction waits for the first (the key's advisory lock)"
        db.session.commit()
        thread.join(TIMEOUT)
    assert results == [first.id]
    assert _jobs(server, url) == [(first.id, "queued")]


def test_session_is_refused_by_a_store_outside_the_database(make_app: Callable[..., Flask], mq: MemQueue,
                                                            tasks: dict[str, Any]) -> None:
    app = make_app(MEMQUEUE_STORAGE="memory://")
    with app.app_context(), pytest.raises(ConfigurationError, match="on_commit"):
        tasks["echo"].options(session=object()).delay(1)
    with pytest.raises(ValueError, match="give one"):
        mq.options(session=object(), on_commit=object())
    with pytest.raises(ValueError, match="unique_key"):
        mq.options(on_commit=object(), unique_key="k")


def test_on_commit_with_another_store_puts_after_commit_and_drops_on_rollback(
    make_app: Callable[..., Flask], mq: MemQueue, tasks: dict[str, Any], tmp_path: Path
) -> None:
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()
    app = make_app(MEMQUEUE_STORAGE="memory://", SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}")
    db.init_app(app)
    queue: AppQueue = app.extensions["memqueue"]
    with app.app_context():
        kept = tasks["echo"].options(on_commit=db.session).delay("kept")
        assert queue.storage.get(kept.id) is None  # held back until the commit
        db.session.commit()
        assert kept.wait(TIMEOUT) == "kept"
        dropped = mq.options(on_commit=db.session).enqueue(tasks["echo"], "dropped")
        db.session.rollback()
        assert dropped.status == "cancelled" and "rolled back" in (dropped.error or "")
        assert queue.storage.get(dropped.id) is None
        db.session.remove()
