"""A real ``redis-server`` (Debian's package) for the tests.

:class:`RedisServer` starts one on 127.0.0.1 with a free port (redis can not
bind port 0 and say which it got, so a port is picked through a socket and
the start is retried on a collision), in its own directory, and stops it by
its pid. Without persistence by default (``--save "" --appendonly no``);
``aof="always"`` or ``"everysec"`` for the tests that restart it and count
what survived; ``pause()``/``resume()`` (SIGSTOP/SIGCONT) for the tests of a
server that stops answering.

:func:`shared_redis` is the session's one server (:func:`support.servers.shared`):
the ``redis_server`` fixture, the storage contract and the other Redis tests
use it, each flushing it or using its own key prefix. Without the binary a
test that needs it skips saying why, and fails under CI.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from support import markers
from support.net import HOST, free_port
from support.processes import spawn, stop_group
from support.servers import find_binary, shared, unavailable
from support.waiting import wait_until

#: Seconds a start or a stop may take.
DEADLINE = 20.0


def require_binary() -> str:
    """The redis-server binary; else skip the test, or fail it under CI."""
    found = find_binary("redis-server", ["/usr/bin/redis-server"])
    if found is None:
        unavailable("redis-server is not installed (Debian: apt-get install redis-server;"
                    " scripts/test.sh installs it when run as root)")
    return found


class RedisServer:
    """One redis-server process. ``aof``: None (no persistence), "everysec" or "always"."""

    def __init__(self, directory: Path, *, aof: str | None = None, password: str | None = None,
                 bind: str = HOST, extra: tuple[str, ...] = (), owns_directory: bool = False,
                 config: str | None = None) -> None:
        self.dir = Path(directory)
        #: A config file's text, written to the directory and given first (a sentinel needs one).
        self.config = config
        self.dir.mkdir(parents=True, exist_ok=True)
        self.aof = aof
        self.password = password
        self.bind = bind
        self.extra = extra
        #: :meth:`close` removes the directory (a temporary one made for this server).
        self.owns_directory = owns_directory
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def url(self, host: str | None = None, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{host or HOST}:{self.port}/{db}"

    def start(self, port: int | None = None) -> RedisServer:
        """Start it (on ``port``, or a free one: tried up to five times on a collision)."""
        binary = require_binary()
        for _ in range(5):
            self.port = port or free_port()
            first = []
            if self.config is not None:
                (self.dir / "redis.conf").write_text(self.config)
                first = [str(self.dir / "redis.conf")]
            argv = [binary, *first, "--port", str(self.port), "--bind", self.bind, "--dir", str(self.dir),
                    "--save", "", "--logfile", str(self.log), "--daemonize", "no", "--protected-mode", "no"]
            argv += ["--appendonly", "yes", "--appendfsync", self.aof] if self.aof else ["--appendonly", "no"]
            if self.password:
                argv += ["--requirepass", self.password]
            argv += list(self.extra)
            self.proc = spawn(argv, log_path=self.dir / "redis.out", append=True, marker=markers.SERVERS)
            if self._ready():
                return self
            in_use = "Address already in use" in self._log_text()
            stop_group(self.proc, DEADLINE)
            if not in_use or port is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}: {self._log_text()[-2000:]}")
        raise RuntimeError("redis-server: no free port after 5 tries")

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _ready(self) -> bool:
        """True once it answers PING; False if it exited (or never got ready) first."""
        proc = self.proc
        assert proc is not None

        def settled() -> str | None:
            if proc.poll() is not None:
                return "exited"
            text = self._log_text()
            if "Ready to accept connections" not in text and "Sentinel ID is" not in text:
                return None
            try:
                return "ready" if self.client().ping() else None
            except Exception:
                return None

        try:
            return wait_until(settled, DEADLINE) == "ready"
        except TimeoutError:
            return False

    def client(self, **kwargs: Any) -> Any:
        import redis

        addresses = self.bind.split()
        host = HOST if HOST in addresses or "0.0.0.0" in addresses else addresses[0]
        return redis.Redis(host=host, port=self.port,
                           password=self.password, decode_responses=True, socket_timeout=5, **kwargs)

    def flush(self) -> None:
        with self.client() as c:
            c.flushall()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (Redis writes its AOF and exits), then SIGKILL after the deadline; the data stays."""
        if self.proc is not None:
            stop_group(self.proc, DEADLINE)

    def close(self) -> None:
        """Stop it for good, and remove its directory if it owns it."""
        self.stop()
        if self.owns_directory:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stored_jobs(client: Any, prefix: str) -> list[Any]:
    """Every job a Redis store with key prefix ``prefix`` holds, as records
    (:class:`~flask_memqueue.storage.redis.records.RedisRecord`), read from the server
    with a client of the test's own: what a process test checks after the fact."""
    from flask_memqueue.storage.redis.records import parse

    names = client.hgetall(f"{prefix}:tc")  # a task's code -> its name (see lua/prelude.lua)
    jobs = []
    for jid, text in client.hgetall(f"{prefix}:j").items():
        state, at, task, rest = text.split("\n", 3)
        jobs.append(parse(jid, "\n".join((state, at, names.get(task, task), rest))))
    return jobs


class SentinelDeployment:
    """A replicated Redis on loopback, as production runs it: a master, ``replicas``
    replicas (``--replicaof``) and ``sentinels`` ``redis-server --sentinel`` processes
    (quorum 2, a master is down after 1 s without an answer), each on a free port in
    its own directory; every data server needs ``password``. Stopped by pid."""

    SERVICE = "mymaster"

    def __init__(self, directory: Path, *, password: str, replicas: int = 2, sentinels: int = 3) -> None:
        self.dir = Path(directory)
        self.password = password
        auth = ("--masterauth", password)
        self.master = RedisServer(self.dir / "master", password=password, extra=auth)
        self.replicas = [RedisServer(self.dir / f"replica{k}", password=password, extra=auth)
                         for k in range(replicas)]
        self.sentinels = [RedisServer(self.dir / f"sentinel{k}", extra=("--sentinel",)) for k in range(sentinels)]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas, *self.sentinels]

    def start(self) -> SentinelDeployment:
        self.master.start()
        for replica in self.replicas:
            replica.extra = (*replica.extra, "--replicaof", HOST, str(self.master.port))
            replica.start()
        quorum = min(2, len(self.sentinels))
        for sentinel in self.sentinels:
            sentinel.config = (f"sentinel monitor {self.SERVICE} {HOST} {self.master.port} {quorum}\n"
                               f"sentinel auth-pass {self.SERVICE} {self.password}\n"
                               f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                               f"sentinel failover-timeout {self.SERVICE} 10000\n")
            sentinel.start()
        wait_until(self._settled, DEADLINE, "the replicas in sync and the sentinels to know one another")
        return self

    def _settled(self) -> bool:
        with self.master.client() as c:
            info = c.info("replication")
        if info.get("connected_slaves") != len(self.replicas):
            return False
        for replica in self.replicas:  # synced: a WAIT counts it
            with replica.client() as c:
                if c.info("replication").get("master_link_status") != "up":
                    return False
        others = len(self.sentinels) - 1
        for sentinel in self.sentinels:
            with sentinel.client() as c:
                fields = c.sentinel_master(self.SERVICE)
                if int(fields["num-slaves"]) != len(self.replicas) or int(fields["num-other-sentinels"]) != others:
                    return False
        return True

    def url(self, **options: Any) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"redis+sentinel://:{self.password}@{hosts}/{self.SERVICE}/0" + (f"?{query}" if query else "")

    def master_port(self) -> int | None:
        """The master's port as a live sentinel says now."""
        for sentinel in self.sentinels:
            if not sentinel.alive():
                continue
            try:
                with sentinel.client() as c:
                    found = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.SERVICE)
            except Exception:  # noqa: S112 - ask the next one
                continue
            if found:
                return int(found[1])
        return None

    def kill_master(self) -> RedisServer:
        """SIGKILL the master now; the server it was."""
        killed = self.master
        assert killed.proc is not None
        killed.proc.send_signal(signal.SIGKILL)
        killed.proc.wait(DEADLINE)
        return killed

    def close(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def __enter__(self) -> SentinelDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClusterDeployment:
    """A Redis Cluster on loopback: ``masters`` ``redis-server --cluster-enabled yes``
    processes on free ports, joined by ``redis-cli --cluster create`` (no replicas),
    each in a directory of its own; stopped by pid. The session's one is
    :func:`shared_redis_cluster`."""

    def __init__(self, directory: Path, *, masters: int = 3, owns_directory: bool = False) -> None:
        self.dir = Path(directory)
        self.owns_directory = owns_directory
        self.nodes = [
            RedisServer(self.dir / f"node{k}", extra=("--cluster-enabled", "yes", "--cluster-config-file",
                                                      str(self.dir / f"node{k}" / "nodes.conf"),
                                                      "--cluster-node-timeout", "5000"))
            for k in range(masters)
        ]

    def start(self) -> ClusterDeployment:
        for node in self.nodes:
            for attempt in range(5):  # a port under 55536 whose bus port (+10000) is free too
                try:
                    node.start(_cluster_port())
                    break
                except RuntimeError:
                    if attempt == 4:
                        raise
        cli = find_binary("redis-cli", ["/usr/bin/redis-cli"])
        if cli is None:
            unavailable("redis-cli is not installed (Debian: apt-get install redis-tools)")
        done = subprocess.run([cli, "--cluster", "create", *(f"{HOST}:{n.port}" for n in self.nodes),
                               "--cluster-yes"], capture_output=True, text=True, timeout=DEADLINE, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        wait_until(self._ok, DEADLINE, "every node of the cluster to say cluster_state:ok")
        return self

    def _ok(self) -> bool:
        for node in self.nodes:
            with node.client() as c:
                if "cluster_state:ok" not in str(c.execute_command("CLUSTER", "INFO")):
                    return False
        return True

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self.nodes) + "/"

    def alive(self) -> bool:
        return all(n.alive() for n in self.nodes)

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.owns_directory:
            shutil.rmtree(self.dir, ignore_errors=True)


def _cluster_port() -> int:
    """A free port a cluster node may use: at most 55535, with its bus port (+10000) free."""
    import socket

    for _ in range(100):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _start_shared_cluster() -> ClusterDeployment:
    require_binary()
    return ClusterDeployment(Path(tempfile.mkdtemp(prefix="memqueue-redis-cluster-")), owns_directory=True).start()


def shared_redis_cluster() -> ClusterDeployment:
    """The session's Redis Cluster (three masters), started on first use."""
    return shared("redis-cluster", _start_shared_cluster)


def _start_shared() -> RedisServer:
    require_binary()
    directory = Path(tempfile.mkdtemp(prefix="memqueue-redis-"))
    return RedisServer(directory, owns_directory=True).start()


def shared_redis() -> RedisServer:
    """The session's redis-server (no persistence), started on first use."""
    return shared("redis-server", _start_shared)
