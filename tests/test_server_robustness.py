"""``pystate serve`` under bad input and bad clients: malformed and
oversized frames, abrupt disconnects, many concurrent clients, a client
that never reads. Each must leave the server, and everyone else's
connection, working. Raw WebSocket clients here, to send what iii-sdk never
would."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import struct
import sys
import threading
import time
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import PystateServer

MAX = 64 * 2**20


async def open_ws(url, **kw):
    kw = {"max_size": MAX, "compression": None, "open_timeout": 10, **kw}
    ws = await connect(url, **kw)
    hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert hello["type"] == "workerregistered"
    return ws


async def invoke(ws, fid, data, timeout=10):
    iid = str(uuid.uuid4())
    await ws.send(json.dumps({"type": "invokefunction", "invocation_id": iid, "function_id": fid, "data": data}))
    return await wait_answer(ws, iid, timeout)


async def wait_answer(ws, iid, timeout=10):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        msg = json.loads(await asyncio.wait_for(ws.recv(), max(left, 0.001)))
        if msg.get("type") == "invocationresult" and msg.get("invocation_id") == iid:
            return msg


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# ---- malformed input ---------------------------------------------------------


@pytest.mark.parametrize("frame", [
    "not json at all",
    "[1, 2, 3]",
    '"just a string"',
    '{"no": "type"}',
    '{"type": "nosuchtype", "x": 1}',
    '{"type": "invocationresult", "invocation_id": "never-asked", "result": 1}',
    '{"type": "registerfunction"}',
    '{"type": "registertrigger", "id": 5}',
    '{"type": "unregistertrigger", "id": "unknown"}',
    b"\x00\x01binary garbage\xff",
    b"OTLP{}",
])
def test_malformed_frame_is_ignored_and_the_connection_keeps_working(pystate_server, frame):
    async def scenario():
        ws = await open_ws(pystate_server.url)
        await ws.send(frame)
        answer = await invoke(ws, "state::set", {"scope": "m", "key": "k", "value": 1})
        assert answer["result"] == {"old_value": None, "new_value": 1}
        await ws.close()

    run(scenario())


@pytest.mark.parametrize("message, code", [
    ({"function_id": 5}, "deserialization_error"),
    ({"function_id": "state::set", "data": [1, 2]}, "deserialization_error"),
    ({"function_id": "state::get", "data": {"scope": 1, "key": "k"}}, "deserialization_error"),
    ({"function_id": "state::update", "data": {"scope": "s", "key": "k", "ops": "nope"}}, "deserialization_error"),
    ({"function_id": "state::get", "data": {"scope": "s", "key": "k"}, "action": {"type": "teleport"}}, "deserialization_error"),
    ({"function_id": "state::get", "data": {"scope": "s", "key": "k"}, "namespace": "  "}, "INVALID_NAMESPACE"),
    ({"function_id": "nobody::has::this"}, "function_not_found"),
])
def test_bad_invocation_gets_an_error_answer(pystate_server, message, code):
    async def scenario():
        ws = await open_ws(pystate_server.url)
        iid = str(uuid.uuid4())
        await ws.send(json.dumps({"type": "invokefunction", "invocation_id": iid, **message}))
        answer = await wait_answer(ws, iid)
        assert answer["error"]["code"] == code
        assert answer["error"]["message"]
        # ... and nothing was written, and the connection still works
        listing = await invoke(ws, "state::list_groups", {})
        assert listing["result"] == {"groups": []}
        await ws.close()

    run(scenario())


def test_ping_gets_pong(pystate_server):
    async def scenario():
        ws = await open_ws(pystate_server.url)
        await ws.send('{"type": "ping"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}
        await ws.close()

    run(scenario())


def test_oversized_frame_closes_only_its_sender(pystate_server):
    async def scenario():
        bystander = await open_ws(pystate_server.url)
        sender = await open_ws(pystate_server.url, max_size=None)
        big = json.dumps({"type": "invokefunction", "invocation_id": "x", "function_id": "state::set",
                          "data": {"scope": "big", "key": "k", "value": "x" * MAX}})
        try:
            await sender.send(big)
            await asyncio.wait_for(sender.recv(), 30)
        except ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1009  # message too big
        else:
            pytest.fail("the oversized frame was accepted")
        answer = await invoke(bystander, "state::get", {"scope": "big", "key": "k"})
        assert "result" not in answer and "error" not in answer  # nothing written
        fresh = await open_ws(pystate_server.url)
        assert (await invoke(fresh, "state::list_groups", {}))["result"] == {"groups": []}
        await bystander.close()
        await fresh.close()

    run(scenario())


# ---- abrupt disconnects ---------------------------------------------------------------


def _handshake(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _frame(payload: bytes, opcode=0x1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 2**16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_abrupt_disconnects_leave_the_server_serving(pystate_server):
    port = pystate_server.port
    # closed before the handshake
    socket.create_connection(("127.0.0.1", port), timeout=10).close()
    # half an HTTP request
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    # half a frame after the handshake
    s = _handshake(port)
    s.sendall(_frame(b'{"type":"invokefunction","invocation_id":"a","function_id":"state::get"}')[:20])
    s.close()
    # a reset (SO_LINGER 0) in the middle of a request
    s = _handshake(port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.sendall(_frame(json.dumps({"type": "invokefunction", "invocation_id": "b", "function_id": "state::set",
                                 "data": {"scope": "r", "key": "k", "value": 1}}).encode()))
    s.close()

    async def still_serving():
        ws = await open_ws(pystate_server.url)
        assert (await invoke(ws, "state::set", {"scope": "after", "key": "k", "value": 2}))["result"]["new_value"] == 2
        await ws.close()

    run(still_serving())
    assert pystate_server.proc.poll() is None


# ---- load ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_fifty_concurrent_clients_lose_nothing(pystate_server):
    clients, ops = 50, 1000

    async def client(i, ws):
        mine = {}
        increments = 0
        for j in range(ops):
            key = f"c{i}-k{j % 20}"
            kind = j % 5
            if kind in (0, 1):
                r = await invoke(ws, "state::set", {"scope": "load", "key": key, "value": {"i": i, "j": j}})
                assert r["result"]["old_value"] == mine.get(key), (i, j)
                mine[key] = {"i": i, "j": j}
            elif kind == 2:
                r = await invoke(ws, "state::update", {"scope": "load", "key": "counter",
                                                       "ops": [{"type": "increment", "path": "n", "by": 1}]})
                assert "error" not in r, r
                increments += 1
            elif kind == 3:
                r = await invoke(ws, "state::get", {"scope": "load", "key": key})
                assert r.get("result") == mine.get(key), (i, j)  # no result field: missing
            else:
                r = await invoke(ws, "state::delete", {"scope": "load", "key": key})
                assert r.get("result") == mine.pop(key, None), (i, j)
        return mine, increments

    async def scenario():
        sockets = [await open_ws(pystate_server.url) for _ in range(clients)]
        results = await asyncio.gather(*(client(i, ws) for i, ws in enumerate(sockets)))
        check = sockets[0]
        counter = (await invoke(check, "state::get", {"scope": "load", "key": "counter"}))["result"]
        assert counter == {"n": sum(inc for _, inc in results)}
        stored = (await invoke(check, "state::list", {"scope": "load"}))["result"]
        expected = [v for mine, _ in results for v in mine.values()] + [counter]
        key = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731
        assert sorted(stored, key=key) == sorted(expected, key=key)
        for ws in sockets:
            await ws.close()

    run(scenario(), timeout=300)


def test_a_client_that_never_reads_does_not_stall_others_or_grow_memory(pystate_server):
    port = pystate_server.port

    async def seed_and_measure():
        ws = await open_ws(pystate_server.url)
        await invoke(ws, "state::set", {"scope": "big", "key": "mb", "value": "x" * 2**20})
        await ws.close()

    run(seed_and_measure())
    before = rss_kib(pystate_server.proc.pid)
    stuck = _handshake(port)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.settimeout(0.5)
    request = _frame(json.dumps({"type": "invokefunction", "invocation_id": "g", "function_id": "state::get",
                                 "data": {"scope": "big", "key": "mb"}}).encode())
    sent = 0
    deadline = time.monotonic() + 20
    try:
        while sent < 400 and time.monotonic() < deadline:  # 400 MiB of answers asked for, none read
            stuck.sendall(request)
            sent += 1
    except (socket.timeout, OSError):
        pass  # the server stopped reading us: backpressure, as it should

    async def others_fine():
        ws = await open_ws(pystate_server.url)
        for i in range(50):
            r = await invoke(ws, "state::set", {"scope": "ok", "key": f"k{i}", "value": i}, timeout=5)
            assert r["result"]["new_value"] == i
        await ws.close()

    run(others_fine(), timeout=60)
    grown_mib = (rss_kib(pystate_server.proc.pid) - before) / 1024
    assert grown_mib < 100, f"the server grew by {grown_mib:.0f} MiB for a client that never reads"
    stuck.close()
    run(others_fine(), timeout=60)


def test_a_watcher_that_never_reads_does_not_hold_up_writers(pystate_server):
    stuck = _handshake(pystate_server.port)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(_frame(b'{"type":"registerfunction","id":"stuck::h"}'))
    stuck.sendall(_frame(json.dumps({"type": "registertrigger", "id": "t1", "trigger_type": "state",
                                     "function_id": "stuck::h", "config": {"scope": "hot"}}).encode()))

    async def writer():
        ws = await open_ws(pystate_server.url)
        for i in range(300):  # each event is a 64 KiB frame to a socket nobody reads
            r = await invoke(ws, "state::set", {"scope": "hot", "key": f"k{i}", "value": "y" * 2**16}, timeout=5)
            assert r["result"]["old_value"] is None
        assert (await invoke(ws, "state::get", {"scope": "hot", "key": "k299"}))["result"] == "y" * 2**16
        await ws.close()

    run(writer(), timeout=60)
    stuck.close()
    assert pystate_server.proc.poll() is None


# ---- floods from a client that never reads ----------------------------------------------

# A server on a file store opened with sync="always": state calls go to a
# thread pool (as with redis or a bridge), not inline.
_SERVE_SYNC_ALWAYS = """
import sys
import pystate
from pystate.server import run

st = pystate.State(sys.argv[1], sync="always")
run(st, port=0, on_ready=lambda s: print(f"pystate serve: listening on ws://{s.host}:{s.port}", flush=True))
"""


class _ScriptServer(PystateServer):
    """A server started by a script of the test's, with PystateServer's
    bounded start and stop."""

    def __init__(self, script, args, cwd):
        self.args, self.cwd = args, cwd
        self.proc, self.url, self.port = None, "", 0
        self.start([sys.executable, str(script), *args])


@pytest.fixture
def sync_always_server(tmp_path):
    script = tmp_path / "serve_sync_always.py"
    script.write_text(_SERVE_SYNC_ALWAYS)
    server = _ScriptServer(script, [str(tmp_path / "data")], cwd=str(tmp_path))
    yield server
    assert server.stop() == 0, server.stderr


class _Flood(threading.Thread):
    """A client that sends ``frame`` ``count`` times and never reads a
    byte: its receive buffer fills, then the server's send buffer for it.
    It gives up early once the server has read nothing from it for
    ``stall`` seconds (pushed back), and at ``seconds`` in any case."""

    def __init__(self, port, frame, count=100_000, seconds=25.0, stall=5.0):
        super().__init__(daemon=True)
        self.sock = _handshake(port)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(0.5)
        self.wire = _frame(frame)
        self.count, self.seconds, self.stall = count, seconds, stall
        self.sent = 0
        self.pushed_back = False

    def run(self):
        batch = 100
        chunk = memoryview(self.wire * batch)
        now = time.monotonic()
        deadline, progress = now + self.seconds, now
        while self.sent < self.count and time.monotonic() < deadline:
            off = 0
            while off < len(chunk):
                try:
                    off += self.sock.send(chunk[off:])
                    progress = time.monotonic()
                except socket.timeout:
                    if time.monotonic() - progress > self.stall:
                        self.pushed_back = True
                        self.sent += batch * off // len(chunk)
                        return
                except OSError:
                    return
            self.sent += batch


def _served_meanwhile(url, flood, what):
    """While ``flood`` runs, another client's calls are answered within a
    few seconds each."""

    async def scenario():
        ws = await open_ws(url)
        await invoke(ws, "state::set", {"scope": "other", "key": "k", "value": "v"}, timeout=10)
        rounds = 0
        while flood.is_alive() or rounds < 3:
            t0 = time.monotonic()
            r = await invoke(ws, "state::get", {"scope": "other", "key": "k"}, timeout=10)
            assert r["result"] == "v", r
            assert time.monotonic() - t0 < 5, f"a get took {time.monotonic() - t0:.1f} s during the {what} flood"
            rounds += 1
            await asyncio.sleep(0.2)
        await ws.close()

    run(scenario(), timeout=90)


def _warm_up(url):
    async def scenario():
        ws = await open_ws(url)
        for i in range(200):
            await invoke(ws, "state::set", {"scope": "warm", "key": f"k{i % 10}", "value": i})
        await ws.close()

    run(scenario())


def test_a_state_call_flood_from_a_client_that_never_reads_is_bounded(sync_always_server):
    server = sync_always_server
    _warm_up(server.url)
    before = rss_kib(server.proc.pid)
    frame = json.dumps({"type": "invokefunction", "invocation_id": "f", "function_id": "state::set",
                        "data": {"scope": "flood", "key": "k", "value": {"n": 1, "pad": "p" * 64}}}).encode()
    flood = _Flood(server.port, frame)
    flood.start()
    _served_meanwhile(server.url, flood, "state::set")
    flood.join(30)
    grown_mib = (rss_kib(server.proc.pid) - before) / 1024
    print(f"state::set flood: {flood.sent} frames sent, pushed back: {flood.pushed_back}, "
          f"RSS {before / 1024:.1f} MiB -> {before / 1024 + grown_mib:.1f} MiB")
    assert grown_mib < 20, f"the server grew by {grown_mib:.0f} MiB under {flood.sent} frames it cannot answer"
    flood.sock.close()
    _warm_up(server.url)
    assert server.proc.poll() is None


def _echo_owner(url, fid, ready, stop):
    """A second worker: registers ``fid`` and answers every call to it."""

    async def main():
        ws = await open_ws(url)
        await ws.send(json.dumps({"type": "registerfunction", "id": fid}))
        await invoke(ws, "state::list_groups", {})  # registered once this is answered
        ready.set()
        while not stop.is_set():
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            if msg.get("type") == "invokefunction" and msg.get("invocation_id"):
                await ws.send(json.dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                          "function_id": fid, "result": msg.get("data")}))
        await ws.close()

    asyncio.run(main())


def test_a_routed_call_flood_from_a_client_that_never_reads_is_bounded(pystate_server):
    server = pystate_server
    ready, stop = threading.Event(), threading.Event()
    owner = threading.Thread(target=_echo_owner, args=(server.url, "flood::echo", ready, stop), daemon=True)
    owner.start()
    assert ready.wait(10)
    _warm_up(server.url)
    before = rss_kib(server.proc.pid)
    frame = json.dumps({"type": "invokefunction", "invocation_id": "r", "function_id": "flood::echo",
                        "data": {"n": 1, "pad": "p" * 64}}).encode()
    flood = _Flood(server.port, frame)
    flood.start()
    try:
        _served_meanwhile(server.url, flood, "routed call")
        flood.join(30)
        grown_mib = (rss_kib(server.proc.pid) - before) / 1024
        print(f"routed flood: {flood.sent} frames sent, pushed back: {flood.pushed_back}, "
              f"RSS {before / 1024:.1f} MiB -> {before / 1024 + grown_mib:.1f} MiB")
        assert grown_mib < 20, f"the server grew by {grown_mib:.0f} MiB under {flood.sent} calls it cannot answer"
    finally:
        flood.sock.close()
        stop.set()
        owner.join(10)
    _warm_up(server.url)
    assert server.proc.poll() is None


# ---- fields of the wrong type, JSON the API refuses ------------------------------------


@pytest.mark.parametrize("frame", [
    {"type": ["invokefunction"]},
    {"type": {"kind": "ping"}},
    {"type": "invokefunction", "invocation_id": ["a"], "function_id": "state::get", "data": {"scope": "s", "key": "k"}},
    {"type": "invokefunction", "invocation_id": "a", "function_id": {"id": "state::get"}},
    {"type": "invocationresult", "invocation_id": {"a": 1}, "result": 1},
    {"type": "reattach", "previous_worker_id": ["w"], "reattach_token": "t"},
    {"type": "reattach", "previous_worker_id": {"w": 1}},
    {"type": "registerfunction", "id": ["f"]},
    {"type": "unregisterfunction", "id": {"f": 1}},
    {"type": "registertrigger", "id": "t", "trigger_type": ["state"], "function_id": "f"},
    {"type": "unregistertrigger", "id": ["t"]},
])
def test_a_field_of_the_wrong_type_is_ignored_and_closes_no_connection(pystate_server, frame):
    async def scenario():
        ws = await open_ws(pystate_server.url)
        await ws.send(json.dumps(frame))
        answer = await invoke(ws, "state::set", {"scope": "m", "key": "k", "value": 1})
        assert answer["result"] == {"old_value": None, "new_value": 1}
        await ws.close()
        assert ws.close_code == 1000  # closed by us, not 1011 by the server

    run(scenario())


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**70])
@pytest.mark.parametrize("fid, data", [
    ("state::set", lambda v: {"scope": "big", "key": "k", "value": {"n": v}}),
    ("state::update", lambda v: {"scope": "big", "key": "k", "ops": [{"type": "set", "path": "n", "value": v}]}),
])
def test_an_integer_beyond_64_bits_on_the_wire_is_refused_and_writes_nothing(pystate_server, fid, data, value):
    async def scenario():
        ws = await open_ws(pystate_server.url)
        answer = await invoke(ws, fid, data(value))
        assert answer["error"]["code"] == "invalid_value", answer
        assert "64" in answer["error"]["message"] or "integer" in answer["error"]["message"]
        assert (await invoke(ws, "state::list_groups", {}))["result"] == {"groups": []}
        await ws.close()

    run(scenario())


# ---- the engine's answers --------------------------------------------------------------


@pytest.mark.parametrize("fid", ["state::get", "state::delete"])
def test_a_missing_key_is_answered_without_a_result_field(pystate_server, fid):
    async def scenario():
        ws = await open_ws(pystate_server.url)
        answer = await invoke(ws, fid, {"scope": "none", "key": "k"})
        assert "result" not in answer and "error" not in answer, answer
        await invoke(ws, "state::set", {"scope": "s", "key": "null", "value": None})
        # A stored null is a None result too: the engine skips it the same way.
        assert "result" not in await invoke(ws, "state::get", {"scope": "s", "key": "null"})
        await ws.close()

    run(scenario())


def test_an_unreachable_redis_is_answered_with_the_engines_codes(tmp_path):
    from conftest import RedisServer

    redis = RedisServer()
    cfg = tmp_path / "iii-config.yaml"
    cfg.write_text(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: redis\n"
        f"        config: {{redis_url: '{redis.url}'}}\n"
    )
    server = PystateServer(["--config", str(cfg)], cwd=str(tmp_path))
    calls = [
        ("state::set", {"scope": "s", "key": "k", "value": 1}, "SET_ERROR", "Failed to set value"),
        ("state::get", {"scope": "s", "key": "k"}, "GET_ERROR", "Failed to get value"),
        ("state::delete", {"scope": "s", "key": "k"}, "GET_ERROR", "Failed to get value before delete"),
        ("state::update", {"scope": "s", "key": "k", "ops": []}, "UPDATE_ERROR", "Failed to update value"),
        ("state::list", {"scope": "s"}, "LIST_ERROR", "Failed to list values"),
        ("state::list_groups", {}, "LIST_GROUPS_ERROR", "Failed to list groups"),
    ]

    async def scenario():
        ws = await open_ws(server.url)
        assert "error" not in await invoke(ws, "state::set", {"scope": "s", "key": "k", "value": 0})
        redis.stop()
        for fid, data, code, words in calls:
            answer = await invoke(ws, fid, data, timeout=30)
            assert answer["error"]["code"] == code, (fid, answer)
            assert answer["error"]["message"].startswith(words + ": "), (fid, answer)
        await ws.close()

    try:
        run(scenario(), timeout=240)
    finally:
        server.stop()
        redis.stop()
        shutil.rmtree(redis.dir, ignore_errors=True)


# ---- credentials -----------------------------------------------------------------------


def test_two_authorization_headers_are_refused_with_401(tmp_path):
    server = PystateServer(["--data", str(tmp_path / "d"), "--token", "sesame"], cwd=str(tmp_path))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Authorization: Bearer sesame\r\nAuthorization: Bearer sesame\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
        assert head.startswith(b"HTTP/1.1 401"), head
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.stderr, server.stderr


# ---- ownership of triggers -------------------------------------------------------------


class _RawWorker:
    """A worker on the bare protocol: it registers ``fid`` and answers each
    call of it, keeping what it was called with in ``events``."""

    def __init__(self, url, ws, hello):
        self.url, self.ws, self.id, self.token = url, ws, hello["worker_id"], hello["reattach_token"]
        self.events = []
        self.frames = []
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url, fid=None, first=()):
        ws = await connect(url, max_size=MAX, compression=None, open_timeout=10)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
        for frame in first:  # before anything else, as the SDK sends reattach
            await ws.send(json.dumps(frame))
        if fid is not None:
            await ws.send(json.dumps({"type": "registerfunction", "id": fid}))
        return cls(url, ws, hello)

    async def _read(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if msg.get("type") == "invokefunction":
                self.events.append(msg["data"])
                await self.ws.send(json.dumps({"type": "invocationresult", "invocation_id": msg["invocation_id"],
                                               "function_id": msg["function_id"], "result": None}))
            else:
                self.frames.append(msg)

    async def send(self, frame):
        await self.ws.send(json.dumps(frame))

    async def call(self, fid, data):
        """A state call from a connection of its own (answers to this one
        are read by _read)."""
        ws = await open_ws(self.url)
        try:
            return await invoke(ws, fid, data)
        finally:
            await ws.close()

    async def close(self):
        await self.ws.close()
        self._reader.cancel()


def _trigger(tid, fid, scope):
    return {"type": "registertrigger", "id": tid, "trigger_type": "state", "function_id": fid,
            "config": {"scope": scope}}


async def _settle(worker, scope, key, value):
    """Write (scope, key) and wait until ``worker`` has its event."""
    before = len(worker.events)
    await worker.call("state::set", {"scope": scope, "key": key, "value": value})
    for _ in range(200):
        if len(worker.events) > before:
            return worker.events[-1]
        await asyncio.sleep(0.025)
    raise AssertionError(f"no event for {scope}/{key}")


async def _none_for(worker, scope, key, seconds=0.6):
    before = len(worker.events)
    await worker.call("state::set", {"scope": scope, "key": key, "value": 0})
    await asyncio.sleep(seconds)
    return worker.events[before:]


def test_another_worker_cannot_unregister_a_trigger(pystate_server):

    async def scenario():
        owner = await _RawWorker.connect(pystate_server.url, "own::h")
        await owner.send(_trigger("t-owned", "own::h", "watched"))
        assert (await _settle(owner, "watched", "a", 1))["key"] == "a"
        thief = await _RawWorker.connect(pystate_server.url)
        await thief.send({"type": "unregistertrigger", "id": "t-owned", "trigger_type": "state"})
        await thief.call("state::list_groups", {})  # its frames are read in order: the unregister is done
        assert (await _settle(owner, "watched", "b", 2))["key"] == "b"
        await thief.close()
        await owner.close()

    run(scenario())


def test_another_worker_cannot_take_over_a_trigger_id(pystate_server):

    async def scenario():
        owner = await _RawWorker.connect(pystate_server.url, "own::h")
        await owner.send(_trigger("t-owned", "own::h", "watched"))
        await _settle(owner, "watched", "a", 1)
        thief = await _RawWorker.connect(pystate_server.url, "thief::h")
        await thief.send(_trigger("t-owned", "thief::h", "watched"))
        for _ in range(200):
            if thief.frames:
                break
            await asyncio.sleep(0.025)
        (refusal,) = thief.frames
        assert refusal["type"] == "triggerregistrationresult" and refusal["id"] == "t-owned"
        assert refusal["error"]["code"] == "trigger_registration_failed"
        assert (await _settle(owner, "watched", "b", 2))["key"] == "b"
        assert thief.events == []
        await thief.close()
        await owner.close()

    run(scenario())


@pytest.mark.parametrize("right_token", [True, False])
def test_a_reattaching_worker_takes_its_own_triggers_back(pystate_server, right_token):
    """iii-sdk reconnects with `reattach` (the old worker id and its token)
    and replays its triggers with the same ids, maybe before the server
    noticed the old socket is dead. With the right token the replay is
    its; with a wrong one it is refused and the old connection keeps it."""

    async def scenario():
        old = await _RawWorker.connect(pystate_server.url, "mine::h")
        await old.send(_trigger("t-mine", "mine::h", "watched"))
        await _settle(old, "watched", "a", 1)
        token = old.token if right_token else "not-the-token"
        new = await _RawWorker.connect(pystate_server.url, "mine::h", first=[
            {"type": "reattach", "previous_worker_id": old.id, "reattach_token": token}])
        await new.send(_trigger("t-mine", "mine::h", "watched"))
        await new.call("state::list_groups", {})
        if right_token:
            assert (await _settle(new, "watched", "b", 2))["key"] == "b"
            assert old.ws.close_code is not None or not old.ws.state.name == "OPEN"
        else:
            assert (await _settle(old, "watched", "b", 2))["key"] == "b"
            assert await _none_for(new, "watched", "c") == []
            assert any(f.get("type") == "triggerregistrationresult" and f.get("error") for f in new.frames)
        await new.close()
        await old.close()

    run(scenario())
