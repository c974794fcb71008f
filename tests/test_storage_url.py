"""``MEMQUEUE_STORAGE``: one URL selects the store; backends plug in by entry point.

The contract every store passes is test_storage_contract.py; this module is
about choosing a store: the URL and its options, the ``MEMQUEUE_JOURNAL``
alias, errors at ``init_app``, third-party backends found through the
``flask_memqueue.storage`` entry-point group, and passwords never shown.
"""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_memqueue import ConfigurationError, JournalError, MemQueue
from flask_memqueue.storage import available_schemes, redact_url, register_backend

MakeApp = Callable[..., Flask]


@pytest.fixture
def dict_backend() -> str:
    from dictstore import SCHEME, open_dict

    register_backend(SCHEME, open_dict)
    return SCHEME


def test_memory_is_the_default(make_app: MakeApp) -> None:
    app = make_app()
    queue = app.extensions["memqueue"]
    assert queue.config.storage == "memory://"
    assert not queue.storage.capabilities.shared and not queue.storage.capabilities.persistent
    assert app.test_client().get("/memqueue/stats").get_json()["storage"] == "memory://"


@pytest.mark.parametrize("url", ["sqlite:///jobs.db", "sqlite:///sub/../jobs.db"])
def test_a_relative_sqlite_url_lives_in_the_instance_folder(tmp_path: Path, url: str) -> None:
    instance = tmp_path / "instance"  # made by the store: Flask leaves that to the app
    app = Flask("relative", instance_path=str(instance))
    app.config.update(TESTING=True, MEMQUEUE_STORAGE=url)
    MemQueue().init_app(app)
    queue = app.extensions["memqueue"]
    try:
        assert queue.storage.capabilities.shared and queue.storage.capabilities.persistent
        assert Path(queue.storage.path).resolve() == (instance / "jobs.db").resolve()
        assert (instance / "jobs.db").exists()
    finally:
        queue.shutdown()


def test_an_absolute_sqlite_url_uses_four_slashes(make_app: MakeApp, tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    app = make_app(MEMQUEUE_STORAGE=f"sqlite:///{path}")
    assert app.extensions["memqueue"].storage.path == str(path)
    assert path.exists()


def test_the_journal_alias_means_a_sqlite_url(make_app: MakeApp, tmp_path: Path) -> None:
    path = tmp_path / "alias.db"
    app = make_app(MEMQUEUE_JOURNAL=str(path), MEMQUEUE_JOURNAL_SYNC="full")
    queue = app.extensions["memqueue"]
    assert queue.config.storage == f"sqlite:///{path}"
    assert queue.config.storage_options == {"sync": "full"}
    assert queue.storage.path == str(path) and queue.storage.sync == "full"


def test_sync_from_the_query_string_or_the_options(make_app: MakeApp, tmp_path: Path) -> None:
    a = make_app("a", MEMQUEUE_STORAGE=f"sqlite:///{tmp_path / 'a.db'}?sync=full")
    b = make_app("b", MEMQUEUE_STORAGE=f"sqlite:///{tmp_path / 'b.db'}", MEMQUEUE_STORAGE_OPTIONS={"sync": "full"})
    assert a.extensions["memqueue"].storage.sync == b.extensions["memqueue"].storage.sync == "full"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"MEMQUEUE_STORAGE": "sqlite:///x.db", "MEMQUEUE_JOURNAL": "y.db"}, "MEMQUEUE_STORAGE and MEMQUEUE_JOURNAL"),
        ({"MEMQUEUE_STORAGE": "sqlite:///x.db?sync=full", "MEMQUEUE_STORAGE_OPTIONS": {"sync": "normal"}},
         "'sync'.*both in MEMQUEUE_STORAGE's query string and in MEMQUEUE_STORAGE_OPTIONS"),
        ({"MEMQUEUE_STORAGE": "sqlite:///x.db", "MEMQUEUE_JOURNAL_SYNC": "full"},
         "MEMQUEUE_JOURNAL_SYNC goes with MEMQUEUE_JOURNAL"),
        ({"MEMQUEUE_STORAGE": "sqlite:///x.db?sync=sometimes"}, "sync must be 'normal' or 'full'"),
        ({"MEMQUEUE_STORAGE": "sqlite:///x.db?colour=blue"}, "unknown option.*'colour'.*sync"),
        ({"MEMQUEUE_STORAGE": "memory://", "MEMQUEUE_STORAGE_OPTIONS": {"size": 3}}, "memory:// takes no options"),
        ({"MEMQUEUE_STORAGE": "sqlite://"}, "names no file"),
    ],
)
def test_bad_storage_settings_are_refused_at_init_app(tmp_path: Path, config: dict[str, Any], match: str) -> None:
    app = Flask("configured", instance_path=str(tmp_path))
    app.config.update(TESTING=True, **config)
    with pytest.raises(ConfigurationError, match=match):
        MemQueue().init_app(app)
    assert "memqueue" not in app.extensions


def test_an_unknown_scheme_names_the_key_and_lists_the_installed_ones() -> None:
    app = Flask("configured")
    app.config.update(TESTING=True, MEMQUEUE_STORAGE="mysql://me:hunter2@db/jobs")
    with pytest.raises(ConfigurationError) as info:
        MemQueue().init_app(app)
    message = str(info.value)
    assert "MEMQUEUE_STORAGE" in message and "'mysql'" in message
    assert "memory://" in message and "sqlite://" in message and "postgresql://" in message
    assert "hunter2" not in message and "me:***@db" in message


def test_the_built_in_backends_are_one_table_and_need_no_package_metadata() -> None:
    """The built-in schemes are the rows of ``storage._BUILTIN`` and nowhere else: the
    package declares no entry points for them (entry points are how other
    distributions add schemes), and each row names a factory that exists."""
    from importlib.metadata import entry_points

    from flask_memqueue.storage import _BUILTIN, _load

    ours = [ep.value for ep in entry_points(group="flask_memqueue.storage") if ep.value.startswith("flask_memqueue.")]
    assert ours == [], "a built-in backend is a row of storage._BUILTIN, not an entry point"
    postgres = {"postgresql", "postgres", "postgresql+psycopg"}
    redis = {"redis", "rediss", "unix", "redis+sentinel", "redis+cluster"}
    assert set(_BUILTIN) == {"memory", "sqlite", *redis, *postgres}
    for scheme in postgres:
        assert _BUILTIN[scheme] == "flask_memqueue.storage.postgres:open_postgres"
    for target in _BUILTIN.values():
        assert callable(_load(target)), target
    assert set(_BUILTIN) <= set(available_schemes())


@pytest.fixture
def third_party_backend(tmp_path: Path) -> Iterator[str]:
    """A backend installed the way a package installs one: a module plus an entry point."""
    site = tmp_path / "site"
    package = site / "thirdparty_store"
    package.mkdir(parents=True)
    here = str(Path(__file__).parent)
    (package / "__init__.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {here!r})
        from dictstore import open_dict as open_store
    """))
    dist = site / "thirdparty_store-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-store\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[flask_memqueue.storage]\nthirdparty = thirdparty_store:open_store\n")
    sys.path.insert(0, str(site))
    try:
        yield "thirdparty"
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("thirdparty_store", None)


def test_a_third_party_backend_plugs_in_by_entry_point(make_app: MakeApp, mq: MemQueue,
                                                       third_party_backend: str) -> None:
    assert third_party_backend in available_schemes()

    @mq.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    app = make_app(MEMQUEUE_STORAGE=f"{third_party_backend}:///elsewhere")
    queue = app.extensions["memqueue"]
    assert type(queue.storage).__module__ == "dictstore"
    assert queue.storage.capabilities.shared
    with app.app_context():
        job = add.delay(2, 3)
        assert job.wait(timeout=10) == 5


def test_passwords_are_never_shown(make_app: MakeApp, dict_backend: str, caplog: pytest.LogCaptureFixture) -> None:
    url = f"{dict_backend}://worker:s3cret-pass@127.0.0.1:6400/0"
    caplog.set_level(logging.DEBUG, logger="flask_memqueue")
    app = make_app(MEMQUEUE_STORAGE=url)
    client = app.test_client()
    shown = [
        client.get("/memqueue/stats").get_data(as_text=True),
        client.get("/memqueue/threads").get_data(as_text=True),
        client.get("/memqueue/").get_data(as_text=True),
        app.test_cli_runner().invoke(args=["memqueue", "jobs"]).output,
    ]
    assert json.loads(shown[0])["storage"] == f"{dict_backend}://worker:***@127.0.0.1:6400/0"
    for text in [*shown, caplog.text]:
        assert "s3cret-pass" not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host/0?x=1", "redis://user:***@host/0?x=1"),
        ("amqp://guest:guest@[::1]:5672/%2F", "amqp://guest:***@[::1]:5672/%2F"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db"),
        ("pg://admin:hun/ter2@dbhost/jobs", "pg://admin:***@dbhost/jobs"),
        ("redis://u:p?w@h/0", "redis://u:***@h/0"),
        ("redis://hunter2@host", "redis://***@host"),
        ("redis://:pw@host:99999/0", "redis://:***@host:99999/0"),
        ("postgresql://host/db?password=hunter2&x=1&API_KEY=k", "postgresql://host/db?password=***&x=1&API_KEY=***"),
        ("memory://", "memory://"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_journal_that_is_a_folder_says_so(tmp_path: Path) -> None:
    app = Flask("configured")
    app.config.update(TESTING=True, MEMQUEUE_STORAGE=f"sqlite:///{tmp_path}/")
    with pytest.raises(ConfigurationError, match="names no file"):
        MemQueue().init_app(app)
    app.config.update(MEMQUEUE_STORAGE=f"sqlite:///{tmp_path}")
    with pytest.raises(JournalError, match="MEMQUEUE_STORAGE .* is a folder"):
        MemQueue().init_app(app)


def test_a_store_that_fails_answers_503_and_keeps_nothing_half_done(make_app: MakeApp, mq: MemQueue,
                                                                     tmp_path: Path) -> None:
    from flask_memqueue import StorageError

    @mq.handler
    def on_message(message: Any) -> None: ...

    app = make_app(MEMQUEUE_STORAGE=f"sqlite:///{tmp_path / 'j.db'}", MEMQUEUE_CONSUMER=False)
    store = app.extensions["memqueue"].storage

    def broken(records: Any) -> int:
        raise OSError("injected: the disk is gone")

    store._insert = broken  # type: ignore[method-assign]
    answer = app.test_client().post("/memqueue/produce", json={"message": "hi"})
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "1"
    body = answer.get_json()
    assert body["status"] == 503 and "the job store is unavailable" in body["error"] and "disk is gone" in body["error"]
    with app.app_context(), pytest.raises(StorageError, match="enqueueing|disk is gone"):
        mq.produce("again")
    assert store.depth() == 0 and store.jobs() == []


@pytest.mark.parametrize(
    "url",
    ["memory://user:hunter2@host", "sqlite://u:hunter2@host/x.db", "sqlite://:hunter2@/x.db",
     "nosuch://u:hunter2@h/?token=hunter2", "sqlite:///x.db?password=hunter2"],
)
def test_a_password_is_never_in_an_init_app_error(tmp_path: Path, url: str) -> None:
    app = Flask("secret", instance_path=str(tmp_path))
    app.config.update(TESTING=True, MEMQUEUE_STORAGE=url)
    with pytest.raises(ConfigurationError) as info:
        MemQueue().init_app(app)
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"MEMQUEUE_STORAGE": "sqlite:///%00.db"}, "MEMQUEUE_STORAGE: the sqlite file name .* NUL"),
        ({"MEMQUEUE_STORAGE": "sqlite:///a\x00b.db"}, "MEMQUEUE_STORAGE holds a control character"),
        ({"MEMQUEUE_STORAGE": "sqlite:///a\nb.db"}, "MEMQUEUE_STORAGE holds a control character"),
        ({"MEMQUEUE_JOURNAL": "a\x00b.db"}, "MEMQUEUE_JOURNAL: the sqlite file name .* control character or NUL"),
        ({"MEMQUEUE_STORAGE": "sqlite:///:memory:"}, "in-memory SQLite database .* use 'memory://'"),
        ({"MEMQUEUE_JOURNAL": "/"}, "MEMQUEUE_JOURNAL: the sqlite URL .* names no file"),
        ({"MEMQUEUE_JOURNAL": " "}, "MEMQUEUE_JOURNAL: the sqlite URL .* names no file"),
    ],
)
def test_unusable_file_names_are_refused_naming_the_key(tmp_path: Path, config: dict[str, Any], match: str) -> None:
    app = Flask("names", instance_path=str(tmp_path))
    app.config.update(TESTING=True, **config)
    with pytest.raises(ConfigurationError, match=match):
        MemQueue().init_app(app)
    assert list(tmp_path.iterdir()) == []  # no stray file was made


def test_backend_exceptions_live_in_their_backends_and_import_no_driver() -> None:
    """``JournalError``, ``RedisUnavailable``, ``PostgresUnavailable`` and ``SchemaError`` are
    defined by their backends; the old names still work (``flask_memqueue.X``,
    ``flask_memqueue.exceptions.X``), and neither importing the exceptions nor these names
    loads sqlite3, redis-py or psycopg (a fresh interpreter tells)."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import sys
        DRIVERS = ("sqlite3", "redis", "psycopg", "psycopg_pool")
        import flask_memqueue.exceptions as exceptions
        assert not [d for d in DRIVERS if d in sys.modules]
        from flask_memqueue import JournalError, RedisUnavailable, StorageError, StorageRefused
        from flask_memqueue import PostgresUnavailable, SchemaError
        from flask_memqueue.exceptions import JournalError as J, RedisUnavailable as R, RedisCredentialsRefused
        from flask_memqueue.exceptions import PostgresUnavailable as P, SchemaError as S
        assert (J, R, P, S) == (JournalError, RedisUnavailable, PostgresUnavailable, SchemaError)
        assert issubclass(JournalError, StorageError) and issubclass(RedisUnavailable, StorageError)
        assert issubclass(PostgresUnavailable, StorageError) and issubclass(SchemaError, StorageError)
        assert issubclass(RedisCredentialsRefused, RedisUnavailable)
        assert issubclass(RedisCredentialsRefused, StorageRefused)
        assert JournalError.__module__ == "flask_memqueue.storage.sqlite.errors", JournalError.__module__
        assert RedisUnavailable.__module__ == "flask_memqueue.storage.redis.client", RedisUnavailable.__module__
        for cls in (PostgresUnavailable, SchemaError):
            assert cls.__module__ == "flask_memqueue.storage.postgres.errors", cls.__module__
        assert not [d for d in DRIVERS if d in sys.modules], "a driver was imported"
        try:
            exceptions.NoSuchError
        except AttributeError as exc:
            assert "NoSuchError" in str(exc)
        else:
            raise AssertionError("an unknown name must be an AttributeError")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
