"""How a job is queued, apart from its call: one immutable :class:`JobOptions` that every layer passes whole.

The extension, the registry's :class:`~flask_memqueue.task.Options` and
:class:`~flask_memqueue.task.TaskOptions`, the call object
(:meth:`Task.s() <flask_memqueue.Task.s>`), the app's queue and the store
all hand on one :class:`JobOptions`, never its fields one by one. So an
option is added here, in one place:

1. a field of :class:`JobOptions` (with its default, which must mean "as
   before"), marked ``PER_CALL`` if it only says how one call is queued;
2. a key of :class:`JobChanges` if a caller may set it per call
   (``.options(...)``), and its check in :data:`CHECKS`.

Fields are of three kinds, and each kind reaches a store in its own way:

- **indexed** (``queue``, ``priority``, ``unique_key``, ``tick``): a column
  or a key of its own in every store, which claims and lookups use;
- **per call** (``eta``, ``session``, ``on_commit``): how one call is queued
  (when, in whose transaction); a job never holds them (:meth:`JobOptions.for_job`);
- **every other field**: kept on the job and persisted by a store that
  other processes share as one JSON object (:func:`stored_extras`, the
  record's ``options`` field), so an option that no claim looks at needs no
  schema change in SQLite, Redis or PostgreSQL. Its values must be JSON values.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from .display import safe_repr

#: The queue every job waits in unless its task or its call names another.
DEFAULT_QUEUE = "default"

#: Field metadata: a column or key of its own in every store.
INDEXED: Mapping[str, str] = {"kind": "indexed"}
#: Field metadata: how one call is queued; never on a job, never stored.
PER_CALL: Mapping[str, str] = {"kind": "call"}


@dataclasses.dataclass(frozen=True, slots=True)
class JobOptions:
    """How a job is queued, apart from its call: its queue, priority, unique key, tick,
    and for one call also when (``eta``) and in whose transaction.

    Immutable and shared: every job of a task enqueued without options holds
    its task's one :class:`JobOptions` (:func:`job_options` hands out one
    object per ``(queue, priority)``), so a queued job pays one reference for
    all of them. A job with a unique key or a tick (rare: one per call that
    asks, one per periodic tick) has its own.
    """

    #: The named queue the job waits in.
    queue: str = dataclasses.field(default=DEFAULT_QUEUE, metadata=INDEXED)
    #: -100..100: within its queue a higher priority runs first.
    priority: int = dataclasses.field(default=0, metadata=INDEXED)
    #: ``task.options(unique_key=...)``: while the job waits or runs, an enqueue
    #: with the same key returns it instead of queueing another.
    unique_key: str | None = dataclasses.field(default=None, metadata=INDEXED)
    #: For a job a periodic task's schedule made: the Unix time of its tick.
    tick: float | None = dataclasses.field(default=None, metadata=INDEXED)
    #: This call is due at this Unix time (``enqueue_in``, ``enqueue_at``); None: now.
    eta: float | None = dataclasses.field(default=None, metadata=PER_CALL)
    #: ``options(session=...)``: insert the job through this SQLAlchemy session or
    #: connection, in its open transaction (a store in that database).
    session: Any = dataclasses.field(default=None, metadata=PER_CALL)
    #: ``options(on_commit=...)``: queue the job once this SQLAlchemy session commits.
    on_commit: Any = dataclasses.field(default=None, metadata=PER_CALL)
    #: ``options(depends_on=...)``: the jobs (or job ids) this call waits on, as given;
    #: the app's queue checks them and keeps their ids in :attr:`after`.
    depends_on: tuple[Any, ...] | None = dataclasses.field(default=None, metadata=PER_CALL)
    #: The ids of the jobs this job waits on (a workflow's link, a chord's callback,
    #: ``depends_on=``): it is ``deferred`` until each of them succeeded.
    after: tuple[str, ...] | None = None
    #: The id of the group (``mq.group(...)``) this job is a member of.
    group: str | None = None
    #: What the job is given of the jobs it waits on, as its first positional argument
    #: once released: ``"first"`` the result of its one parent (a chain's link),
    #: ``"list"`` the results of all of them in order (a chord's callback), None nothing.
    bind: str | None = None
    #: ``options(time_limit=...)``: seconds the job may run, instead of its task's
    #: own or ``MEMQUEUE_TIME_LIMIT`` (see :doc:`/limits`); None: theirs.
    time_limit: float | None = None
    #: ``options(isolated=True)``: run the job in a child process (see :doc:`/limits`);
    #: False runs an isolated task's call in the consumer thread; None: as its task says.
    isolated: bool | None = None
    #: ``options(memory_limit="1G")``: bytes of address space the job's child process may
    #: use (RLIMIT_AS), instead of its task's own; None: its task's.
    memory_limit: int | None = None
    #: The W3C ``traceparent`` of the span that enqueued the job (set by the OpenTelemetry
    #: hook, :mod:`flask_memqueue.otel`, when a tracer provider is set): the job's span is its child.
    traceparent: str | None = None
    #: The W3C ``tracestate`` that went with it, if any.
    tracestate: str | None = None
    #: ``@mq.task(concurrency=N)``: at most this many jobs that share :attr:`concurrency_key`
    #: run at once, across every process of a shared store (see :doc:`/limits`).
    concurrency: int | None = None
    #: The key a concurrency-limited job counts against: ``"<task>"``, or
    #: ``"<task>:<key>"`` with ``concurrency_key=`` (computed once, at enqueue).
    concurrency_key: str | None = None
    #: ``@mq.task(rate_limit="100/m")``: at most this many starts per :attr:`rate_period`...
    rate_limit: int | None = None
    #: ...seconds (1, 60 or 3600), per :attr:`rate_key`.
    rate_period: float | None = None
    #: The key a rate-limited job counts against (as :attr:`concurrency_key`).
    rate_key: str | None = None

    def replace(self, **changes: Any) -> JobOptions:
        """These options with the given fields changed (the shared object when there is one)."""
        return _shared(dataclasses.replace(self, **changes))

    def linked(self, after: tuple[str, ...] | None, group: str | None, bind: str | None) -> JobOptions:
        """``for_job().replace(after=after, group=group, bind=bind)`` for one job of a workflow.

        A workflow's job has at least one of them set, so it never is the shared
        object: this copies the slots directly, without ``dataclasses.replace``'s
        generic path (about 8 of a chain link's 30 µs in memory: a chain of 1,000
        links makes 1,000 of them)."""
        if after is None and group is None and bind is None:
            return self.for_job().replace(after=None, group=None, bind=None)
        new: JobOptions = _new_options(JobOptions)
        for name in _KEPT_FIELDS:
            _set(new, name, getattr(self, name))
        for name in PER_CALL_FIELDS:
            _set(new, name, None)
        _set(new, "after", after)
        _set(new, "group", group)
        _set(new, "bind", bind)
        return new

    def for_job(self) -> JobOptions:
        """What a job keeps of these options: all but the per-call fields (shared when it can be)."""
        if self.eta is None and self.session is None and self.on_commit is None and self.depends_on is None:
            return self
        return _shared(dataclasses.replace(self, eta=None, session=None, on_commit=None, depends_on=None))


#: The fields of each kind, by name.
INDEXED_FIELDS = tuple(f.name for f in dataclasses.fields(JobOptions) if f.metadata.get("kind") == "indexed")
PER_CALL_FIELDS = tuple(f.name for f in dataclasses.fields(JobOptions) if f.metadata.get("kind") == "call")
STORED_FIELDS = tuple(f.name for f in dataclasses.fields(JobOptions) if not f.metadata.get("kind"))
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(JobOptions)}
#: What :meth:`JobOptions.linked` copies (all but the per-call fields and the three it sets).
_KEPT_FIELDS = tuple(f.name for f in dataclasses.fields(JobOptions)
                     if f.name not in PER_CALL_FIELDS and f.name not in ("after", "group", "bind"))
_new_options = object.__new__
_set = object.__setattr__

_SHARED_OPTIONS: dict[tuple[str, int], JobOptions] = {}
#: At most this many shared options objects (queue names come from stored
#: records too, so the cache is bounded; past it, options are made per job).
_SHARED_MAX = 4096


def job_options(
    queue: str = DEFAULT_QUEUE, priority: int = 0, unique_key: str | None = None, tick: float | None = None,
    **others: Any,
) -> JobOptions:
    """The :class:`JobOptions` for these values: one shared object per
    ``(queue, priority)`` when nothing else is set."""
    if unique_key is not None or tick is not None or (others and any(v is not None for v in others.values())):
        return JobOptions(queue, priority, unique_key, tick, **others)
    key = (queue, priority)
    options = _SHARED_OPTIONS.get(key)
    if options is None:
        options = JobOptions(queue, priority)
        if len(_SHARED_OPTIONS) < _SHARED_MAX:
            _SHARED_OPTIONS[key] = options
    return options


def _shared(options: JobOptions) -> JobOptions:
    """``options``, or the shared object equal to it."""
    if options.unique_key is not None or options.tick is not None:
        return options
    for name in PER_CALL_FIELDS + STORED_FIELDS:
        if getattr(options, name) != _DEFAULTS[name]:
            return options
    return job_options(options.queue, options.priority)


DEFAULT_OPTIONS = job_options()


# -- what a store keeps ------------------------------------------------------------------------
def stored_extras(options: JobOptions) -> str | None:
    """The options a store keeps without a column of their own, as one JSON object;
    None when they all have their defaults (so far every job: no such option exists yet).

    :raises TypeError: such an option holds a value JSON cannot (a bug of that option).
    """
    extras = {name: getattr(options, name) for name in STORED_FIELDS if getattr(options, name) != _DEFAULTS[name]}
    if not extras:
        return None
    return json.dumps(extras, allow_nan=False, sort_keys=True, separators=(",", ":"))


def from_stored(
    queue: str, priority: int, unique_key: str | None, tick: float | None, extras: str | None
) -> JobOptions:
    """The options of a stored record: its indexed columns and its JSON ``options`` field.

    A key this version does not know (written by a newer one) is dropped: the
    job still runs, as it would have before that option existed.
    """
    if not extras:
        return job_options(queue, priority, unique_key, tick)
    known = {k: v for k, v in json.loads(extras).items() if k in STORED_FIELDS}
    if isinstance(known.get("after"), list):  # JSON has no tuples
        known["after"] = tuple(known["after"])
    return job_options(queue, priority, unique_key, tick, **known)


# -- what a caller may change per call ---------------------------------------------------------
class JobChanges(TypedDict, total=False):
    """The options a caller may set for one call: ``.options(**changes)`` of a task, of a
    call object (``task.s(...)``) and of the extension (``mq.options(...)``).

    A key left out (or given as None) keeps the task's own value.
    """

    #: The named queue instead of the task's own.
    queue: str | None
    #: -100..100 instead of the task's own; higher runs first.
    priority: int | None
    #: While a job with this key waits or runs, an enqueue returns it instead of queueing another.
    unique_key: str | None
    #: Insert the job through this SQLAlchemy session or connection, in its transaction.
    session: Any
    #: Queue the job once this SQLAlchemy session commits (dropped on rollback).
    on_commit: Any
    #: Run the job once every one of these jobs (``Job`` objects or job ids) succeeded.
    depends_on: Any
    #: Seconds the job may run before :class:`~flask_memqueue.TimeLimitExceeded` is raised in it.
    time_limit: float | None
    #: Run the job in a child process (True), or in the consumer thread (False).
    isolated: bool | None
    #: Bytes (an int) or ``"512M"``/``"1G"`` of address space the isolated job's child may use.
    memory_limit: int | str | None


#: Priorities run from this low...
MIN_PRIORITY = -100
#: ...to this high (as in Django's task framework); higher runs first.
MAX_PRIORITY = 100
_QUEUE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-:")
QUEUE_NAME_MAX = 64
#: A unique key is at most this many characters (it is stored and shown with every job).
UNIQUE_KEY_MAX = 255


def check_queue_name(name: object, where: str = "queue") -> str:
    """``name`` if it can name a queue, else a ValueError naming ``where`` and the value.

    Queue names appear in URLs (``/jobs?queue=``), log lines, SQL rows and
    Redis keys, so they are kept to letters, digits and ``_ . - :``.
    """
    if not isinstance(name, str) or not name or len(name) > QUEUE_NAME_MAX or not _QUEUE_NAME_CHARS.issuperset(name):
        raise ValueError(
            f"{where}: a queue name is 1 to {QUEUE_NAME_MAX} letters, digits or '_', '.', '-', ':',"
            f" not {safe_repr(name, 80)}"
        )
    return name


def check_unique_key(key: object, where: str = "unique_key") -> str:
    """``key`` if it can be a job's unique key (a non-empty string of at most 255
    characters), else a ValueError naming ``where`` and the value."""
    if not isinstance(key, str) or not key or len(key) > UNIQUE_KEY_MAX:
        raise ValueError(
            f"{where} must be a non-empty string of at most {UNIQUE_KEY_MAX} characters, like"
            f" 'report:42' (prefix it with the task's name by convention), not {safe_repr(key, 80)}"
        )
    return key


def check_priority(value: object, where: str = "priority") -> int:
    """``value`` if it is a priority (an int from -100 to 100), else a ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(
            f"{where} must be an int from {MIN_PRIORITY} to {MAX_PRIORITY} (higher runs first),"
            f" not {safe_repr(value, 80)}"
        )
    return value


def check_time_limit(value: object, where: str = "time_limit") -> float:
    """``value`` as a float if it is a time limit (a finite number of seconds > 0), else a
    ValueError naming ``where``."""
    if (
        not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{where} must be a number of seconds > 0 (how long the job may run), not {safe_repr(value, 80)}"
        )
    return float(value)


def check_isolated(value: object, where: str = "isolated") -> bool:
    """``value`` if it is a bool, else a ValueError naming ``where``."""
    if not isinstance(value, bool):
        raise ValueError(f"{where} must be True (run the job in a child process) or False, not {safe_repr(value, 80)}")
    return value


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
#: The smallest memory limit accepted: below it a Python interpreter cannot even start.
MIN_MEMORY_LIMIT = 32 * 1024**2


def check_memory_limit(value: object, where: str = "memory_limit") -> int:
    """``value`` as a number of bytes: an int, or a string such as ``"512M"`` or ``"1G"``
    (K, M, G, T: powers of 1024; an optional trailing ``B`` or ``iB``), else a ValueError naming ``where``."""
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        text = value.strip().upper().removesuffix("IB").removesuffix("B")
        number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "")
        try:
            amount = float(number)
        except ValueError:
            amount = math.nan
        if math.isfinite(amount) and amount > 0:
            size = int(amount * _UNITS[unit])
    if size is None or size < MIN_MEMORY_LIMIT:
        raise ValueError(
            f"{where} must be a number of bytes of at least 32M: an int, or a string like '512M' or '1G'"
            f" (K, M, G: powers of 1024), not {safe_repr(value, 80)}"
        )
    return size


def show_bytes(size: int) -> str:
    """``1G`` for 1024**3, ``1536M`` for 1.5 GiB: how a memory limit reads in messages."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size} bytes"


def _anything(value: object, where: str) -> object:
    return value


def check_depends_on(value: object, where: str = "depends_on") -> tuple[Any, ...]:
    """``value`` (a job, a job id, or a list of them) as a non-empty tuple, else a
    TypeError naming ``where``. Whether each names a job of this app is checked at enqueue."""
    items: tuple[Any, ...]
    if isinstance(value, str) or hasattr(value, "key") and hasattr(value, "task"):
        items = (value,)
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = tuple(value)
    else:
        raise TypeError(f"{where}: give a Job, a job id, or a list of them, not {safe_repr(value, 80)}")
    if not items:
        raise ValueError(f"{where}: give at least one job to wait on (an empty list waits on nothing)")
    for item in items:
        if not (isinstance(item, str) or hasattr(item, "key") and hasattr(item, "task")):
            raise TypeError(f"{where}: each item is a Job or a job id (str), not {safe_repr(item, 80)}")
    return items


#: The check of each key of :class:`JobChanges`: ``check(value, where)`` returns the
#: value or raises ValueError naming ``where``.
CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "queue": check_queue_name,
    "priority": check_priority,
    "unique_key": check_unique_key,
    "session": _anything,
    "on_commit": _anything,
    "depends_on": check_depends_on,
    "time_limit": check_time_limit,
    "isolated": check_isolated,
    "memory_limit": check_memory_limit,
}


def check_changes(changes: Mapping[str, Any], where: str = "options") -> dict[str, Any]:
    """The changes a caller gave (None values left out), each checked.

    :raises ValueError: a bad value, or options that cannot go together (the message names them).
    :raises TypeError: a key that is no option.
    """
    given = {key: value for key, value in changes.items() if value is not None}
    for key, value in given.items():
        check = CHECKS.get(key)
        if check is None:
            raise TypeError(f"{where}() got an unexpected keyword argument {key!r}; options are {', '.join(CHECKS)}")
        given[key] = check(value, f"{where}({key}=...)")
    if "session" in given and "on_commit" in given:
        raise ValueError(f"{where}(session=..., on_commit=...): give one; session= inserts the job in your"
                         " transaction (a store in that database), on_commit= queues it after the commit"
                         " (any store)")
    if "depends_on" in given and ("session" in given or "on_commit" in given):
        raise ValueError(f"{where}(depends_on=..., {'session' if 'session' in given else 'on_commit'}=...): a job"
                         " that waits on others is queued by the store alone; give one of the two")
    if "depends_on" in given and "unique_key" in given:
        raise ValueError(f"{where}(depends_on=..., unique_key=...): a job that waits on others cannot hold a"
                         " unique key (its holder would be decided before it may run); give one of the two")
    if "on_commit" in given and "unique_key" in given:
        raise ValueError(f"{where}(on_commit=..., unique_key=...): a deferred job cannot return the holder of"
                         " its key (the store is asked only at the commit); use session= with a store in your"
                         " database, or no key")
    return given


# -- when -------------------------------------------------------------------------------------
def eta_in(delay: float | _dt.timedelta) -> float:
    """The Unix time ``delay`` seconds (or a timedelta) from now, for ``enqueue_in``."""
    seconds = delay.total_seconds() if isinstance(delay, _dt.timedelta) else delay
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds):
        raise TypeError(f"delay must be a number of seconds or a timedelta, not {delay!r}")
    if seconds < 0:
        raise ValueError(f"delay must not be negative, not {delay!r}")
    return time.time() + seconds


def eta_at(when: _dt.datetime) -> float:
    """The Unix time of ``when``, a timezone-aware datetime, for ``enqueue_at``."""
    if not isinstance(when, _dt.datetime):
        raise TypeError(f"when must be a datetime, not {when!r}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            "when must be timezone-aware, e.g. datetime.now(timezone.utc) + timedelta(minutes=5);"
            f" got the naive {when!r}"
        )
    return when.timestamp()
