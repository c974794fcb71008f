"""The Redis store's connections, its scripts, and its errors.

Every command of the store goes through a :class:`Client`, and every failure
leaves it as a :class:`RedisUnavailable` that says why (unreachable, no answer
in time, TLS, a failover under way) or a :class:`RedisCredentialsRefused` (a
wrong password, an unknown user, none given to a server that needs one, a user
without the rights the store needs), naming the server with its password
replaced by ``***``. redis-py is imported when a client is made, never by
importing this module: ``flask_memqueue.RedisUnavailable`` costs no driver.

**Where the master is** is a :class:`Locator`'s business: one server (a
redis-py pool from the URL), Sentinel (redis-py's ``SentinelConnectionPool``:
each new connection asks the sentinels, so a promoted replica is found
without a restart), or Cluster (redis-py's ``RedisCluster`` finds the node
that holds the prefix's hash slot; after a ``MOVED`` or a lost node it is
asked again). Every key of the store shares that slot, so every command of a
Cluster store goes to that one node.

**The fast path.** The store's hot commands (a script per enqueue and per
claim, a ``BLPOP`` per idle wait) are written to a connection of redis-py's
pool and read back with redis-py's own parser (``send_packed_command``,
``read_response``), skipping what ``Redis.execute_command`` adds around every
command: a pool checkout and release, retries, callbacks. Idle connections
wait in a deque (append and pop are atomic): a thread takes one, uses it
alone, and puts it back.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ...exceptions import ConfigurationError, StorageError, StorageRefused
from .options import Target
from .scripts import WRITES, library, sources

if TYPE_CHECKING:
    import redis as redis_py


class RedisUnavailable(StorageError):
    """The Redis server cannot be reached or refuses this client (down, unreachable,
    wrong password, TLS handshake failed, no answer in time, a failover under way,
    or fewer replicas than ``wait_replicas`` confirmed a write in time).

    The message names the server's URL with its password replaced by ``***``,
    and says which of those it was. Nothing the failing call asked for was
    done, except that an enqueue whose answer was lost may still have been
    queued (the command reached Redis, the reply did not come back, or the
    replicas did not confirm it in time).
    """


class RedisCredentialsRefused(RedisUnavailable, StorageRefused):
    """The Redis server refused this app's credentials: a wrong password or user name,
    no password given to a server that needs one, or an ACL user without the
    commands the store runs.

    A :class:`RedisUnavailable` (routes answer 503) and a
    :class:`~flask_memqueue.StorageRefused`: a configuration error, not an
    outage, so ``flask memqueue worker`` says so once and exits with an error
    instead of retrying for ever.
    """


#: What Redis (or redis-py) says when it refuses this client's credentials or rights.
_REFUSALS = ("WRONGPASS", "NOAUTH", "NOPERM", "unauthenticated", "invalid username-password",
             "Authentication required", "invalid password")
#: Answers of a server that can not take writes now, but will (a failover, a restart).
_TRANSIENT = {
    "READONLY": "the server is a replica now (a failover happened; the next try asks for the new master)",
    "MOVED": "the cluster moved the store's hash slot to another node (the next try asks the cluster again)",
    "CLUSTERDOWN": "the cluster is down or failing over",
    "TRYAGAIN": "the cluster is moving the store's slot",
    "MASTERDOWN": "the replica lost its master (a failover is under way)",
    "LOADING": "the server is loading its data after a restart",
}


def _pack(args: tuple[Any, ...] | list[Any], head: bytes = b"", heads: int = 0) -> bytes:
    """A command in the Redis protocol; every argument is str, int or bytes. ``head``: the
    first ``heads`` arguments, packed already (a call's name and key)."""
    out = [b"*%d\r\n%b" % (len(args) + heads, head)]
    for a in args:
        data = a.encode() if a.__class__ is str else a if a.__class__ is bytes else str(a).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _head(*args: Any) -> bytes:
    """Arguments packed for :func:`_pack`'s ``head`` (without the count)."""
    return _pack(args).partition(b"\r\n")[2]


class Locator:
    """Where one store's master is: its redis-py connection pool now.

    :param target: the URL's kind, hosts and credentials (``options.Target``).
    :param kwargs: redis-py connection options.
    :param prefix: the store's key prefix (a Cluster store's keys are in its slot).
    """

    def __init__(self, target: Target, kwargs: dict[str, Any], prefix: str) -> None:
        import redis

        self.target = target
        self._kwargs = kwargs
        self._prefix = prefix
        self._lock = threading.Lock()
        self._pool: redis_py.ConnectionPool | None = None
        self._cluster: Any = None
        self._sentinel: Any = None
        #: Bumped when the pool is replaced: connections of an older one are not reused.
        self.generation = 0
        self._redis = redis
        if target.kind == "single":
            # the query string holds the store's options: they come in as ``kwargs``
            self._pool = redis.ConnectionPool.from_url(target.url.partition("?")[0], **kwargs)

    @property
    def pool(self) -> redis_py.ConnectionPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                pool = self._pool
                if pool is None:
                    pool = self._pool = self._make_pool()
                    self.generation += 1
        return pool

    def _credentials(self) -> dict[str, Any]:
        out = dict(self._kwargs)
        t = self.target
        if t.username is not None:
            out.setdefault("username", t.username)
        if t.password is not None:
            out.setdefault("password", t.password)
        return out

    def _make_pool(self) -> redis_py.ConnectionPool:
        t = self.target
        if t.kind == "sentinel":
            from redis.sentinel import Sentinel, SentinelConnectionPool

            if self._sentinel is None:
                # no retries with backoff inside redis-py (its default: 16 s for sentinels that are down)
                asking = {"retry": self._kwargs.get("retry"), **t.sentinel}
                self._sentinel = _untyped(Sentinel)(list(t.hosts), sentinel_kwargs=asking)
            pool: redis_py.ConnectionPool = _untyped(SentinelConnectionPool)(
                t.service, self._sentinel, db=t.db, **self._credentials())
            return pool
        # cluster: the node that holds the prefix's slot, found by redis-py's RedisCluster
        from redis.cluster import ClusterNode, RedisCluster

        redis = self._redis
        try:
            if self._cluster is None:
                kwargs = {k: v for k, v in self._credentials().items() if k not in ("retry", "protocol")}
                nodes = [_untyped(ClusterNode)(h, p) for h, p in t.hosts]
                self._cluster = RedisCluster(startup_nodes=nodes, **kwargs)
            else:
                self._cluster.nodes_manager.initialize()
            node = self._cluster.get_node_from_key(self._prefix)
        except redis.RedisError:
            raise
        except Exception as exc:  # RedisClusterException: no node reachable, or no slot coverage
            raise redis.ConnectionError(f"the cluster's nodes can not be reached or agree on no master: {exc}") from exc
        if node is None:
            raise redis.ConnectionError("no node of the cluster holds the store's hash slot")
        found: redis_py.ConnectionPool = redis.ConnectionPool(host=node.host, port=node.port, **self._credentials())
        return found

    def stale(self) -> None:
        """A command met a node that is no master (any more) or a lost connection: a Cluster
        store asks the cluster again on its next command. (Sentinel and single-server
        connections find their master again by themselves when they reconnect.)"""
        if self.target.kind != "cluster":
            return
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.disconnect()

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            cluster, self._cluster = self._cluster, None
        if pool is not None:
            pool.disconnect()
        if cluster is not None:
            try:
                cluster.close()
            except Exception:  # noqa: S110 - closing a broken connection
                pass


class Client:
    """One store's connections, and its scripts registered on them.

    :param target: where the server is (``options.Target``: one server, Sentinel, Cluster).
    :param shown: the URL as people see it (password redacted).
    :param key: the config key the URL came from, for messages.
    :param connect: redis-py connection options (checked by ``options.py``).
    :param prefix: the store's key prefix, ``KEYS[1]`` of every script.
    :param check: called before every command (the store refuses use after fork).
    :param wait_replicas: replicas that must confirm every write (``WAIT``), 0 for none.
    :param wait_timeout: seconds a write waits for them.
    """

    def __init__(self, target: Target | str, shown: str, key: str, connect: Mapping[str, Any], prefix: str,
                 check: Callable[[], None], *, wait_replicas: int = 0, wait_timeout: float = 1.0) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if isinstance(target, str):
            target = Target("single", target)
        #: redis-py itself, for its exception classes.
        self.redis = redis
        self.url = shown
        self.key = key
        self.prefix = prefix
        self.target = target
        self._check = check
        kwargs: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, **connect}
        # No retries inside redis-py: a repeated claim could claim twice. The store
        # repeats what is safe to repeat itself (every script is written so).
        kwargs["retry"] = Retry(NoBackoff(), 0)
        kwargs.update(decode_responses=True, protocol=2, health_check_interval=0)
        self.socket_timeout = float(kwargs["socket_timeout"])
        try:
            self.locator = Locator(target, kwargs, prefix)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{key}: not a Redis URL redis-py can use ({exc}): {shown!r}") from None
        password = target.password if target.kind != "single" else unquote(urlsplit(target.url).password or "")
        self._password = password or str(kwargs.get("password") or "")
        self._secrets = [s for s in (self._password, str(target.sentinel.get("password") or "")) if s]
        self._no_password = not self._password
        self._idle: collections.deque[Any] = collections.deque()
        self._generation = -1
        self.wait_replicas = wait_replicas
        self._wait = ("WAIT", wait_replicas, int(wait_timeout * 1000))
        self._wait_timeout = wait_timeout
        self._sources = sources()
        #: Each script's SHA1 (EVALSHA; loaded on first use, and again after a restart or failover).
        self.shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in self._sources.items()}  # noqa: S324
        self._library, self._functions = library()
        # Each call's first arguments, packed once: FCALL <function> 1 <prefix> / EVALSHA <sha> 1 <prefix>.
        self._fcall_heads = {n: _head("FCALL", f, 1, prefix) for n, f in self._functions.items()}
        self._eval_heads = {n: _head("EVALSHA", sha, 1, prefix) for n, sha in self.shas.items()}
        #: Redis functions (FCALL) when the server has them (Redis 7), else one script per call;
        #: None until the first call tells.
        self.fcall: bool | None = None
        self._r: redis_py.Redis | None = None
        self._r_generation = -1

    @property
    def r(self) -> redis_py.Redis:
        """A redis-py client on the master's pool now (for pub/sub and the rare command)."""
        pool = self.locator.pool
        if self._r is None or self._r_generation != self.locator.generation:
            self._r = self.redis.Redis(connection_pool=pool)
            self._r_generation = self.locator.generation
        return self._r

    # -- errors --------------------------------------------------------------------------------
    def error(self, exc: BaseException, doing: str) -> StorageError:
        """A :class:`RedisUnavailable` that says why, or a :class:`StorageError`; the password never in it."""
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        where = f"Redis {self.url} ({self.key}): {doing} failed"
        if self._refused(exc, text):
            return RedisCredentialsRefused(f"{where}: {self._refusal(text)}")
        outage = self._outage(exc, text)
        if outage is None:
            return StorageError(f"{where}: {type(exc).__name__}: {text}")
        return RedisUnavailable(f"{where}: {outage}")

    def _refusal(self, text: str) -> str:
        """Why the server refused this client, and what to change."""
        if "NOPERM" in text:
            return ("the server refused this user's commands (an ACL user needs the rights to run scripts,"
                    f" +@scripting, and to the keys of the store's prefix): {text}")
        if self._no_password and "WRONGPASS" not in text:
            return ("the server refused the credentials: it needs a password and none was given (write it in"
                    f" the URL, redis://:password@host:6379/0, or in MEMQUEUE_STORAGE_OPTIONS): {text}")
        return f"the server refused the credentials (wrong password or user name): {text}"

    def _refused(self, exc: BaseException, text: str) -> bool:
        if isinstance(exc, self.redis.AuthenticationError):
            return True
        return isinstance(exc, self.redis.RedisError) and any(word in text for word in _REFUSALS)

    def _outage(self, exc: BaseException, text: str) -> str | None:
        """Why the server cannot be used now, or None for an error that is not an outage."""
        r = self.redis
        lowered = text.lower()
        tls = self.url.startswith("rediss:")
        if tls and isinstance(exc, (r.ConnectionError, r.TimeoutError)) and "connecting" in lowered:
            # a TLS client talking to a plain port waits for a handshake that never comes
            return f"the TLS connection failed (does the server speak TLS on this port, with this CA?): {text}"
        if isinstance(exc, r.TimeoutError):
            return f"no answer in time (the server is stopped, overloaded, or the network is cut): {text}"
        if isinstance(exc, r.ConnectionError):
            if "ssl" in lowered or "tls" in lowered or "certificate" in lowered:
                return f"the TLS connection failed: {text}"
            if "master" in lowered and self.target.kind == "sentinel":
                said = text.split(" : <", 1)[0]  # redis-py appends the repr of every sentinel client
                return (f"the sentinels name no reachable master (the sentinels are down or unreachable,"
                        f" or a failover is under way): {said}")
            return f"the server is unreachable: {text}"
        transient = _transient(exc)
        if transient is not None:
            return f"{_TRANSIENT[transient]}: {text}"
        return None

    # -- the fast path ----------------------------------------------------------------------------
    def _connection(self) -> tuple[Any, Any]:
        """An idle connection and the pool it came from."""
        pool = self.locator.pool
        if self._generation != self.locator.generation:
            self._generation = self.locator.generation
            self._idle.clear()
        try:
            return self._idle.pop()  # type: ignore[no-any-return]
        except IndexError:
            return pool.get_connection(), pool

    def _exchange(self, data: bytes, replies: int, timeout: float | None = None) -> list[Any]:
        """Send ``data`` (``replies`` commands) on an idle connection and read every reply;
        an error reply is returned as its exception (the connection stays in step)."""
        conn, pool = self._connection()
        generation = self._generation
        ResponseError = self.redis.ResponseError
        try:
            conn.send_packed_command((data,), check_health=False)
            out: list[Any] = []
            for n in range(replies, 0, -1):
                try:
                    if timeout is None or n > 1:
                        out.append(conn.read_response(disconnect_on_error=True))
                    else:  # the last reply may take ``timeout`` (a BLPOP)
                        out.append(conn.read_response(timeout=timeout, disconnect_on_error=True))
                except ResponseError as exc:
                    out.append(exc)
        except BaseException as exc:
            conn.disconnect()
            try:
                pool.release(conn)  # it reconnects when the pool hands it out again
            except Exception:  # noqa: S110 - the pool may be closed (a Cluster node replaced)
                pass
            if isinstance(exc, (ValueError, OSError, AttributeError)):  # its socket closed under it (close())
                raise self.redis.ConnectionError(f"the connection was closed: {exc}") from exc
            raise
        if generation == self._generation:
            self._idle.append((conn, pool))
        return out

    def command(self, doing: str, *args: Any) -> Any:
        """One command on the fast path, its failure named; a stale node is asked once more."""
        self._check()
        data = _pack(args)
        try:
            return self._one(data)
        except self.redis.RedisError as exc:
            if not self.retriable(exc, True):
                raise self.error(exc, doing) from exc
        try:
            return self._one(data)
        except self.redis.RedisError as exc:
            raise self.error(exc, doing) from exc

    def commands(self, doing: str, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several read-only commands in one round trip (pipelined), their replies in order;
        a stale node is asked once more, as by :meth:`command`. Only for commands safe to repeat."""
        self._check()
        if not commands:
            return []
        data = b"".join(_pack(c) for c in commands)
        for attempt in (1, 2):
            try:
                replies = self._exchange(data, len(commands))
            except self.redis.RedisError as exc:
                if attempt == 2 or not self.retriable(exc, True):
                    raise self.error(exc, doing) from exc
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    if attempt == 1 and self.retriable(reply, True):
                        break
                    raise self.error(reply, doing) from reply
            else:
                return replies
        raise self.error(self.redis.ConnectionError("no reply"), doing)  # pragma: no cover - the loop returns or raises

    def _one(self, data: bytes, timeout: float | None = None) -> Any:
        reply = self._exchange(data, 1, timeout)[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    def blpop(self, key: str, timeout: float, doing: str) -> Any:
        """``BLPOP key timeout``: [key, value], or None after ``timeout`` seconds."""
        self._check()
        seconds = f"{max(timeout, 0.001):.3f}"
        try:
            return self._one(_pack(("BLPOP", key, seconds)), timeout + self.socket_timeout)
        except self.redis.RedisError as exc:
            self.retriable(exc, False)  # a stale Cluster node is asked again next time
            raise self.error(exc, doing) from exc

    def retriable(self, exc: BaseException, repeat: bool) -> bool:
        """After a failed command: True if it may be sent again now (``repeat``: it is safe
        to run twice). A node that is no master, or a Cluster slot that moved, refused it
        (it did not run): asked again. A lost connection: only what is safe to repeat."""
        r = self.redis
        if isinstance(exc, r.AuthenticationError):
            return False
        if isinstance(exc, r.ResponseError) and _transient(exc) in ("READONLY", "MOVED"):
            self.locator.stale()
            return True
        if isinstance(exc, r.ConnectionError):
            self.locator.stale()
            return repeat
        return False

    # -- scripts ----------------------------------------------------------------------------------
    def run(self, name: str, args: list[Any], doing: str, *, repeat: bool = True) -> Any:
        """Run one script (followed by ``WAIT`` when it writes and ``wait_replicas`` is set).
        Sent once more on a fresh connection after a lost one when ``repeat`` (every
        script that is safe to run twice), and after a refusal by a node that is no master."""
        self._check()
        r = self.redis
        try:
            return self.script(name, args, doing)
        except r.RedisError as exc:
            if not self.retriable(exc, repeat):
                raise self.error(exc, doing) from exc
        try:
            return self.script(name, args, doing)
        except r.RedisError as exc:
            raise self.error(exc, doing) from exc

    def script(self, name: str, args: list[Any], doing: str, *, then: tuple[Any, ...] | None = None,
               timeout: float | None = None) -> Any:
        """Run one call once (loading the library, or the script, first on a server that
        lacks it); redis-py's errors as they come (:meth:`run` names them). ``then``: a
        command sent in the same round trip after it (and its ``WAIT``), whose reply is
        returned with the call's, as ``(reply, then_reply)``; ``timeout``: how long that may
        take (a ``BLPOP``)."""
        wait = self.wait_replicas and name in WRITES
        for attempt in range(3):
            heads = self._eval_heads if self.fcall is False else self._fcall_heads
            data = _pack(args, heads[name], 4)
            if wait:
                data += _pack(self._wait)
            if then is not None:
                data += _pack(then)
            replies = self._exchange(data, 1 + bool(wait) + (then is not None), timeout)
            reply = replies[0]
            if not isinstance(reply, self.redis.ResponseError) or attempt == 2 or not self._load(name, reply):
                break
        if isinstance(reply, Exception):
            raise reply
        if self.fcall is None:
            self.fcall = True
        if wait:
            self._check_replicas(replies[1], doing)
        return reply if then is None else (reply, replies[-1])

    def _load(self, name: str, error: Exception) -> bool:
        """After an error reply: load what the server lacks (the library, or the script on a
        server without functions); True if the call should be sent again."""
        text = str(error)
        if self.fcall is not False and "unknown command" in text.lower() and "fcall" in text.lower():
            self.fcall = False  # Redis 6: no functions
            return True
        if self.fcall is not False and "function not found" in text.lower():
            loaded = self._exchange(_pack(("FUNCTION", "LOAD", self._library)), 1)[0]
            if isinstance(loaded, Exception) and "already exists" not in str(loaded):
                if "unknown" in str(loaded).lower():
                    self.fcall = False
                    return True
                raise loaded
            return True
        if isinstance(error, self.redis.exceptions.NoScriptError):
            # a new server (a restart, a failover): load the script, run it once
            self._one(_pack(("SCRIPT", "LOAD", self._sources[name])))
            return True
        return False

    def _check_replicas(self, confirmed: Any, doing: str) -> None:
        if isinstance(confirmed, Exception) or int(confirmed) < self.wait_replicas:
            shown = confirmed if not isinstance(confirmed, Exception) else f"none ({confirmed})"
            raise RedisUnavailable(
                f"Redis {self.url} ({self.key}): {doing} failed: {shown} of the {self.wait_replicas}"
                f" replica(s) that wait_replicas asks for confirmed the write within {self._wait_timeout:g} s"
                " (wait_timeout); it is on the master, and lost if the master fails before a replica has it"
            )

    def close(self) -> None:
        self._idle.clear()
        self.locator.close()


def _transient(exc: BaseException) -> str | None:
    """The word of a "not now" answer (READONLY, MOVED, CLUSTERDOWN...), or None."""
    text = str(exc)
    for word in _TRANSIENT:
        if text.startswith(word) or f" {word} " in f" {text[:20]} ":
            return word
    return None


__all__ = ["Client", "Locator", "RedisCredentialsRefused", "RedisUnavailable"]


def _untyped(thing: Any) -> Any:
    """``thing`` as mypy sees it on every redis-py version: some of its classes and methods
    gained annotations in 8.2 (an ignore for the untyped call is then unused, an error here)."""
    return thing
