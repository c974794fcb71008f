"""Every MEMQUEUE_ key is validated once, at init_app, with an error naming it."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_memqueue import ConfigurationError, MemQueue, MemQueueError
from flask_memqueue.config import SETTINGS

#: Values each key must refuse (keys without the MEMQUEUE_ prefix).
BAD_VALUES: dict[str, list[Any]] = {
    "MAXSIZE": [-1, "lots", 1.5, True, None, 2**53, 10**30],
    "RESULT_TTL": [-1, "an hour", float("nan"), float("inf"), True],
    "MAX_FINISHED": [-1, "many", 2.5, False, 10**30],
    "EAGER": ["perhaps", 2, None],
    "AUTOSTART": ["soon", 2, []],
    "CONSUMER": ["sometimes", -1],
    "QUEUES": [["default"], "emails", {"": 1}, {"bad name": 1}, {"x" * 65: 1}, {"emails": -1}, {"emails": 257},
               {"emails": 1.5}, {"emails": True}, {"emails": {"threads": 2, "speed": 3}}, {"emails": {"threads": "x"}},
               {3: 1}, {"default": None}, {"crawl": {"async_concurrency": 0}},
               {"crawl": {"threads": 1, "async_concurrency": "lots"}}, {"crawl": {"async_concurrency": 10_001}}],
    "URL_PREFIX": ["memqueue", "", " /memqueue", 42],
    "TOKEN": ["short", 123456789, b"0123456789abcdef0123", 1.5e20],
    "MAX_MESSAGE_BYTES": [0, -5, "big", 1.5, 2**53],
    "SHUTDOWN_TIMEOUT": [-1, float("nan"), "soon", True],
    "TIME_LIMIT": [0, -1, float("nan"), float("inf"), "soon", True],
    "GRACE_PERIOD": [-1, float("nan"), "soon", True],
    "ISOLATION_APP": [42, "not a path", "mod:attr:more", "mod:", ":app", ["mod"]],
    "MAX_JOBS_PER_CHILD": [0, -1, "many", 1.5, True, 10**30],
    "JOURNAL": [42, ["a"]],
    "STORAGE": [42, "nosuch://x", "jobs.db", "sqlite://somehost/jobs.db", "memory://?a=1&a=2", "memory://x",
                " memory://", "sqlite:///jobs.db#x"],
    "STORAGE_OPTIONS": ["sync=full", {"nosuch": 1}, {1: 2}, ["sync"]],
    "JOURNAL_SYNC": ["always", 1, None],
    "METRICS": ["maybe", 2, None],
    "AMQP_URL": [5672, "redis://localhost", " amqp://localhost", "amqp://", "localhost:5672",
                 "amqp://h/%2F?heartbeat=abc", "amqp://h/%2F?nosuch=1", "amqp://u:p@h:notaport/"],
    "AMQP_QUEUE_PREFIX": ["amq.x", 5, " p.", None],
    "AMQP_THREADS": [0, -1, "many", 1.5, 257, 10**30],
    "AMQP_PREFETCH": [0, -1, "lots", 2.5, 65_536],
    "PERIODIC": ["often", 2, None],
    "TIMEZONE": ["Mars/Olympus_Mons", "", 1, None, "../etc/passwd", " UTC"],
    "OPENTELEMETRY": ["sometimes", 2, []],
    "SENTRY": ["sometimes", 2, []],
    "SENTRY_RETRIES": ["maybe", 2, None],
    "SENTRY_ARGUMENTS": ["redact", 3, None, [], {"args": 1}],
}


def init(config: dict[str, Any], *, testing: bool = True) -> Flask:
    app = Flask("configured")
    app.config["TESTING"] = testing
    app.config.update(config)
    MemQueue().init_app(app)
    return app


def shutdown(app: Flask) -> None:
    app.extensions["memqueue"].shutdown()


def test_every_setting_has_bad_values_here() -> None:
    assert set(BAD_VALUES) == set(SETTINGS), "add bad values for a new MEMQUEUE_ key to BAD_VALUES"


@pytest.mark.parametrize(
    ("key", "value"), [(key, value) for key, values in BAD_VALUES.items() for value in values]
)
def test_a_bad_value_raises_at_init_app_naming_the_key(key: str, value: Any) -> None:
    app = Flask("configured")
    app.config["TESTING"] = True
    app.config[f"MEMQUEUE_{key}"] = value
    with pytest.raises(ConfigurationError, match=f"MEMQUEUE_{key}"):
        MemQueue().init_app(app)
    assert "memqueue" not in app.extensions
    assert not any(rule.endpoint.startswith("memqueue.") for rule in app.url_map.iter_rules())


def test_configuration_error_is_a_memqueue_error_and_a_value_error() -> None:
    assert issubclass(ConfigurationError, MemQueueError) and issubclass(ConfigurationError, ValueError)


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("MEMQUEUE_MAX_SIZE", "MEMQUEUE_MAXSIZE"), ("MEMQUEUE_TOKN", "MEMQUEUE_TOKEN"),
     ("MEMQUEUE_URLPREFIX", "MEMQUEUE_URL_PREFIX"), ("MEMQUEUE_EAGR", "MEMQUEUE_EAGER")],
)
def test_an_unknown_key_is_refused_with_a_suggestion(typo: str, suggestion: str) -> None:
    with pytest.raises(ConfigurationError, match=f"{typo}.*did you mean {suggestion}"):
        init({typo: 1})


def test_an_unknown_key_without_a_close_match_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="MEMQUEUE_ZZZ.*MEMQUEUE_MAXSIZE"):
        init({"MEMQUEUE_ZZZ": 1})


def test_defaults_are_set_in_the_app_config() -> None:
    app = init({})
    try:
        for name, setting in SETTINGS.items():
            assert app.config[f"MEMQUEUE_{name}"] == setting.default
        config = app.extensions["memqueue"].config
        assert config.maxsize == 10_000 and config.max_message_bytes == 65536
        assert config.url_prefix == "/memqueue" and config.token is None
        assert config.eager is False and config.autostart is False and config.consumer is True
    finally:
        shutdown(app)


def test_values_from_environment_strings_are_parsed() -> None:
    app = init({
        "MEMQUEUE_MAXSIZE": "5",
        "MEMQUEUE_RESULT_TTL": "1.5",
        "MEMQUEUE_EAGER": "true",
        "MEMQUEUE_AUTOSTART": "off",
        "MEMQUEUE_URL_PREFIX": "/jobs/",
        "MEMQUEUE_TOKEN": "x" * 16,
    })
    try:
        config = app.extensions["memqueue"].config
        assert config.maxsize == 5 and config.result_ttl == 1.5
        assert config.eager is True and config.autostart is False
        assert config.url_prefix == "/jobs"
        assert config.token == "x" * 16
    finally:
        shutdown(app)


def test_consumer_false_needs_a_shared_store_outside_testing() -> None:
    with pytest.raises(ConfigurationError, match="MEMQUEUE_CONSUMER.*MEMQUEUE_STORAGE"):
        init({"MEMQUEUE_CONSUMER": False}, testing=False)


def test_a_bad_task_option_is_refused_when_registered() -> None:
    mq = MemQueue()
    for options in ({"retries": -1}, {"retry_delay": -1}, {"retry_backoff": 0.5}, {"retries": "3"}):
        with pytest.raises(ConfigurationError):
            mq.task(**options)(lambda: None)
    with pytest.raises(TypeError, match="unknown handler option"):
        mq.handler("topic", retry=3)  # type: ignore[call-overload]


def test_two_tasks_with_one_name_are_refused() -> None:
    mq = MemQueue()
    mq.task(name="same")(lambda: 1)
    with pytest.raises(ConfigurationError, match="'same'"):
        mq.task(name="same")(lambda: 2)


# -- values as app.config.from_prefixed_env() delivers them ------------------------------
def from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Flask:
    """An app configured the 12-factor way: FLASK_MEMQUEUE_* variables, then init_app."""
    for name, value in env.items():
        monkeypatch.setenv(f"FLASK_{name}", value)
    app = Flask("from_env")
    app.config["TESTING"] = True
    app.config.from_prefixed_env()
    MemQueue().init_app(app)
    return app


def test_from_prefixed_env_json_values_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    app = from_env(
        monkeypatch,
        MEMQUEUE_EAGER="1",  # the int 1
        MEMQUEUE_AUTOSTART="0",  # the int 0
        MEMQUEUE_CONSUMER="true",  # the bool True
        MEMQUEUE_TOKEN="12345678901234567890",  # the int 12345678901234567890
        MEMQUEUE_RESULT_TTL="30",  # the int 30
        MEMQUEUE_SHUTDOWN_TIMEOUT="2.5",  # the float 2.5
        MEMQUEUE_MAXSIZE="100",
        MEMQUEUE_URL_PREFIX="/jobs-api",  # not JSON: stays a string
    )
    assert app.config["MEMQUEUE_EAGER"] == 1  # what Flask delivered; the queue reads it as a bool
    config = app.extensions["memqueue"].config
    assert config.eager is True and config.autostart is False and config.consumer is True
    assert config.token == "12345678901234567890"
    assert config.result_ttl == 30.0 and config.shutdown_timeout == 2.5 and config.maxsize == 100
    assert config.url_prefix == "/jobs-api"
    shutdown(app)


def test_a_quoted_numeric_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    app = from_env(monkeypatch, MEMQUEUE_TOKEN='"00012345678901234567"')  # leading zeros need quotes
    assert app.extensions["memqueue"].config.token == "00012345678901234567"
    shutdown(app)


def test_a_short_numeric_token_is_refused_by_the_length_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"MEMQUEUE_TOKEN is too short .*\(5 characters\)"):
        from_env(monkeypatch, MEMQUEUE_TOKEN="12345")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MEMQUEUE_EAGER", "2", "MEMQUEUE_EAGER must be True or False, not 2 (from the environment use true/false"),
        ("MEMQUEUE_URL_PREFIX", "42", "MEMQUEUE_URL_PREFIX must be a path"),
        ("MEMQUEUE_JOURNAL", "[1]", "MEMQUEUE_JOURNAL must be a file path, not [1]"),
        ("MEMQUEUE_JOURNAL_SYNC", "1", "MEMQUEUE_JOURNAL_SYNC must be 'normal' or 'full', not 1"),
        ("MEMQUEUE_TOKEN", "[1, 2]", "MEMQUEUE_TOKEN must be a string, not list"),
    ],
)
def test_a_refused_environment_value_says_from_prefixed_env_parses_json(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        from_env(monkeypatch, **{name: value})
    message = str(info.value)
    assert message.startswith(expected), message
    assert "from_prefixed_env() JSON-parses" in message
    if name != "MEMQUEUE_EAGER":
        assert f"FLASK_{name}=" in message and "quote" in message
