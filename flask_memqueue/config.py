"""Every ``MEMQUEUE_*`` config key: its default, and the check it must pass.

Read once, in ``init_app``, so that a wrong value fails at start-up with an
error naming the key, never at the first enqueue in production.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ConfigurationError
from .job import DEFAULT_QUEUE, check_queue_name

PREFIX = "MEMQUEUE_"


def _env_hint(key: str, value: Any) -> str:
    """What to add to an error about a value that may have come from the environment.

    ``app.config.from_prefixed_env()`` JSON-parses every value, so
    ``FLASK_MEMQUEUE_TOKEN=1234...`` arrives as an int and ``FLASK_MEMQUEUE_X=[1]``
    as a list. Numbers, lists, dicts and None are what that produces.
    """
    if isinstance(value, (int, float, list, dict)) or value is None:
        return (
            f" (if it comes from FLASK_{key}: app.config.from_prefixed_env() JSON-parses values,"
            f" so quote a string inside the variable, e.g. FLASK_{key}='\"...\"')"
        )
    return ""


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # from_prefixed_env turns FLASK_X=1 into the int 1
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    hint = (
        " (from the environment use true/false or 1/0: app.config.from_prefixed_env() JSON-parses"
        " values)"
        if isinstance(value, (int, float, list, dict)) or value is None
        else ""
    )
    raise ConfigurationError(f"{key} must be True or False, not {value!r}{hint}")


#: The largest count a ``MEMQUEUE_*`` number may hold unless its key says less: exact in
#: every store's arithmetic (a Lua number, a SQLite or PostgreSQL bigint, a C ``ssize_t``),
#: and far beyond any real limit. Larger, ``MEMQUEUE_MAX_FINISHED=10**30`` failed in
#: ``deque(maxlen=...)`` with an OverflowError that named no key.
MAX_COUNT = 2**53 - 1


def _int(minimum: int, maximum: int = MAX_COUNT, why: str = "") -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, float) and value.is_integer():  # FLASK_MEMQUEUE_MAXSIZE=1e4
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise ConfigurationError(
                f"{key} must be a whole number from {minimum} to {maximum:,}{why}, not {value!r}"
            )
        return value

    return check


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(f"{key} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _time_limit(key: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigurationError(
            f"{key} must be a number of seconds > 0 (how long a job may run unless its task says"
            f" otherwise), or None for no limit; not {value!r}"
        )
    return float(value)


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*)?")


def _isolation_app(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _IMPORT_PATH.fullmatch(value.strip()):
        raise ConfigurationError(
            f"{key} must name where an isolated job's child process finds the app: 'package.module:app'"
            " (a Flask app), 'package.module:create_app' (a factory called with no arguments), or"
            f" 'package.module' (its app or create_app); or None to find it from init_app's caller; not {value!r}"
        )
    return value.strip()


def _url_prefix(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/") or value != value.strip():
        raise ConfigurationError(
            f"{key} must be a path starting with '/' (like '/memqueue'), or None, not {value!r}"
            + _env_hint(key, value)
        )
    if not value.rstrip("/"):
        raise ConfigurationError(
            f"{key} cannot be the site root: the blueprint answers every unknown URL under its"
            " prefix with a JSON 404. Use a path like '/memqueue', or None for no routes."
        )
    return value.rstrip("/")


def _token(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        # from_prefixed_env JSON-parses FLASK_MEMQUEUE_TOKEN=12345678901234567 into an int;
        # its digits are the secret (the length rule below still applies).
        value = str(value)
    if not isinstance(value, str):
        raise ConfigurationError(f"{key} must be a string, not {type(value).__name__}" + _env_hint(key, value))
    if len(value) < 16:
        raise ConfigurationError(
            f"{key} is too short to be a secret ({len(value)} characters); use at least 16,"
            ' for example python -c "import secrets; print(secrets.token_urlsafe())"'
        )
    return value


def _alias(key: str, value: Any) -> Any:
    """A key of an alias of MEMQUEUE_STORAGE: checked and translated by its backend
    (:func:`flask_memqueue.storage.resolve_alias`), which knows what it means."""
    return value


def _storage(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    from .storage import available_schemes, scheme_installed, split_url

    if not isinstance(value, str):
        raise ConfigurationError(
            f"{key} must be a URL string like 'memory://' (installed schemes:"
            f" {', '.join(s + '://' for s in available_schemes())}), not {value!r}"
        )
    scheme, _ = split_url(value, key)
    if not scheme_installed(scheme):
        from .storage import redact_url

        raise ConfigurationError(
            f"{key}: no storage backend is installed for the scheme {scheme!r} ({redact_url(value)!r});"
            f" installed: {', '.join(s + '://' for s in available_schemes())}"
        )
    return value


def _options(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigurationError(
            f"{key} must be a dict of option names to values, like {{'sync': 'full'}}, not {value!r}"
        )
    return dict(value)


#: Consumer threads per queue at most: threads share one GIL, so more than
#: this only adds switching (use processes, ``flask memqueue worker``, instead).
MAX_THREADS = 256


def _threads(key: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_THREADS:
        raise ConfigurationError(
            f"{key} must be a number of threads from 0 to {MAX_THREADS} (0: this process enqueues to the"
            f" queue but does not consume it), not {value!r}"
        )
    return value


def _amqp_url(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    from .storage.base import redact_url

    if not isinstance(value, str):
        raise ConfigurationError(
            f"{key} must be a URL string like 'amqp://user:pass@127.0.0.1:5672/%2F', not {type(value).__name__}"
            + _env_hint(key, value)
        )
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in ("amqp", "amqps") or value != value.strip() or not rest:
        raise ConfigurationError(
            f"{key} must be an amqp:// or amqps:// URL like 'amqp://user:pass@127.0.0.1:5672/%2F',"
            f" not {redact_url(value)!r}"
        )
    return value


def _queues(key: str, value: Any) -> dict[str, int]:
    """``{"default": 1, "emails": 4}``, or ``{"emails": {"threads": 4}}``: threads per queue."""
    if value is None:
        return {DEFAULT_QUEUE: 1}
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"{key} must be a dict of queue names to thread counts, like {{'default': 1, 'emails': 4}},"
            f" not {value!r}" + _env_hint(key, value)
        )
    queues: dict[str, int] = {}
    for name, spec in value.items():
        try:
            check_queue_name(name, f"{key}: {name!r}")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        where = f"{key}[{name!r}]"
        if isinstance(spec, dict):
            unknown = sorted(map(str, set(spec) - QUEUE_OPTIONS))
            if unknown:
                raise ConfigurationError(
                    f"{where}: unknown option(s) {', '.join(map(repr, unknown))}; a queue takes"
                    " {'threads': N, 'async_concurrency': M}"
                )
            spec = spec.get("threads", 1)
            where += "['threads']"
        queues[name] = _threads(where, spec)
    queues.setdefault(DEFAULT_QUEUE, 1)  # always there: a task without queue= goes to it
    return queues


#: What a queue's dict in ``MEMQUEUE_QUEUES`` may say.
QUEUE_OPTIONS = frozenset({"threads", "async_concurrency"})
#: ``async_concurrency`` at most: jobs one consumer thread's event loop runs at once.
MAX_ASYNC_CONCURRENCY = 10_000


def async_concurrency(key: str, value: Any) -> dict[str, int]:
    """The queues of ``MEMQUEUE_QUEUES`` (already checked by :func:`_queues`) whose threads run
    several ``async def`` jobs at once: ``{"crawl": {"threads": 1, "async_concurrency": 100}}``.

    Only queues that say more than 1 are listed (1, the default, is one job per thread).
    """
    found: dict[str, int] = {}
    if not isinstance(value, dict):
        return found
    for name, spec in value.items():
        if not isinstance(spec, dict) or "async_concurrency" not in spec:
            continue
        n = spec["async_concurrency"]
        if isinstance(n, str) and n.strip().isdigit():
            n = int(n)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_ASYNC_CONCURRENCY:
            raise ConfigurationError(
                f"{key}[{name!r}]['async_concurrency'] must be a whole number from 1 to {MAX_ASYNC_CONCURRENCY}:"
                f" how many async def jobs each consumer thread of the queue runs at once on its event loop"
                f" (per thread: 'threads': 2 with 100 runs up to 200), not {n!r}"
            )
        if n > 1:
            found[name] = n
    return found


def _queue_prefix(key: str, value: Any) -> str:
    if not isinstance(value, str) or value != value.strip() or value.startswith("amq."):
        raise ConfigurationError(
            f"{key} must be a string without spaces around it that does not start with 'amq.'"
            f" (RabbitMQ reserves those names), like 'memqueue.', not {value!r}" + _env_hint(key, value)
        )
    return value


def _timezone(key: str, value: Any) -> str:
    """An IANA time zone name for cron schedules (``"UTC"``, ``"Europe/Paris"``)."""
    if value == "UTC":  # the default: no time zone module to import
        return "UTC"
    from .schedule import resolve_timezone

    try:
        resolve_timezone(value, key)
    except ConfigurationError as exc:
        raise ConfigurationError(str(exc) + _env_hint(key, value)) from None
    return str(value)


def _auto_bool(key: str, value: Any) -> bool | None:
    """None (the default: decide at ``init_app`` from what the process has), True or False."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    try:
        return _bool(key, value)
    except ConfigurationError:
        raise ConfigurationError(
            f"{key} must be True, False, or None (the default: decide at init_app from what the process has"
            f" set up), not {value!r}"
        ) from None


def _sentry_arguments(key: str, value: Any) -> Any:
    """True (each argument's repr), False (filtered), or a function ``(job) -> dict``."""
    if callable(value) and not isinstance(value, (bool, int, str)):
        return value
    try:
        return _bool(key, value)
    except ConfigurationError:
        raise ConfigurationError(
            f"{key} must be True (send each argument's repr), False (send '[Filtered]'), or a function"
            f" (job) -> dict that returns what to send, not {value!r}"
        ) from None


@dataclass(frozen=True)
class Setting:
    default: Any
    check: Callable[[str, Any], Any]
    doc: str


#: Every key, in the order the README's table lists them.
SETTINGS: dict[str, Setting] = {
    "MAXSIZE": Setting(10_000, _int(0), "Waiting jobs at most; enqueue beyond it raises QueueFull. 0 = no limit."),
    "RESULT_TTL": Setting(3600.0, _seconds, "Seconds a finished job stays readable."),
    "MAX_FINISHED": Setting(1000, _int(0), "Finished jobs kept at most, oldest forgotten first."),
    "EAGER": Setting(False, _bool, "Run every job inline at enqueue (for tests)."),
    "AUTOSTART": Setting(False, _bool, "Start the consumer in init_app instead of on first use."),
    "CONSUMER": Setting(True, _bool, "Run a consumer in this process (False: enqueue only)."),
    "QUEUES": Setting(
        None, _queues, "Queues this process declares, and its consumer threads per queue: {'default': 1, 'emails': 4}."
    ),
    "URL_PREFIX": Setting("/memqueue", _url_prefix, "Where the blueprint is mounted; None: no routes."),
    "TOKEN": Setting(None, _token, "Bearer token the routes require; unset: debug/testing apps only."),
    "MAX_MESSAGE_BYTES": Setting(65536, _int(1), "Largest body /produce accepts."),
    "SHUTDOWN_TIMEOUT": Setting(10.0, _seconds, "Seconds shutdown at interpreter exit waits for the queue to drain."),
    "STORAGE": Setting(None, _storage, "Where jobs live, as a URL: memory:// (the default), or a shared store's."),
    "STORAGE_OPTIONS": Setting(None, _options, "The store's own options (a dict); also from the URL's query string."),
    "JOURNAL": Setting(None, _alias, "Alias of MEMQUEUE_STORAGE: a file path means the journal in that file."),
    "JOURNAL_SYNC": Setting("normal", _alias, "With MEMQUEUE_JOURNAL: 'normal' survives a crash, 'full' power loss."),
    "METRICS": Setting(False, _bool, "Count jobs for GET <prefix>/metrics (needs the metrics extra)."),
    "AMQP_URL": Setting(None, _amqp_url, "RabbitMQ for messages (produce, handlers): amqp:// or amqps://."),
    "AMQP_QUEUE_PREFIX": Setting("memqueue.", _queue_prefix, "A handler's queue is this prefix + its topic."),
    "AMQP_THREADS": Setting(1, _int(1, MAX_THREADS, " (one connection each)"),
                            "Consumer threads (one connection each) per app for RabbitMQ."),
    "AMQP_PREFETCH": Setting(8, _int(1, 65_535, " (AMQP's basic.qos limit)"),
                             "Unacknowledged messages one RabbitMQ consumer thread holds at most."),
    "PERIODIC": Setting(True, _bool, "Run the schedule of periodic tasks in this process (False: never)."),
    "TIMEZONE": Setting("UTC", _timezone, "The IANA time zone of cron schedules without timezone=."),
    "TIME_LIMIT": Setting(None, _time_limit, "Seconds a job may run unless its task or call says; None: no limit."),
    "GRACE_PERIOD": Setting(
        5.0, _seconds, "Seconds a job may run on after its time limit or a forced abort before its thread is given up."
    ),
    "ISOLATION_APP": Setting(
        None, _isolation_app, "Where an isolated job's child finds the app: 'module:app' or 'module:create_app';"
        " None: found from init_app's caller."
    ),
    "MAX_JOBS_PER_CHILD": Setting(100, _int(1), "Jobs a warm child of isolated jobs runs before it is replaced."),
    "OPENTELEMETRY": Setting(None, _auto_bool, "Trace jobs (None: if a tracer provider is set at init_app)."),
    "SENTRY": Setting(None, _auto_bool, "Report failed jobs to Sentry (None: if sentry_sdk.init() ran before)."),
    "SENTRY_RETRIES": Setting(False, _bool, "Also report each failed attempt that will be retried."),
    "SENTRY_ARGUMENTS": Setting(True, _sentry_arguments, "A job's arguments on its Sentry event: True, False,"
                                " or (job) -> dict."),
}


@dataclass(frozen=True)
class Config:
    maxsize: int
    result_ttl: float
    max_finished: int
    eager: bool
    autostart: bool
    consumer: bool
    #: Consumer threads per queue (0: declared, enqueued to, not consumed here); "default" always present.
    queues: dict[str, int]
    url_prefix: str | None
    token: str | None
    max_message_bytes: int
    shutdown_timeout: float
    #: The store's URL (``MEMQUEUE_STORAGE``, or made from ``MEMQUEUE_JOURNAL``).
    storage: str
    #: The store's options: the URL's query string merged with ``MEMQUEUE_STORAGE_OPTIONS``.
    storage_options: dict[str, Any]
    #: Which key named the store, for error messages: ``MEMQUEUE_STORAGE`` or ``MEMQUEUE_JOURNAL``.
    storage_key: str
    metrics: bool
    #: RabbitMQ for messages (``MEMQUEUE_AMQP_URL``), or None: messages use the store.
    amqp_url: str | None = None
    amqp_queue_prefix: str = "memqueue."
    amqp_threads: int = 1
    amqp_prefetch: int = 8
    #: Run the schedule of periodic tasks here (``MEMQUEUE_PERIODIC``).
    periodic: bool = True
    #: The time zone of cron schedules that name none (``MEMQUEUE_TIMEZONE``), an IANA name.
    timezone: str = "UTC"
    #: Seconds a job may run unless its task or its call says otherwise (``MEMQUEUE_TIME_LIMIT``).
    time_limit: float | None = None
    #: Seconds after a time limit (or an abort) before the job's thread is given up (``MEMQUEUE_GRACE_PERIOD``).
    grace_period: float = 5.0
    #: Where an isolated job's child process finds the app (``MEMQUEUE_ISOLATION_APP``); None: found.
    isolation_app: str | None = None
    #: Jobs a warm child process runs before it is replaced (``MEMQUEUE_MAX_JOBS_PER_CHILD``).
    max_jobs_per_child: int = 100
    #: Queues whose consumer threads run several ``async def`` jobs at once, and how many per
    #: thread (``MEMQUEUE_QUEUES = {"crawl": {"async_concurrency": 100}}``); others run one.
    async_concurrency: dict[str, int] = field(default_factory=dict)
    #: Install the OpenTelemetry hook (``MEMQUEUE_OPENTELEMETRY``): None decides at init_app.
    opentelemetry: bool | None = None
    #: Install the Sentry hook (``MEMQUEUE_SENTRY``): None decides at init_app.
    sentry: bool | None = None
    #: Report each failed attempt that will be retried to Sentry too.
    sentry_retries: bool = False
    #: A job's arguments on its Sentry event: True, False, or a function ``(job) -> dict``.
    sentry_arguments: Any = True


def read_config(config: Mapping[str, Any]) -> Config:
    """Validate every ``MEMQUEUE_*`` key of an app's config and return them typed.

    Unknown keys with our prefix are refused too: a typo would otherwise be a
    setting silently ignored.
    """
    known = {PREFIX + name for name in SETTINGS}
    for key in config:
        if isinstance(key, str) and key.startswith(PREFIX) and key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise ConfigurationError(f"unknown config key {key}{hint}")
    values = {}
    for name, setting in SETTINGS.items():
        key = PREFIX + name
        value = config.get(key, setting.default)
        values[name.lower()] = setting.check(key, value)
    values["storage"], values["storage_options"], values["storage_key"] = _store(config, values)
    values["async_concurrency"] = async_concurrency(PREFIX + "QUEUES", config.get(PREFIX + "QUEUES"))
    return Config(**values)


def _store(config: Mapping[str, Any], values: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """The store's URL, options and naming key, from MEMQUEUE_STORAGE(_OPTIONS) or an alias
    (translated by the backend it belongs to: this module names no backend)."""
    from .storage import alias_keys, resolve_alias, split_url

    given: dict[str, Any] = {}
    for key in alias_keys():
        value = values.pop(key[len(PREFIX):].lower())
        if key in config:
            given[key] = value
    try:
        url, options, key = resolve_alias(given, values.pop("storage"), values.pop("storage_options"))
    except ConfigurationError as exc:  # the backend named the key; say where such a value may come from
        bad = next((k for k in given if str(exc).startswith(k + " ")), None)
        if bad is None:
            raise
        raise ConfigurationError(str(exc) + _env_hint(bad, given[bad])) from None
    url = url or "memory://"
    _, query = split_url(url, key)
    both = sorted(set(query) & set(options))
    if both:
        raise ConfigurationError(
            f"the storage option(s) {', '.join(map(repr, both))} are given both in MEMQUEUE_STORAGE's query"
            " string and in MEMQUEUE_STORAGE_OPTIONS; keep one"
        )
    return url, {**query, **options}, key
