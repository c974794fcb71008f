"""The Redis store's connection, its scripts, and its errors.

Every command of the store goes through a :class:`Client`, and every failure
leaves it as a :class:`RedisUnavailable` that says why (unreachable, no answer
in time, TLS) or a :class:`RedisCredentialsRefused` (a wrong password, an
unknown user, none given to a server that needs one, a user without the
rights the store needs), naming the server with its password replaced by
``***``. redis-py is imported when a client is made, never by importing this
module: ``flask_memqueue.RedisUnavailable`` costs no driver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from ...exceptions import ConfigurationError, StorageError, StorageRefused
from .scripts import sources

if TYPE_CHECKING:
    import redis as redis_py


class RedisUnavailable(StorageError):
    """The Redis server cannot be reached or refuses this client (down, unreachable,
    wrong password, TLS handshake failed, no answer in time).

    The message names the server's URL with its password replaced by ``***``,
    and says which of those it was. Nothing the failing call asked for was
    done, except that an enqueue whose answer was lost may still have been
    queued (the command reached Redis, the reply did not come back).
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


class Client:
    """One store's connection pool, and its scripts registered on it.

    :param url: the URL as given (with its password, which never leaves this object).
    :param shown: the URL as people see it (password redacted).
    :param key: the config key the URL came from, for messages.
    :param connect: redis-py connection options (checked by ``options.py``).
    :param prefix: the store's key prefix, ``KEYS[1]`` of every script.
    :param check: called before every command (the store refuses use after fork).
    """

    def __init__(self, url: str, shown: str, key: str, connect: Mapping[str, Any], prefix: str,
                 check: Callable[[], None]) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        #: redis-py itself, for its exception classes.
        self.redis = redis
        self.url = shown
        self.key = key
        self.prefix = prefix
        self._check = check
        kwargs: dict[str, Any] = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, **connect}
        # No retries inside redis-py: a repeated claim could claim twice. The store
        # repeats what is safe to repeat itself (every script is written so).
        kwargs["retry"] = Retry(NoBackoff(), 0)
        kwargs.update(decode_responses=True, protocol=2, health_check_interval=0)
        try:
            # the query string holds the store's options: they come in as ``connect``
            self.pool = redis.ConnectionPool.from_url(url.partition("?")[0], **kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(f"{key}: not a Redis URL redis-py can use ({exc}): {shown!r}") from None
        self._password = unquote(urlsplit(url).password or "") or str(kwargs.get("password") or "")
        self._no_password = not self._password
        #: The client every command uses.
        self.r: redis_py.Redis = redis.Redis(connection_pool=self.pool)
        #: Each script, registered once on this client (EVALSHA, loaded on first use).
        self.scripts = {name: self.r.register_script(source) for name, source in sources().items()}

    def error(self, exc: BaseException, doing: str) -> StorageError:
        """A :class:`RedisUnavailable` that says why, or a :class:`StorageError`; the password never in it."""
        text = str(exc)
        if self._password:
            text = text.replace(self._password, "***")
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
            return f"the server is unreachable: {text}"
        return None

    def run(self, name: str, args: list[Any], doing: str, *, repeat: bool = True) -> Any:
        """Run one script. A dropped connection is tried once more on a fresh one when
        ``repeat`` (every script that is safe to run twice)."""
        self._check()
        script = self.scripts[name]
        r = self.redis
        try:
            return script(keys=[self.prefix], args=args)
        except r.ConnectionError as exc:
            if not repeat or isinstance(exc, r.AuthenticationError):
                raise self.error(exc, doing) from exc
        except r.RedisError as exc:
            raise self.error(exc, doing) from exc
        try:
            return script(keys=[self.prefix], args=args)
        except r.RedisError as exc:
            raise self.error(exc, doing) from exc

    def call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One command, ``fn(*args, **kwargs)`` (a method of :attr:`r`), its failure named."""
        self._check()
        try:
            return fn(*args, **kwargs)
        except self.redis.RedisError as exc:
            raise self.error(exc, doing) from exc

    def close(self) -> None:
        self.pool.disconnect()


__all__ = ["Client", "RedisCredentialsRefused", "RedisUnavailable"]
