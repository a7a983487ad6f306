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
import socket
import struct
import time
import uuid

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

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
        assert answer["result"] is None  # nothing written
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
                assert r["result"] == mine.get(key), (i, j)
            else:
                r = await invoke(ws, "state::delete", {"scope": "load", "key": key})
                assert r["result"] == mine.pop(key, None), (i, j)
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
