"""Every MEMQUEUE_ key is validated once, at init_app, with an error naming it."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_memqueue import ConfigurationError, MemQueue, MemQueueError
from flask_memqueue.config import SETTINGS

#: Values each key must refuse (keys without the MEMQUEUE_ prefix).
BAD_VALUES: dict[str, list[Any]] = {
    "MAXSIZE": [-1, "lots", 1.5, True, None],
    "RESULT_TTL": [-1, "an hour", float("nan"), float("inf"), True],
    "MAX_FINISHED": [-1, "many", 2.5, False],
    "EAGER": ["perhaps", 2, None],
    "AUTOSTART": ["soon", 1, []],
    "CONSUMER": ["sometimes", 0],
    "URL_PREFIX": ["memqueue", "", " /memqueue", 42],
    "TOKEN": ["short", 1234567890123456789, b"0123456789abcdef0123"],
    "MAX_MESSAGE_BYTES": [0, -5, "big", 1.5],
    "SHUTDOWN_TIMEOUT": [-1, float("nan"), "soon", True],
    "JOURNAL": [42, ["a"]],
    "STORAGE": [42, "nosuch://x", "jobs.db", "sqlite://somehost/jobs.db", "memory://?a=1&a=2", "memory://x"],
    "STORAGE_OPTIONS": ["sync=full", {"nosuch": 1}, {1: 2}, ["sync"]],
    "JOURNAL_SYNC": ["always", 1, None],
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
