"""Shared fixtures and helpers for the pystate test suite."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

import pystate

MISSING = object()


def one_log(st):
    """The path of the only log of a file store (after flushing it)."""
    import logfmt

    st.flush()
    (p,) = logfmt.logs(st.path).values()
    return p


def fill(path, n=6):
    """A file store at `path` holding scope "s" = {"k<i>": {"i": i}}, closed;
    returns its log's path."""
    st = pystate.State(path, sync="never")
    for i in range(n):
        st.set("s", f"k{i}", {"i": i})
    p = one_log(st)
    st.close()
    return p


@pytest.fixture
def st(request, tmp_path):
    """A fresh, empty store, closed after the test: in memory, or, in a
    contract module (``CONTRACT = True``), each adapter in turn."""
    adapter = getattr(request, "param", "kv-memory")
    if adapter == "kv-memory":
        s = pystate.State()
    elif adapter == "kv-file":
        s = pystate.State(tmp_path / "store")
    elif adapter == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        s = pystate.State(adapter="redis", redis_url=server.url)
    else:
        # A bridge to a `pystate serve` of its own: the API has no way to
        # empty a store, so each test gets a fresh server process.
        server = PystateServer(["--data", str(tmp_path / "served")], cwd=str(tmp_path))
        s = pystate.State(adapter="bridge", bridge_url=server.url)
    yield s
    s.close()
    if adapter == "bridge":
        assert server.stop() == 0, server.stderr


#: The adapters the contract suite runs on.
ADAPTERS = ["kv-memory", "kv-file", "redis", "bridge"]


def pytest_generate_tests(metafunc):
    # Modules that say CONTRACT = True are the shared adapter contract: each
    # of their tests using `st` runs on every adapter, or on those named by
    # an `adapters(...)` mark, for what only some adapters promise.
    if "st" in metafunc.fixturenames and getattr(metafunc.module, "CONTRACT", False):
        mark = metafunc.definition.get_closest_marker("adapters")
        adapters = list(mark.args) if mark else ADAPTERS
        metafunc.parametrize("st", adapters, indirect=True)


def _free_port(cluster_bus: bool = False) -> int:
    """A free loopback port; for a cluster node, one whose bus port (the
    port + 10000) is free and valid too."""
    if not cluster_bus:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    import random

    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """A real redis-server on a free loopback port with its own data
    directory, stopped by PID."""

    def __init__(self, extra: list[str] | None = None) -> None:
        self.extra = list(extra or [])
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail(
                "redis-server is not installed: the redis adapter's tests need a real server "
                "(apt-get install redis-server); they fail rather than skip"
            )
        self.dir = tempfile.mkdtemp(prefix="pystate-redis-")
        self.port = _free_port(cluster_bus="--cluster-enabled" in self.extra)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", self.dir,
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "no",
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def flush(self) -> None:
        import redis

        with redis.Redis.from_url(self.url) as r:
            r.flushall()


class RedisClusterServers:
    """Three real redis-server primaries on loopback, joined into a cluster
    with ``redis-cli --cluster create``; stopped by PID."""

    def __init__(self, n: int = 3) -> None:
        if shutil.which("redis-cli") is None:
            pytest.fail("redis-cli is not installed (apt-get install redis-server); the cluster tests need it")
        self.nodes = [RedisServer(extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]) for _ in range(n)]
        addrs = [f"127.0.0.1:{node.port}" for node in self.nodes]
        r = subprocess.run(
            ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )
        if r.returncode != 0:
            self.stop()
            pytest.fail(f"redis-cli --cluster create failed: {r.stdout} {r.stderr}")
        import redis

        deadline = time.monotonic() + 30
        for node in self.nodes:
            with redis.Redis(host="127.0.0.1", port=node.port) as c:
                while c.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        self.stop()
                        pytest.fail("the test cluster did not reach cluster_state:ok")
                    time.sleep(0.05)
        self.url = self.nodes[0].url.rsplit("/", 1)[0]  # clusters have one database

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            shutil.rmtree(node.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_cluster():
    """A three-primary Redis Cluster for the session."""
    cluster = RedisClusterServers()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server for the session (tests flush it before use)."""
    server = RedisServer()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)



class PystateServer:
    """``python -m pystate serve`` in a subprocess on a free loopback port,
    started and stopped with bounded waits."""

    def __init__(self, args: list[str], cwd: str) -> None:
        import sys

        self.args, self.cwd = args, cwd
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.port = 0
        self.start([sys.executable, "-m", "pystate", "serve", *args])

    def start(self, cmd: list[str] | None = None, port: int | None = None) -> None:
        import sys

        cmd = cmd or [sys.executable, "-m", "pystate", "serve", *self.args]
        if port is not None:  # a restart: the same port, so clients reconnect
            cmd = [*cmd, "--port", str(port)]
        elif "--port" not in cmd:
            cmd = [*cmd, "--port", "0"]
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            if sel.select(timeout=0.2):
                line = self.proc.stdout.readline()
                if "listening on ws://" in line or not line:
                    break
        sel.close()
        if "listening on ws://" not in line:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            pytest.fail(f"pystate serve did not start: {line}{out}{err}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, then wait; SIGKILL if it overstays. Returns the exit code."""
        import signal

        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        self.stdout, self.stderr = proc.communicate(timeout=10)
        return proc.returncode

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc.communicate(timeout=10)
            self.proc = None


@pytest.fixture
def pystate_server(tmp_path):
    """A ``pystate serve`` subprocess on a file store in ``tmp_path/data``."""
    server = PystateServer(["--data", str(tmp_path / "data")], cwd=str(tmp_path))
    yield server
    server.stop()


@pytest.fixture
def sdk():
    """Connect iii-sdk workers to a URL; each is shut down after the test
    (its loop thread is not a daemon: a forgotten one would hang pytest)."""
    from iii import InitOptions, register_worker

    workers = []

    def connect(url: str, **options):
        options.setdefault("otel", {"enabled": False})
        options.setdefault("invocation_timeout_ms", 10_000)
        w = register_worker(url, InitOptions(**options))
        workers.append(w)
        return w

    yield connect
    for w in workers:
        # A second shutdown() would wait forever on the stopped loop.
        if w._thread.is_alive():
            w.shutdown()



@pytest.fixture
def run_ops(st):
    """Apply ops to `old` (MISSING: no key) through State.update, check that
    the stored value is the returned new value, and return (new, errors)."""

    keys = iter(range(10**9))

    def run(old, ops):
        key = f"k{next(keys)}"  # a key of its own, so MISSING means missing
        if old is not MISSING:
            st.set("t", key, old)
        r = st.update("t", key, ops)
        assert r.old_value == (None if old is MISSING else old)
        assert st.get("t", key, MISSING) == r.new_value
        return r.new_value, r.errors

    return run


@pytest.fixture
def codes():
    """The error codes of an update's errors, in order."""
    return lambda errors: [e["code"] for e in errors]


@pytest.fixture
def watch(st):
    """Register a state trigger on ``st`` with the given config and return
    the list its handler appends each event to (read it after
    ``st.flush_events()``)."""

    counter = iter(range(10**9))

    def make(config=None, *, metadata=None, condition=None, handler=None):
        seen = []
        fid = f"collect{next(counter)}"
        st.register_function(fid, handler or seen.append)
        if condition is not None:
            st.register_function(f"{fid}.cond", condition)
            config = dict(config or {}, condition_function_id=f"{fid}.cond")
        st.register_trigger({"type": "state", "function_id": fid, "config": config or {}, "metadata": metadata})
        return seen

    return make


def drain(st, timeout=30):
    """Wait for every queued event; fail the test if they do not finish."""
    assert st.flush_events(timeout=timeout), "events were still pending after the timeout"
