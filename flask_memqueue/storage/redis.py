"""The Redis store: the jobs of every process and host that points at one Redis.

``MEMQUEUE_STORAGE = "redis://:password@host:6379/0"`` (also ``rediss://``
for TLS and ``unix:///path/redis.sock``); the ``redis`` extra brings
redis-py. Options, from the URL's query string or ``MEMQUEUE_STORAGE_OPTIONS``:

- ``lease`` (seconds, at least 1, default 30): how long a worker that stops
  renewing (killed, host lost, link cut) keeps its running jobs before a live
  worker takes them over. A heartbeat renews it every ``lease / 3`` while the
  process lives, however long its jobs run.
- ``prefix`` (default ``memqueue:{<app name>}``): where the app's keys live;
  apps with one prefix share their jobs, two prefixes keep two apps (or a
  staging and a production deploy) apart on one server.
- ``socket_timeout``, ``socket_connect_timeout`` (seconds), ``db``,
  ``username``, ``password``, ``client_name``, and for ``rediss://`` the
  ``ssl_*`` options of redis-py.

This module is Redis commands and Lua scripts only. Every change of a job is
one script, atomic in Redis: a claim records the consumer's previous job and
moves the next due one to running; a take-over is conditional on the job
still being the lapsed owner's, so two reclaimers never both take a job and
nothing is locked (a reclaimer that dies mid-way leaves nothing behind).
What every cross-process store shares (group commit, local job objects,
take-over decided by :meth:`Job.interrupt <flask_memqueue.job.Job.interrupt>`,
waiters) is :class:`~flask_memqueue.storage.durable.DurableStorage`'s; what
Redis adds is here:

- **Leases.** An owner (a process) is alive while its key ``P:l:<owner>``
  exists. Every claim sets it for ``lease`` seconds, and a heartbeat thread
  renews it every ``lease / 3``. A lapsed lease makes the owner's running
  jobs anyone's to take over; the lapsed owner's late outcome is discarded
  (the first outcome recorded stands) and logged.
- **Wake-ups.** An idle consumer blocks in ``BLPOP`` on its queue's token
  list; an enqueue pushes a token, so a consumer in any process wakes within
  a round trip. A claim that finds nothing deletes the stale tokens.
- **Waiters.** A finished job's id is published on ``P:done``; ``Job.wait()``
  in another process is woken by it (a background thread listens while
  anything waits). A slow poll remains as a safety net.
- **Claims whose reply was lost** (a connection cut after Redis ran the
  claim) are put back at the head of their queue by the next claim, so a job
  never stays "running" for a live owner that never got it.

Jobs are JSON (arguments, results), never pickle. The password never leaves
this module: :attr:`url` (what logs, errors, pages and the CLI show) has it
replaced by ``***``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ..exceptions import ConfigurationError, MemQueueError, RedisUnavailable, StorageError
from ..extras import install_hint
from .base import Capabilities, StoreContext
from .durable import FINISHED, DurableStorage, Record, _PollingEvent, check_options

if TYPE_CHECKING:
    import redis as redis_py

    from ..job import Job

logger = logging.getLogger("flask_memqueue")

#: The options this backend takes, and what each means (``check_options`` lists them).
OPTIONS = {
    "lease": "seconds a dead worker's jobs wait before a live one takes them over (>= 1, default 30)",
    "prefix": "the key prefix of this app's jobs (default 'memqueue:{<app name>}')",
    "socket_timeout": "seconds a command may take (default 5)",
    "socket_connect_timeout": "seconds a connection may take (default 5)",
    "db": "the database number (also the URL's path)",
    "username": "ACL user name (also in the URL)",
    "password": "password (better in the URL, or in MEMQUEUE_STORAGE_OPTIONS from the environment)",
    "client_name": "the name CLIENT LIST shows",
    "ssl_cert_reqs": "rediss: 'required' (default), 'optional' or 'none'",
    "ssl_ca_certs": "rediss: a CA bundle file",
    "ssl_certfile": "rediss: a client certificate file",
    "ssl_keyfile": "rediss: the client certificate's key file",
    "ssl_check_hostname": "rediss: check the server's name (default true)",
}
_SECONDS = ("socket_timeout", "socket_connect_timeout")
_STRINGS = ("username", "password", "client_name", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_KEY = "MEMQUEUE_STORAGE / MEMQUEUE_STORAGE_OPTIONS"

#: The lease when none is given, in seconds.
DEFAULT_LEASE = 30.0
#: Seconds between two writes of a running job's progress (``current_job.set_progress``).
PROGRESS_INTERVAL = 0.1
#: Tokens of failed claims kept to put their jobs back (a bound, not a tuning knob).
_MAX_FAILED_TOKENS = 64


@dataclass(slots=True)
class RedisRecord(Record):
    """A record as Redis holds it: also the progress a running job reported."""

    progress: float | None = None
    message: str | None = None


def open_redis(url: str, options: Mapping[str, Any], context: StoreContext) -> RedisStorage:
    """The ``redis://``, ``rediss://`` and ``unix://`` entry point. Connects to nothing:
    an app starts while Redis is down, and its first command says why it cannot reach it."""
    check_options(options, OPTIONS, url)
    try:
        import redis  # noqa: F401 - only to say how to install it
    except ImportError:
        raise ConfigurationError(
            "MEMQUEUE_STORAGE names a Redis server but redis-py is not installed:"
            f" {install_hint('redis')}"
        ) from None
    lease = _lease(options.get("lease", DEFAULT_LEASE))
    prefix = _prefix(options.get("prefix"), context.namespace)
    connect: dict[str, Any] = {}
    for name in _SECONDS:
        if name in options:
            connect[name] = _positive(name, options[name])
    if "db" in options:
        connect["db"] = _int_option("db", options["db"])
    for name in _STRINGS:
        if name in options:
            connect[name] = str(options[name])
    if "ssl_check_hostname" in options:
        connect["ssl_check_hostname"] = _bool_option("ssl_check_hostname", options["ssl_check_hostname"])
    return RedisStorage(url, context, lease=lease, prefix=prefix, connect=connect)


def _lease(value: Any) -> float:
    try:
        lease = float(value)
    except (TypeError, ValueError):
        lease = float("nan")
    if isinstance(value, bool) or not lease >= 1.0 or lease == float("inf"):
        raise ConfigurationError(
            f"{_KEY}: the redis option 'lease' must be a number of seconds, at least 1 (default 30), not {value!r}"
        )
    return lease


def _prefix(value: Any, namespace: str) -> str:
    if value is None:
        return f"memqueue:{{{namespace}}}"
    if not isinstance(value, str) or not value or len(value) > 200 or any(c.isspace() or ord(c) < 32 for c in value):
        raise ConfigurationError(
            f"{_KEY}: the redis option 'prefix' must be a non-empty string without spaces or control"
            f" characters, at most 200 long, like 'myapp:{{jobs}}', not {value!r}"
        )
    return value


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0 < number < float("inf"):
        raise ConfigurationError(
            f"{_KEY}: the redis option {name!r} must be a positive number of seconds, not {value!r}"
        )
    return number


def _int_option(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or number < 0:
        raise ConfigurationError(f"{_KEY}: the redis option {name!r} must be a whole number >= 0, not {value!r}")
    return number


def _bool_option(name: str, value: Any) -> bool:
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{_KEY}: the redis option {name!r} must be true or false, not {value!r}")


def _tag(value: Any) -> str:
    """A value as a script takes it: ``n`` for none, else ``v`` and its text."""
    if value is None:
        return "n"
    if isinstance(value, float):
        return "v" + repr(value)
    return "v" + str(value)


def _float(text: str | None) -> float | None:
    return None if text is None else float(text)


def _record(flat: list[Any]) -> RedisRecord:
    """A record from a script's ``{id, JSON text}``."""
    return _parse(flat[0], flat[1])


def _parse(jid: str, text: str | bytes) -> RedisRecord:
    h: dict[str, str] = json.loads(text)
    return RedisRecord(
        id=jid, task=h.get("t", ""), args=h.get("a", "[]"), kwargs=h.get("k"), status=h.get("s", "queued"),
        attempts=int(h.get("n", 0)), enqueued_at=float(h.get("e", 0.0)), eta=_float(h.get("eta")),
        started_at=_float(h.get("sa")), finished_at=_float(h.get("fa")), result=h.get("r"), error=h.get("er"),
        traceback=h.get("tb"), owner=h.get("o"), progress=_float(h.get("pg")), message=h.get("pm"),
        queue=h.get("q", "default"), priority=int(h.get("p", 0)), unique_key=h.get("uk"), tick=_float(h.get("tk")),
    )


class RedisStorage(DurableStorage):
    """Job records in a Redis server that any number of processes and hosts share.

    :param lease: seconds an owner keeps its running jobs without renewing.
    :param prefix: the key prefix of this app's jobs.
    :param connect: keyword arguments of redis-py's connection pool.
    """

    capabilities = Capabilities(
        shared=True, persistent=True, json_only=True, signal_safe_wake=True, reopen_after_fork=True,
        outages_end=True,
    )
    #: An idle consumer blocks in Redis (BLPOP) this long at most: it wakes at once on
    #: an enqueue anywhere; the bound only says how soon a stop from a signal handler is seen.
    idle_wait = 1.0
    #: Waiters are woken by pub/sub; this poll only covers a notification lost in an outage.
    waiter_poll_interval = 5.0

    def __init__(
        self, url: str, context: StoreContext, *, lease: float = DEFAULT_LEASE, prefix: str | None = None,
        connect: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(url, context)
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis = redis
        self.lease = lease
        self.prefix = prefix if prefix is not None else f"memqueue:{{{context.namespace}}}"
        self.key = context.config_key
        kwargs: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, **(connect or {})}
        # No retries inside redis-py: a repeated claim could claim twice. This module
        # repeats what is safe to repeat itself (every script below is written so).
        kwargs["retry"] = Retry(NoBackoff(), 0)
        kwargs.update(decode_responses=True, protocol=2, health_check_interval=0)
        parts = urlsplit(url)
        try:
            # the query string holds this store's options: they come in as ``connect``
            self._pool = redis.ConnectionPool.from_url(url.partition("?")[0], **kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{self.key}: not a Redis URL redis-py can use ({exc}): {self.url!r}") from None
        self._password = unquote(parts.password or "") or str(kwargs.get("password") or "")
        self._r: redis_py.Redis = redis.Redis(connection_pool=self._pool)
        self._scripts = {name: self._r.register_script(source) for name, source in SCRIPTS.items()}
        self._lease_ms = str(int(lease * 1000))
        # Running jobs claimed here: their progress is written by the heartbeat.
        self._running: dict[str, Job] = {}
        self._written: dict[str, tuple[float | None, str | None]] = {}
        self._rlock = threading.Lock()
        self._discards: dict[str, RedisRecord] = {}
        self._failed_tokens: list[str] = []
        self._blocked = 0
        self._alive: dict[str, bool] = {}
        self._closing = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._beat_wake = threading.Event()
        self._listen_thread: threading.Thread | None = None
        self._subscribed = threading.Event()
        self._watched: dict[str, list[_PollingEvent]] = {}
        self._wlock = threading.Lock()
        self._pubsub: Any = None

    # -- errors -----------------------------------------------------------------------------
    def _error(self, exc: BaseException, doing: str) -> StorageError:
        """A :class:`RedisUnavailable` that says why (unreachable, password, TLS, no answer),
        or a :class:`StorageError`; the password never in it."""
        r = self._redis
        text = str(exc)
        if self._password:
            text = text.replace(self._password, "***")
        where = f"Redis {self.url} ({self.key})"
        tls = self.url.startswith("rediss:")
        if isinstance(exc, r.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
            why = f"the server refused the credentials (wrong password or user name): {text}"
        elif tls and isinstance(exc, (r.ConnectionError, r.TimeoutError)) and "connecting" in text.lower():
            # a TLS client talking to a plain port waits for a handshake that never comes
            why = f"the TLS connection failed (does the server speak TLS on this port, with this CA?): {text}"
        elif isinstance(exc, r.TimeoutError):
            why = f"no answer in time (the server is stopped, overloaded, or the network is cut): {text}"
        elif isinstance(exc, r.ConnectionError):
            lowered = text.lower()
            if "ssl" in lowered or "tls" in lowered or "certificate" in lowered:
                why = f"the TLS connection failed: {text}"
            else:
                why = f"the server is unreachable: {text}"
        else:
            return StorageError(f"{where}: {doing} failed: {type(exc).__name__}: {text}")
        return RedisUnavailable(f"{where}: {doing} failed: {why}")

    def _run(self, name: str, args: list[Any], doing: str, *, repeat: bool = True) -> Any:
        """Run one script. A dropped connection is tried once more on a fresh one when
        ``repeat`` (every script that is safe to run twice)."""
        self._check_process()
        script = self._scripts[name]
        try:
            return script(keys=[self.prefix], args=args)
        except self._redis.ConnectionError as exc:
            if not repeat or isinstance(exc, self._redis.AuthenticationError):
                raise self._error(exc, doing) from exc
        except self._redis.RedisError as exc:
            raise self._error(exc, doing) from exc
        try:
            return script(keys=[self.prefix], args=args)
        except self._redis.RedisError as exc:
            raise self._error(exc, doing) from exc

    # -- the primitives ---------------------------------------------------------------------
    def _insert(self, records: list[Record]) -> int:
        args: list[Any] = [self.maxsize, len(records)]
        for r in records:
            args += [r.id, r.task, r.args, _tag(r.kwargs), r.status, repr(r.enqueued_at), _tag(r.eta), r.queue,
                     r.priority]
        return int(self._run("insert", args, f"enqueueing {len(records)} job(s)"))

    def _add_args(self, r: Record) -> list[Any]:
        """The 11 values of the scripts' add_one for a new record."""
        return [r.id, r.task, r.args, _tag(r.kwargs), r.status, repr(r.enqueued_at), _tag(r.eta), r.queue,
                r.priority, _tag(r.unique_key), _tag(None if r.tick is None else repr(r.tick))]

    def _insert_unique(self, record: Record, full: bool) -> Record | None:
        # Not repeated after a lost reply: a second run would find the job it added as the holder
        # (harmless), but a caller told "failed" must not also get a job it does not know of.
        found = self._run("insert_unique", ["1" if full else "0", *self._add_args(record)],
                          "enqueueing a job with a unique key", repeat=False)
        return _record(found) if found else None

    def _claim_tick(self, task: str, tick: float, record: Record | None, now: float) -> bool:
        args: list[Any] = [task, repr(tick), repr(now), "0" if record is None else "1"]
        if record is not None:
            args += self._add_args(record)
        return bool(self._run("claim_tick", args, "claiming a periodic tick", repeat=False))

    def _ticks(self) -> dict[str, tuple[float, str | None, float]]:
        self._check_process()
        try:
            rows: dict[Any, Any] = self._r.hgetall(f"{self.prefix}:ticks")  # str: decode_responses
        except self._redis.RedisError as exc:
            raise self._error(exc, "reading") from exc
        out: dict[str, tuple[float, str | None, float]] = {}
        for task, value in rows.items():
            tick, job_id, claimed = (str(value).split(" ") + ["", "", "0"])[:3]
            out[str(task)] = (float(tick), job_id or None, float(claimed or 0.0))
        return out

    def _state(self, r: Record) -> list[str]:
        """The 11 tagged state values of a record (with the progress of a job running here)."""
        job = self._running.get(r.id)
        progress = message = None
        if job is not None:
            progress, message = job.progress, job.progress_message
        elif isinstance(r, RedisRecord):
            progress, message = r.progress, r.message
        return [_tag(r.status), _tag(r.attempts), _tag(r.eta), _tag(r.started_at), _tag(r.finished_at),
                _tag(r.result), _tag(r.error), _tag(r.traceback), _tag(r.owner), _tag(progress), _tag(message)]

    def _settle_args(self, r: Record) -> list[Any]:
        return [r.id, r.task, r.args, _tag(r.kwargs), repr(r.enqueued_at), r.queue, r.priority, *self._state(r)]

    def _save(self, record: Record) -> None:
        stored = self._run("save", [self.owner, *self._settle_args(record)], "recording a job")
        self._after_outcomes([record], [record.id, stored] if stored else [])

    def _after_outcomes(self, records: list[Record], discarded: list[str]) -> None:
        """After a write of outcomes: forget them as running here; note and log late ones."""
        with self._rlock:
            for r in records:
                self._running.pop(r.id, None)
                self._written.pop(r.id, None)
        for i in range(0, len(discarded), 2):
            jid, status = discarded[i], discarded[i + 1]
            stored = self._load(jid, None)
            if stored is None:
                continue
            logger.warning(
                "job %s (%s): the outcome this process recorded late was discarded; the job is %s in %s:"
                " this process's lease lapsed (no heartbeat reached Redis for %g s) and another worker took"
                " it over, so it may run (or have run) again (at-least-once delivery)",
                jid, stored.task, status, self.url, self.lease,
            )
            with self._rlock:
                self._discards[jid] = stored

    def _discarded_outcome(self, job: Job) -> Record | None:
        with self._rlock:
            return self._discards.pop(job.id, None)

    def _claim(
        self, settle: list[Record], owner: str, now: float, stop: Callable[[], bool], queue: str
    ) -> Record | None:
        token = uuid.uuid4().hex[:16]
        with self._rlock:
            failed = self._failed_tokens[:]
        args: list[Any] = [owner, repr(now), self._lease_ms, token, queue, "1" if stop() else "0", "0", len(failed),
                           *failed, len(settle)]
        for r in settle:
            args += self._settle_args(r)
        script = self._scripts["claim"]
        self._check_process()
        try:
            try:
                reply = script(keys=[self.prefix], args=args)
            except self._redis.ConnectionError as exc:
                if isinstance(exc, self._redis.AuthenticationError):
                    raise
                args[6] = "1"  # the same claim again: if the first ran, its job is the answer
                reply = script(keys=[self.prefix], args=args)
        except self._redis.RedisError as exc:
            with self._rlock:  # the next claim puts back what this one may have claimed
                self._failed_tokens = (self._failed_tokens + [token])[-_MAX_FAILED_TOKENS:]
            raise self._error(exc, "taking a job") from exc
        if failed:
            with self._rlock:
                self._failed_tokens = [t for t in self._failed_tokens if t not in failed]
        self._after_outcomes(settle, reply[0])
        if len(reply) < 3:
            return None
        self._start_heartbeat()
        return _record(reply[2])

    def _transition(self, job_id: str, from_status: Iterable[str], record: Record) -> bool:
        args = [job_id, ",".join(from_status), *self._state(record)]
        return bool(self._run("transition", args, "changing a job", repeat=False))

    def _take_over_one(self, job_id: str, owner: str, record: Record) -> bool:
        args = [job_id, owner, *self._state(record)]
        return bool(self._run("take_over", args, "taking over the jobs of a lapsed lease"))

    def _load(self, job_id: str, visible_after: float | None) -> RedisRecord | None:
        self._check_process()
        try:
            text = self._r.get(f"{self.prefix}:j:{job_id}")
        except self._redis.RedisError as exc:
            raise self._error(exc, "reading a job") from exc
        if not text:
            return None
        record = _parse(job_id, text)
        if visible_after is not None and record.finished_at is not None and record.finished_at <= visible_after:
            return None
        return record

    def _load_many(self, job_ids: list[str], finished_only: bool) -> list[Record]:
        self._check_process()
        if not job_ids:
            return []
        try:
            found = self._r.mget([f"{self.prefix}:j:{jid}" for jid in job_ids])
        except self._redis.RedisError as exc:
            raise self._error(exc, "reading jobs") from exc
        records: list[Record] = []
        for jid, text in zip(job_ids, found, strict=False):
            if text:
                record = _parse(jid, text)
                if not finished_only or record.status in FINISHED:
                    records.append(record)
        return records

    def _list(
        self, status: str | None, limit: int, offset: int, visible_after: float, queue: str | None = None
    ) -> list[Record]:
        """Newest inserted first: the insertion number orders jobs, as enqueue times would
        (a job queued again by ``requeue`` takes a new one, at the end of its line)."""
        flat = self._run("list", [status or "", limit, offset, repr(visible_after), queue or ""], "listing jobs")
        return [_record(r) for r in flat]

    def _count(self, visible_after: float, queue: str | None = None) -> dict[str, int]:
        flat = self._run("count", [repr(visible_after)], "counting jobs")
        counts: dict[str, int] = {}
        for field, value in zip(flat[::2], flat[1::2], strict=False):
            status, bar, name = field.partition("|")
            if (queue is None and not bar) or (queue is not None and bar and name == queue):
                counts[status] = int(value)
        return counts

    def _busy(self, statuses: Iterable[str], due_before: float | None, queue: str | None = None) -> int:
        due = "" if due_before is None else repr(due_before)
        return int(self._run("busy", [",".join(statuses), due, queue or ""], "counting jobs"))

    def _running_owners(self) -> set[str]:
        flat = self._run("owners", [], "reading the owners of running jobs")
        alive = {owner: bool(flag) for owner, flag in zip(flat[::2], flat[1::2], strict=False)}
        self._alive = alive
        return set(alive)

    def _owner_alive(self, owner: str) -> bool:
        """Alive while its lease key exists (renewed by its heartbeat): a lease, not a pid,
        so that it holds across hosts. Read with the owners, in the same script."""
        known = self._alive.get(owner)
        if known is not None:
            return known
        try:
            return bool(self._r.exists(f"{self.prefix}:l:{owner}"))
        except self._redis.RedisError as exc:
            raise self._error(exc, "reading a lease") from exc

    def _running_of(self, owner: str) -> list[Record]:
        return [_record(r) for r in self._run("running_of", [owner], "reading running jobs")]

    def _prune(self, finished_before: float, keep: int) -> None:
        self._run("prune", [repr(finished_before), keep], "forgetting old finished jobs")

    def _purge(self) -> int:
        return int(self._run("purge", [], "purging finished jobs", repeat=False))

    def _remove_waiting(self) -> list[Record]:
        return [_record(r) for r in self._run("remove_waiting", [], "dropping waiting jobs", repeat=False)]

    def _next_eta(self, queue: str | None = None) -> float | None:
        eta = self._run("next_eta", [queue or ""], "reading the next due time")
        return None if eta is None else float(eta)

    def _queue_counts(self) -> dict[str, dict[str, int]]:
        flat = self._run("queue_counts", [], "counting jobs by queue")
        return {flat[i]: {"queued": int(flat[i + 1]), "scheduled": int(flat[i + 2]), "running": int(flat[i + 3])}
                for i in range(0, len(flat), 4)}

    def _declare(self, owner: str, queues: tuple[str, ...], now: float) -> None:
        """``<prefix>:dq`` holds, per owner, when it last said which queues it consumes."""
        key = f"{self.prefix}:dq"
        self._check_process()
        try:
            if queues:
                self._r.hset(key, owner, json.dumps([now, list(queues)]))
            else:
                self._r.hdel(key, owner)
        except self._redis.RedisError as exc:
            raise self._error(exc, "declaring queues") from exc

    def _declared(self, seen_after: float) -> set[str]:
        key = f"{self.prefix}:dq"
        self._check_process()
        try:
            entries = self._r.hgetall(key)
            names: set[str] = set()
            stale = []
            for owner, text in entries.items():
                seen, queues = json.loads(text)
                if seen > seen_after:
                    names.update(queues)
                else:
                    stale.append(owner)
            if stale:  # gone quiet long ago (killed): nobody will forget them otherwise
                self._r.hdel(key, *stale)
        except self._redis.RedisError as exc:
            raise self._error(exc, "reading declared queues") from exc
        return names

    def _close(self) -> None:
        self._closing.set()
        self._beat_wake.set()
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: S110 - closing a broken connection
                pass
        for thread in (self._beat_thread, self._listen_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(2.0)
        self._pool.disconnect()

    # -- blocking wake-ups ------------------------------------------------------------------
    def _sleep(self, timeout: float, queue: str, kicks: int) -> int:
        """Block in Redis until a token for ``queue`` arrives (an enqueue in any process),
        :meth:`wake` pushes one to this owner's list, or ``timeout`` passes."""
        if timeout < 0.001 or self._woken or self._kicks != kicks or self._closing.is_set():
            return self._kicks
        self._check_process()
        with self._rlock:
            self._blocked += 1
        try:
            self._r.blpop([f"{self.prefix}:r:{queue}", f"{self.prefix}:w:{self.owner}"], timeout=timeout)
        except self._redis.RedisError as exc:
            raise self._error(exc, "waiting for jobs") from exc
        finally:
            with self._rlock:
                self._blocked -= 1
        return self._kicks

    def wake(self) -> None:
        super().wake()
        with self._rlock:
            blocked = self._blocked
        if blocked and not self._closing.is_set() and self._pid == os.getpid():
            key = f"{self.prefix}:w:{self.owner}"
            try:
                with self._r.pipeline(transaction=False) as pipe:
                    pipe.rpush(key, *["1"] * blocked)
                    pipe.expire(key, 60)
                    pipe.execute()
            except self._redis.RedisError:  # its BLPOP ends by its timeout (idle_wait) then
                pass

    # -- the heartbeat: leases and progress -----------------------------------------------
    def take(self, *args: Any, **kwargs: Any) -> Job | None:
        job = super().take(*args, **kwargs)
        if job is not None:
            with self._rlock:
                self._running[job.id] = job
        return job

    def _start_heartbeat(self) -> None:
        if self._beat_thread is not None or self._closing.is_set():
            return
        with self._rlock:
            if self._beat_thread is not None:
                return
            thread = threading.Thread(target=self._beat, name=f"memqueue-heartbeat[{self.namespace}]", daemon=True)
            self._beat_thread = thread
        thread.start()

    def _beat(self) -> None:
        """Renew this process's lease every lease/3, and write running jobs' progress.

        Runs however long a job runs: a live worker's jobs are never taken over. An
        outage is logged once, and its end once.
        """
        next_renew = 0.0
        failing: str | None = None
        while not self._closing.is_set():
            now = time.monotonic()
            try:
                if now >= next_renew:
                    had = self._run("renew", [self.owner, self._lease_ms], "renewing the lease")
                    next_renew = now + self.lease / 3
                    if not had and self._running:
                        logger.warning(
                            "the lease of process %d on %s had lapsed (no renewal reached Redis for %g s):"
                            " its running jobs may have been taken over by another worker; their outcome"
                            " here is discarded if so", self._pid, self.url, self.lease,
                        )
                self._write_progress()
                if failing is not None:
                    logger.warning("the heartbeat reaches %s again (%s)", self.url, failing)
                    failing = None
            except MemQueueError as exc:
                if failing is None:
                    failing = str(exc)
                    logger.error("the heartbeat cannot renew this process's lease: %s; it keeps trying", exc)
                next_renew = time.monotonic() + min(1.0, self.lease / 3)
            except Exception:  # pragma: no cover - a bug: the heartbeat must not die of it
                logger.exception("the heartbeat of %s failed", self.url)
            wait = max(0.0, next_renew - time.monotonic())
            if self._running:
                wait = min(wait, PROGRESS_INTERVAL)
            self._beat_wake.wait(wait)

    def _write_progress(self) -> None:
        with self._rlock:
            changed = []
            for jid, job in self._running.items():
                now = (job.progress, job.progress_message)
                if now[0] is not None and self._written.get(jid) != now:
                    changed.append((jid, now))
        if not changed:
            return
        args: list[Any] = [self.owner]
        for jid, (progress, message) in changed:
            args += [jid, repr(progress), _tag(message)]
        self._run("progress", args, "writing progress")
        with self._rlock:
            for jid, now in changed:
                if jid in self._running:
                    self._written[jid] = now

    def job_of(self, record: Record) -> Job:
        job = super().job_of(record)
        if isinstance(record, RedisRecord) and record.progress is not None and record.id not in self._running:
            try:
                job.set_progress(record.progress, record.message)
            except (TypeError, ValueError):  # pragma: no cover - only this module writes it
                pass
        return job

    # -- waiters: pub/sub -------------------------------------------------------------------
    def waiter(self, job: Job) -> threading.Event | None:
        event = super().waiter(job)
        if not isinstance(event, _PollingEvent):
            return event
        with self._wlock:
            self._watched.setdefault(job.id, []).append(event)
        if self._ensure_listener():
            # finished before the subscription started: nobody will publish it again
            try:
                if self._refresh_if_finished(job):
                    event.set()
            except MemQueueError:
                pass  # the event's own poll tries again
        return event

    def _ensure_listener(self) -> bool:
        """Start the pub/sub thread if need be; True once it is subscribed."""
        if self._closing.is_set() or self._pid != os.getpid():
            return False
        if self._listen_thread is None:
            with self._wlock:
                if self._listen_thread is None:
                    thread = threading.Thread(target=self._listen, name=f"memqueue-waiters[{self.namespace}]",
                                              daemon=True)
                    self._listen_thread = thread
                    thread.start()
        return self._subscribed.wait(1.0)

    def _listen(self) -> None:
        """Wake this process's waiters when any process finishes their job."""
        channel = f"{self.prefix}:done"
        failing: str | None = None
        failures = 0
        while not self._closing.is_set():
            try:
                if self._pubsub is None:
                    pubsub = self._r.pubsub()  # type: ignore[no-untyped-call]
                    self._pubsub = pubsub
                    pubsub.subscribe(channel)
                    while not self._closing.is_set():  # the confirmation
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "subscribe":
                            break
                    self._subscribed.set()
                    if failing is not None:
                        logger.warning("job waiters hear from %s again (%s)", self.url, failing)
                        failing, failures = None, 0
                    self._refresh_watched(None)  # finishes published while not listening
                message = self._pubsub.get_message(timeout=1.0)
                if message is not None and message["type"] == "message":
                    self._refresh_watched(message["data"])
                elif message is None:
                    self._forget_set_events()
            except Exception as exc:
                self._subscribed.clear()
                pubsub, self._pubsub = self._pubsub, None
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: S110 - closing a broken connection
                        pass
                if self._closing.is_set():
                    return
                failures += 1
                if failing is None:
                    failing = f"{type(exc).__name__}: {exc}"
                    logger.error("job waiters cannot listen to %s: %s; they poll every %g s until it works",
                                 self.url, self._error(exc, "listening") if not isinstance(exc, MemQueueError)
                                 else exc, self.waiter_poll_interval)
                self._closing.wait(min(5.0, 0.1 * 2 ** min(failures, 6)))

    def _refresh_watched(self, job_id: str | None) -> None:
        with self._wlock:
            if job_id is None:
                events = [e for es in self._watched.values() for e in es]
            else:
                events = list(self._watched.get(job_id, ()))
        for event in events:
            if not event.is_set() and self._refresh_if_finished(event.job):
                event.set()
        self._forget_set_events()

    def _forget_set_events(self) -> None:
        with self._wlock:
            for jid in [j for j, es in self._watched.items() if all(e.is_set() for e in es)]:
                del self._watched[jid]


# -- the scripts: the data layout --------------------------------------------------------------
# Every change of a job is one of these Lua scripts, atomic in Redis (the Python above
# reads as the store, this part as its data layout). Every script gets the store's
# key prefix ``P`` as ``KEYS[1]`` and builds its key names from it (all of one
# app's keys share a ``{hash tag}`` in the default prefix, so they live in one
# slot). The layout, for each app (prefix) on a server:
#
# ========================  ====================================================================
# ``P:j:<id>``               the job: a string, a JSON object of short text fields (below)
# ``P:seq``                  insertion counter (``i``): FIFO order and "newest first" listings
# ``P:qs``                   set of queue names ever used
# ``P:p:<queue>``            zset of the priorities that have waiting jobs in ``queue``
# ``P:q:<queue>:<prio>``     list of queued ids, newest at the head (LPUSH), claimed from the tail
# ``P:s:<queue>:<prio>``     zset of scheduled ids by eta
# ``P:x:<status>``           zset of ids by ``i`` for scheduled, running and the three final states
# ``P:fin``                  zset of finished ids by finished_at (result TTL, ``MEMQUEUE_MAX_FINISHED``)
# ``P:c``                    hash of counters: ``<status>`` and ``<status>|<queue>``
# ``P:o`` / ``P:h:<owner>``  owners holding running jobs / the ids each holds
# ``P:l:<owner>``            the owner's lease: exists while its heartbeat renews it (``PX``)
# ``P:r:<queue>``            wake-up tokens: an idle consumer blocks on it (``BLPOP``)
# ``P:w:<owner>``            a private wake-up list (``wake()`` ends this owner's ``BLPOP``)
# ``P:done`` (channel)       ids of jobs that just finished, for ``Job.wait()`` in any process
# ``P:dq``                   hash: owner -> [when, queues it consumes] (``declare_queues``)
# ========================  ====================================================================
#
# Job fields: ``t`` task, ``a`` args (JSON), ``k`` kwargs (JSON, absent for
# none), ``s`` status, ``n`` attempts, ``e`` enqueued_at, ``i`` insertion number,
# ``q`` queue, ``p`` priority, and while they have a value ``eta``, ``sa``
# started_at, ``fa`` finished_at, ``r`` result (JSON), ``er`` error, ``tb``
# traceback, ``o`` owner, ``ct`` claim token, ``pg``/``pm`` progress and its
# message. A queued job costs one string and one list entry, nothing more (one string, not a
# hash: Redis keeps a hash with a value over 64 bytes as a table, and arguments often are; a
# string of the same fields costs less than half of that). Every value is text, so numbers
# keep their exact digits through cjson.
#
# State values travel as ARGV strings tagged by their first character: ``n``
# is "no value" (the field is deleted), ``v<text>`` a value.

#: The helpers every script starts with.
PRELUDE = r"""
local P = KEYS[1]
local CNT = P .. ':c'
local FIN = P .. ':fin'
local OWNERS = P .. ':o'
local QUEUES = P .. ':qs'
local DONE = P .. ':done'
local FINISHED = {succeeded = true, failed = true, cancelled = true}
local STATE = {'s', 'n', 'eta', 'sa', 'fa', 'r', 'er', 'tb', 'o', 'pg', 'pm'}

local function jk(id) return P .. ':j:' .. id end
-- A job is one string: a JSON object of text fields (see the field names above).
local function get(id)
  local v = redis.call('GET', jk(id))
  if not v then return false end
  return cjson.decode(v)
end
local function put(id, h) redis.call('SET', jk(id), cjson.encode(h)) end
local function qk(q, p) return P .. ':q:' .. q .. ':' .. p end
local function sk(q, p) return P .. ':s:' .. q .. ':' .. p end
local function xk(s) return P .. ':x:' .. s end
local function pk(q) return P .. ':p:' .. q end
local function hk(o) return P .. ':h:' .. o end
local function rk(q) return P .. ':r:' .. q end

local function dec(v)
  if v == 'n' then return false end
  return string.sub(v, 2)
end

local function count(st, q, by)
  redis.call('HINCRBY', CNT, st, by)
  redis.call('HINCRBY', CNT, st .. '|' .. q, by)
end

-- Forget a priority level of queue q once nothing waits in it.
local function tidy(q, p)
  if redis.call('LLEN', qk(q, p)) == 0 and redis.call('ZCARD', sk(q, p)) == 0 then
    redis.call('ZREM', pk(q), p)
  end
end

-- Take id out of the indexes of its status st (popped: already popped from its list).
local function unindex(id, st, q, p, owner, popped)
  if st == 'queued' then
    if not popped then redis.call('LREM', qk(q, p), 1, id) end
    tidy(q, p)
  elseif st == 'scheduled' then
    redis.call('ZREM', sk(q, p), id)
    redis.call('ZREM', xk(st), id)
    tidy(q, p)
  elseif st == 'running' then
    redis.call('ZREM', xk(st), id)
    if owner then
      local h = hk(owner)
      redis.call('SREM', h, id)
      if redis.call('SCARD', h) == 0 then redis.call('SREM', OWNERS, owner) end
    end
  else
    redis.call('ZREM', xk(st), id)
    redis.call('ZREM', FIN, id)
  end
  count(st, q, -1)
end

-- Put id into the indexes of status st (front: at the claiming end of its list).
local function index(id, st, q, p, seq, eta, fa, owner, front)
  if st == 'queued' then
    if front then redis.call('RPUSH', qk(q, p), id) else redis.call('LPUSH', qk(q, p), id) end
    redis.call('ZADD', pk(q), p, p)
  elseif st == 'scheduled' then
    redis.call('ZADD', sk(q, p), eta, id)
    redis.call('ZADD', xk(st), seq, id)
    redis.call('ZADD', pk(q), p, p)
  elseif st == 'running' then
    redis.call('ZADD', xk(st), seq, id)
    redis.call('SADD', hk(owner), id)
    redis.call('SADD', OWNERS, owner)
  else
    redis.call('ZADD', xk(st), seq, id)
    redis.call('ZADD', FIN, fa, id)
  end
  count(st, q, 1)
end

-- An idle consumer of queue q blocks on its token list: one token per job, a few at most.
local function wake(q, n)
  local k = rk(q)
  for _ = 1, math.min(n, 16) do redis.call('LPUSH', k, '1') end
  redis.call('LTRIM', k, 0, 15)
end

-- Overwrite the state fields of job h with the 11 tagged values from ARGV[b]; returns h.
local function write_state(h, b)
  for i, f in ipairs(STATE) do
    local x = dec(ARGV[b + i - 1])
    if x then h[f] = x else h[f] = nil end
  end
  if h.s ~= 'running' then h.ct = nil end
  return h
end

-- A record for Python: {id, its JSON text}.
local function rec(id)
  return {id, redis.call('GET', jk(id))}
end

-- Record the outcome of a job owner ran, from the 18 ARGV values at b: id, task, args,
-- kwargs, enqueued_at, queue, priority, then the state. Inserted whole if the store
-- never had it (eager mode). Returns false when written, or the stored status when it is
-- a late outcome (the job is no longer this owner's: its lease lapsed, another took it).
local function settle(owner, b)
  local id = ARGV[b]
  local h = get(id)
  if not h then
    local seq = tostring(redis.call('INCR', P .. ':seq'))
    local q, p = ARGV[b + 5], ARGV[b + 6]
    h = {t = ARGV[b + 1], a = ARGV[b + 2], e = ARGV[b + 4], i = seq, q = q, p = p}
    local kw = dec(ARGV[b + 3])
    if kw then h.k = kw end
    local v = write_state(h, b + 7)
    put(id, v)
    redis.call('SADD', QUEUES, q)
    index(id, v.s, q, p, seq, v.eta, v.fa, v.o, false)
    if FINISHED[v.s] then redis.call('PUBLISH', DONE, id) end
    return false
  end
  if h.s ~= 'running' or h.o ~= owner then
    -- the very outcome written before (a write repeated after its reply was lost) is no late one
    if h.s == dec(ARGV[b + 7]) and (h.n or false) == dec(ARGV[b + 8]) and (h.sa or false) == dec(ARGV[b + 10])
        and (h.fa or false) == dec(ARGV[b + 11]) and (h.eta or false) == dec(ARGV[b + 9]) then
      return false
    end
    return h.s
  end
  local q, p, seq = h.q, h.p, h.i
  unindex(id, 'running', q, p, owner, false)
  local v = write_state(h, b + 7)
  put(id, v)
  index(id, v.s, q, p, seq, v.eta, v.fa, v.o, false)
  if FINISHED[v.s] then redis.call('PUBLISH', DONE, id) end
  if v.s == 'scheduled' then wake(q, 1) end
  return false
end

-- Delete a finished (or any) job and its index entries (and its unique key's entry).
local function forget(id)
  local h = get(id)
  if h then
    unindex(id, h.s, h.q, h.p, h.o, false)
    if h.uk and redis.call('HGET', P .. ':uk', h.uk) == id then redis.call('HDEL', P .. ':uk', h.uk) end
  else
    redis.call('ZREM', FIN, id)
  end
  redis.call('DEL', jk(id))
end

-- Delete the jobs that finished at or before t (the result TTL).
local function prune_before(t)
  local ids = redis.call('ZRANGEBYSCORE', FIN, '-inf', t)
  for _, id in ipairs(ids) do forget(id) end
  return #ids
end

local function queues(q)
  if q ~= '' then return {q} end
  return redis.call('SMEMBERS', QUEUES)
end
"""

#: Add jobs: ARGV = maxsize, n, then 9 values per job (id, task, args, kwargs, status,
#: enqueued_at, eta, queue, priority). Returns how many were added (a prefix of them):
#: the waiting jobs of the app stay within maxsize exactly, across every enqueuer. An id
#: the store holds already counts as added (a repeated call after a lost reply).
INSERT = PRELUDE + r"""
local maxsize, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local room = n
if maxsize > 0 then
  local waiting = tonumber(redis.call('HGET', CNT, 'queued') or 0) + tonumber(redis.call('HGET', CNT, 'scheduled') or 0)
  room = math.max(0, math.min(n, maxsize - waiting))
end
local woken = {}
for i = 0, room - 1 do
  local b = 3 + i * 9
  local id = ARGV[b]
  if redis.call('EXISTS', jk(id)) == 0 then
    local seq = tostring(redis.call('INCR', P .. ':seq'))
    local st, q, p = ARGV[b + 4], ARGV[b + 7], ARGV[b + 8]
    local h = {t = ARGV[b + 1], a = ARGV[b + 2], s = st, n = '0', e = ARGV[b + 5], i = seq, q = q, p = p}
    local kw = dec(ARGV[b + 3])
    if kw then h.k = kw end
    local eta = dec(ARGV[b + 6])
    if eta then h.eta = eta end
    put(id, h)
    if not woken[q] then redis.call('SADD', QUEUES, q) end
    index(id, st, q, p, seq, eta, false, false, false)
    woken[q] = (woken[q] or 0) + 1
  end
end
for q, c in pairs(woken) do wake(q, c) end
return room
"""

#: Record finished jobs and claim the next due one of a queue, in one step.
#: ARGV = owner, now, lease ms, claim token, queue, stop (1/0), repeated (1/0),
#: nfailed, the tokens of earlier claims whose reply never came, nsettle, then 18
#: values per job to record (see settle). Returns {discarded, id, record before the
#: claim}: discarded = {id, stored status, ...} of late outcomes not recorded.
CLAIM = PRELUDE + r"""
local owner, now, lease, token, queue = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local stop, repeated = ARGV[6] == '1', ARGV[7] == '1'
local nf = tonumber(ARGV[8])
local b = 9
if nf > 0 then
  -- Jobs claimed by a call whose reply never came never ran: they go back to the
  -- claiming end of their queue, their attempt not counted.
  local failed = {}
  for i = 0, nf - 1 do failed[ARGV[b + i]] = true end
  for _, id in ipairs(redis.call('SMEMBERS', hk(owner))) do
    local h = get(id)
    if h and h.ct and failed[h.ct] then
      unindex(id, 'running', h.q, h.p, owner, false)
      h.s, h.n, h.o, h.sa, h.ct = 'queued', tostring(math.max(0, tonumber(h.n) - 1)), nil, nil, nil
      put(id, h)
      index(id, 'queued', h.q, h.p, h.i, false, false, false, true)
      wake(h.q, 1)
    end
  end
  b = b + nf
end
local ns = tonumber(ARGV[b])
b = b + 1
local discarded = {}
for _ = 1, ns do
  local st = settle(owner, b)
  if st then
    discarded[#discarded + 1] = ARGV[b]
    discarded[#discarded + 1] = st
  end
  b = b + 18
end
if stop then return {discarded} end
redis.call('SET', P .. ':l:' .. owner, now, 'PX', lease)
if repeated then
  -- this call was sent before and its reply lost: the job it claimed then is the answer
  for _, id in ipairs(redis.call('SMEMBERS', hk(owner))) do
    local h = get(id)
    if h and h.ct == token then
      h.n, h.s, h.o, h.sa, h.ct = tostring(tonumber(h.n) - 1), 'queued', nil, nil, nil
      return {discarded, id, {id, cjson.encode(h)}}
    end
  end
end
local prios = redis.call('ZREVRANGE', pk(queue), 0, -1)
for _, p in ipairs(prios) do
  while true do
    local id, popped = false, false
    local due = redis.call('ZRANGEBYSCORE', sk(queue, p), '-inf', now, 'WITHSCORES', 'LIMIT', 0, 2)
    if #due > 0 then
      id = due[1]
      if #due > 2 and due[4] == due[2] then
        -- equal etas: the first inserted goes first
        local best = false
        for _, t in ipairs(redis.call('ZRANGEBYSCORE', sk(queue, p), due[2], due[2])) do
          local s = tonumber(get(t).i)
          if not best or s < best then best, id = s, t end
        end
      end
    else
      id = redis.call('RPOP', qk(queue, p))
      popped = true
    end
    if not id then break end
    local r = rec(id)
    if r[2] then
      local h = cjson.decode(r[2])
      unindex(id, h.s, queue, p, false, popped)
      h.s, h.n, h.sa, h.o, h.ct, h.eta = 'running', tostring(tonumber(h.n or '0') + 1), now, owner, token, nil
      put(id, h)
      index(id, 'running', queue, p, h.i, false, false, owner, false)
      return {discarded, id, r}
    end
    if not popped then redis.call('ZREM', sk(queue, p), id) end
  end
  tidy(queue, p)
end
-- nothing due: the tokens left are stale (an enqueue after this script adds a new one)
redis.call('DEL', rk(queue))
return {discarded}
"""

#: Record one outcome: ARGV = owner, then 18 values (see settle). Returns false or the stored status.
SAVE = PRELUDE + r"""
return settle(ARGV[1], 2)
"""

#: Cancel or requeue: ARGV = id, from statuses (comma-separated), 11 state values. 1 if done.
TRANSITION = PRELUDE + r"""
local id = ARGV[1]
local h = get(id)
if not h or not string.find(',' .. ARGV[2] .. ',', ',' .. h.s .. ',', 1, true) then return 0 end
local q, p, seq = h.q, h.p, h.i
unindex(id, h.s, q, p, h.o, false)
local v = write_state(h, 3)
if v.s == 'queued' then
  seq = tostring(redis.call('INCR', P .. ':seq'))  -- queued again: a new place, at the end of the line
  v.i = seq
end
put(id, v)
index(id, v.s, q, p, seq, v.eta, v.fa, v.o, false)
if FINISHED[v.s] then redis.call('PUBLISH', DONE, id) end
if v.s == 'queued' or v.s == 'scheduled' then wake(q, 1) end
return 1
"""

#: Take over a job of an owner whose lease lapsed: ARGV = id, owner, 11 state values.
#: Conditional on the job still running for that owner, so two reclaimers never both take it.
TAKE_OVER = PRELUDE + r"""
local id, owner = ARGV[1], ARGV[2]
local h = get(id)
if not h or h.s ~= 'running' or h.o ~= owner then return 0 end
local q, p, seq = h.q, h.p, h.i
unindex(id, 'running', q, p, owner, false)
local v = write_state(h, 3)
put(id, v)
index(id, v.s, q, p, seq, v.eta, v.fa, v.o, true)
if FINISHED[v.s] then redis.call('PUBLISH', DONE, id) end
if v.s == 'queued' or v.s == 'scheduled' then wake(q, 1) end
return 1
"""

#: Jobs newest inserted first: ARGV = status ('' all), limit, offset, visible_after, queue ('' all).
LIST = PRELUDE + r"""
local status, limit, offset, queue = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[5]
prune_before(ARGV[4])
local want = offset + limit
local found = {}
local function add(id, seq)
  if queue == '' or get(id).q == queue then found[#found + 1] = {tonumber(seq), id} end
end
if status == '' or status == 'queued' then
  for _, q in ipairs(queues(queue)) do
    for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
      for _, id in ipairs(redis.call('LRANGE', qk(q, p), 0, want - 1)) do
        add(id, get(id).i)
      end
    end
  end
end
for _, st in ipairs({'scheduled', 'running', 'succeeded', 'failed', 'cancelled'}) do
  if status == '' or status == st then
    local stop = want - 1
    if queue ~= '' then stop = -1 end  -- filtered by queue: look at every one
    local z = redis.call('ZREVRANGE', xk(st), 0, stop, 'WITHSCORES')
    for i = 1, #z, 2 do add(z[i], z[i + 1]) end
  end
end
table.sort(found, function(x, y) return x[1] > y[1] end)
local out = {}
for i = offset + 1, math.min(#found, want) do out[#out + 1] = rec(found[i][2]) end
return out
"""

#: The counters (after forgetting jobs past the result TTL): ARGV = visible_after.
COUNT = PRELUDE + r"""
prune_before(ARGV[1])
return redis.call('HGETALL', CNT)
"""

#: How many jobs have one of the statuses: ARGV = statuses (comma-separated),
#: due_before ('' for none: every scheduled job counts), queue ('' all).
BUSY = PRELUDE + r"""
local due, queue = ARGV[2], ARGV[3]
local total = 0
for st in string.gmatch(ARGV[1], '[^,]+') do
  if st == 'scheduled' and due ~= '' then
    for _, q in ipairs(queues(queue)) do
      for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
        total = total + redis.call('ZCOUNT', sk(q, p), '-inf', due)
      end
    end
  else
    local f = st
    if queue ~= '' then f = st .. '|' .. queue end
    total = total + tonumber(redis.call('HGET', CNT, f) or 0)
  end
end
return total
"""

#: The earliest eta of a scheduled job: ARGV = queue ('' all). A string, or false.
NEXT_ETA = PRELUDE + r"""
local best = false
for _, q in ipairs(queues(ARGV[1])) do
  for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
    local z = redis.call('ZRANGE', sk(q, p), 0, 0, 'WITHSCORES')
    if #z > 0 and (not best or tonumber(z[2]) < tonumber(best)) then best = z[2] end
  end
end
return best
"""

#: Owners holding running jobs, each with 1 if its lease is alive: {owner, 1|0, ...}.
OWNERS = PRELUDE + r"""
local out = {}
for _, o in ipairs(redis.call('SMEMBERS', OWNERS)) do
  out[#out + 1] = o
  out[#out + 1] = redis.call('EXISTS', P .. ':l:' .. o)
end
return out
"""

#: The running jobs of an owner: ARGV = owner.
RUNNING_OF = PRELUDE + r"""
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', hk(ARGV[1]))) do
  local h = get(id)
  if h and h.o == ARGV[1] then out[#out + 1] = {id, cjson.encode(h)} end
end
return out
"""

#: Forget finished jobs: ARGV = finished_before, keep (the newest ``keep`` stay).
PRUNE = PRELUDE + r"""
local n = prune_before(ARGV[1])
local keep = tonumber(ARGV[2])
local total = redis.call('ZCARD', FIN)
if total > keep then
  for _, id in ipairs(redis.call('ZRANGE', FIN, 0, total - keep - 1)) do forget(id) end
  n = n + total - keep
end
return n
"""

#: Forget every finished job; returns how many.
PURGE = PRELUDE + r"""
local ids = redis.call('ZRANGE', FIN, 0, -1)
for _, id in ipairs(ids) do forget(id) end
return #ids
"""

#: Delete every waiting job and return them, oldest inserted first.
REMOVE_WAITING = PRELUDE + r"""
local found = {}
for _, q in ipairs(redis.call('SMEMBERS', QUEUES)) do
  for _, p in ipairs(redis.call('ZRANGE', pk(q), 0, -1)) do
    local ids = redis.call('LRANGE', qk(q, p), 0, -1)
    for _, id in ipairs(redis.call('ZRANGE', sk(q, p), 0, -1)) do ids[#ids + 1] = id end
    for _, id in ipairs(ids) do
      local r = rec(id)
      if r[2] then
        local h = cjson.decode(r[2])
        found[#found + 1] = {tonumber(h.i), r}
        if h.s == 'scheduled' then redis.call('ZREM', xk('scheduled'), id) end
        count(h.s, q, -1)
      end
      redis.call('DEL', jk(id))
    end
    redis.call('DEL', qk(q, p), sk(q, p))
    redis.call('ZREM', pk(q), p)
  end
end
table.sort(found, function(x, y) return x[1] < y[1] end)
local out = {}
for i, f in ipairs(found) do out[i] = f[2] end
return out
"""

#: Counts of waiting and running jobs by queue: {queue, queued, scheduled, running, ...}.
QUEUE_COUNTS = PRELUDE + r"""
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', QUEUES)) do
  out[#out + 1] = q
  for _, st in ipairs({'queued', 'scheduled', 'running'}) do
    out[#out + 1] = tonumber(redis.call('HGET', CNT, st .. '|' .. q) or 0)
  end
end
return out
"""

#: Renew the owner's lease: ARGV = owner, lease ms. Returns 0 if it had lapsed.
RENEW = PRELUDE + r"""
local k = P .. ':l:' .. ARGV[1]
local had = redis.call('EXISTS', k)
redis.call('SET', k, '1', 'PX', ARGV[2])
return had
"""

#: Progress of running jobs: ARGV = owner, then id, progress, message (tagged) per job.
PROGRESS = PRELUDE + r"""
local owner = ARGV[1]
for b = 2, #ARGV, 3 do
  local h = get(ARGV[b])
  if h and h.s == 'running' and h.o == owner then
    h.pg, h.pm = ARGV[b + 1], dec(ARGV[b + 2]) or nil
    put(ARGV[b], h)
  end
end
return 1
"""

#: Add one job from 11 ARGV values at b (those of INSERT, then its unique key and its
#: tick, tagged); returns its id. Shared by the two scripts below.
_ADD_ONE = r"""
local function add_one(b)
  local id = ARGV[b]
  local seq = tostring(redis.call('INCR', P .. ':seq'))
  local st, q, p = ARGV[b + 4], ARGV[b + 7], ARGV[b + 8]
  local h = {t = ARGV[b + 1], a = ARGV[b + 2], s = st, n = '0', e = ARGV[b + 5], i = seq, q = q, p = p}
  local kw = dec(ARGV[b + 3])
  if kw then h.k = kw end
  local eta = dec(ARGV[b + 6])
  if eta then h.eta = eta end
  local uk = dec(ARGV[b + 9])
  if uk then h.uk = uk end
  local tk = dec(ARGV[b + 10])
  if tk then h.tk = tk end
  put(id, h)
  redis.call('SADD', QUEUES, q)
  index(id, st, q, p, seq, eta, false, false, false)
  wake(q, 1)
  return id
end
"""

#: Add a job unless a live job holds its unique key: ARGV = full (1/0), then the 11
#: values of add_one. ``P:uk`` maps each key to the job that took it last (forget()
#: drops the entry with its job). Returns the holder's record, the new job's, or false
#: (no holder, and full).
INSERT_UNIQUE = PRELUDE + _ADD_ONE + r"""
local UK = P .. ':uk'
local key = dec(ARGV[11])
local holder = redis.call('HGET', UK, key)
if holder then
  local h = get(holder)
  if h and (h.s == 'queued' or h.s == 'scheduled' or h.s == 'running') then return rec(holder) end
end
if ARGV[1] == '1' then return false end
local id = add_one(2)
redis.call('HSET', UK, key, id)
return rec(id)
"""

#: Claim a periodic task's tick: ARGV = task, tick, now, has job (1/0), then the 11
#: values of add_one. ``P:ticks`` keeps each task's last claimed tick as
#: "<tick> <job id or ''> <claimed at>", after its job is gone. 1 if claimed, 0 if a
#: tick at or after this one was claimed already (nothing written).
CLAIM_TICK = PRELUDE + _ADD_ONE + r"""
local TICKS = P .. ':ticks'
local task, tick, now = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', TICKS, task)
if cur and tonumber(string.match(cur, '^(%S+)')) >= tonumber(tick) then return 0 end
local id = ''
if ARGV[4] == '1' then id = add_one(5) end
redis.call('HSET', TICKS, task, tick .. ' ' .. id .. ' ' .. now)
return 1
"""

SCRIPTS = {
    "insert_unique": INSERT_UNIQUE,
    "claim_tick": CLAIM_TICK,
    "insert": INSERT,
    "claim": CLAIM,
    "save": SAVE,
    "transition": TRANSITION,
    "take_over": TAKE_OVER,
    "list": LIST,
    "count": COUNT,
    "busy": BUSY,
    "next_eta": NEXT_ETA,
    "owners": OWNERS,
    "running_of": RUNNING_OF,
    "prune": PRUNE,
    "purge": PURGE,
    "remove_waiting": REMOVE_WAITING,
    "queue_counts": QUEUE_COUNTS,
    "renew": RENEW,
    "progress": PROGRESS,
}

__all__ = ["DEFAULT_LEASE", "OPTIONS", "RedisRecord", "RedisStorage", "open_redis"]
