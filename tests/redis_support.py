"""Real Redis servers for the tests: Debian's ``redis-server`` on free loopback ports.

A pytest plugin of tests/conftest.py: its fixtures are there for every test.

``RedisServer`` runs one server in a temporary directory (no persistence), and can be
stopped and started again on the same port (the outage tests). ``RedisClusterNodes``
runs three cluster-enabled servers and joins them with ``redis-cli --cluster create``.
A missing ``redis-server`` skips the tests outside CI and fails them in CI
(``CI=true``); ``python3 scripts/dev.py test`` installs it.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def require_redis() -> None:
    if REDIS_SERVER is not None and REDIS_CLI is not None:
        return
    message = "redis-server and redis-cli are not installed (apt-get install redis-server)"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " — CI must have them", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(port: int, *args: str, timeout: float = 10) -> str:
    assert REDIS_CLI is not None
    result = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.stdout + result.stderr


class RedisServer:
    """One ``redis-server`` on 127.0.0.1, in ``directory``; ``url`` reaches it."""

    def __init__(self, directory: Path, *, cluster: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.cluster = cluster
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]
        if self.cluster:
            # The cluster bus gets a free port of its own (by default it is port + 10000).
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            args += ["--cluster-port", str(free_port())]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.directory
        )
        deadline = time.monotonic() + 20
        while "PONG" not in _cli(self.port, "ping", timeout=5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def flush(self) -> None:
        _cli(self.port, "flushall")


class RedisClusterNodes:
    """Three cluster-enabled servers joined into one Redis Cluster (no replicas)."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [RedisServer(directory / f"node{i}", cluster=True) for i in range(3)]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        out = _cli(
            self.nodes[0].port,
            "--cluster",
            "create",
            *(f"127.0.0.1:{n.port}" for n in self.nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
            timeout=60,
        )
        if "All 16384 slots covered" not in out:
            raise RuntimeError("redis-cli --cluster create failed:\n" + out[-2000:])
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in _cli(n.port, "cluster", "info") for n in self.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach state ok")
            time.sleep(0.1)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()


#: coredis creates anyio memory streams for cluster connections it never opens, and never
#: closes them: their ``__del__`` warns. That is the library's, not ours; it is ignored
#: here only, and collected at each test's teardown so that it never lands elsewhere.
_COREDIS_UNCLOSED = (
    "ignore:Exception ignored in. <function MemoryObject:pytest.PytestUnraisableExceptionWarning"
)


_REDIS_FIXTURES = {"redis_single", "redis_cluster", "redis_url", "redis_server"}
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names: list[str] = getattr(item, "fixturenames", [])
        under_redis = _HERE / "_redis" in Path(str(item.fspath)).resolve().parents
        if under_redis or _REDIS_FIXTURES & set(names):
            item.add_marker(pytest.mark.filterwarnings(_COREDIS_UNCLOSED))
            names.insert(0, "_coredis_garbage")  # set up first, torn down last


@pytest.fixture
def _coredis_garbage() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture(scope="session")
def redis_single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
    gc.collect()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    require_redis()
    cluster = RedisClusterNodes(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of a flushed Redis: a single server, then a 3-node Cluster."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_single")
        server.flush()
        return server.url
    cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return cluster.url


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server of the test's own, which the test may stop and start (outages)."""
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis-own"))
    server.start()
    yield server
    server.stop()
    gc.collect()
