"""``pystate serve``: a store served over the iii worker protocol.

A program written for the iii engine, using the official ``iii-sdk``
client, connects here instead of to the engine: its ``state::*`` calls run
on this process's store, the functions it registers can be called by every
connected worker (calls are routed through the server, as the engine
routes them), and its ``state`` triggers fire after every write, whoever
made it.

One asyncio loop serves every connection. Frames of one connection are
read in order; a call that has to wait for a worker (a routed call, a
trigger's condition or handler) runs in a task of its own, because that
worker's answer arrives on a socket whose read loop must keep going. The
state functions of the compiled kv store take microseconds and run inline,
so their answers leave in request order; a store that blocks (Redis, a
bridge, ``sync="always"``) runs them on a thread pool instead.

Nothing a connection asks for is unbounded. It has at most
``max_in_flight`` calls running in tasks; while all are busy, its socket is
not read. What the server has to write to it waits in an outbox of at most
``max_queued_bytes``; while that is full, the answers (and the calls
routed out of it) wait, so its calls stay busy and, again, its socket is
not read. A client that stops reading is pushed back by TCP and costs the
server a bounded amount of memory.

>>> import asyncio, pystate                               # doctest: +SKIP
>>> from pystate.server import Server                     # doctest: +SKIP
>>> async def main():                                     # doctest: +SKIP
...     server = Server(pystate.State("data"), port=49134)
...     await server.start()
...     await server.wait_closed()
>>> asyncio.run(main())                                   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import http
import logging
import os
import signal
import uuid
from typing import Any, Awaitable, Callable

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from pystate._backend import codec as _codec
from pystate.errors import AdapterUnavailableError, InvalidValueError, StateError, TriggerConfigError
from pystate.state import STATE_FUNCTIONS, State, is_void
from pystate.triggers import parse_trigger

__all__ = ["Server", "DEFAULT_HOST", "DEFAULT_PORT", "MAX_FRAME_BYTES", "run"]

#: The engine's port; iii-sdk connects to ws://127.0.0.1:49134 by default.
DEFAULT_PORT = 49134
#: Loopback only unless asked: a store is not something to expose by accident.
DEFAULT_HOST = "127.0.0.1"
#: iii-sdk sends and accepts messages up to 64 MiB.
MAX_FRAME_BYTES = 64 * 2**20

_log = logging.getLogger("pystate.server")
_TELEMETRY_PREFIXES = (b"OTLP", b"LOGS", b"MTRC")
# The State function every worker trigger points at: it hands the event
# over to the loop, which calls the worker's condition and handler.
_DELIVER_ID = "pystate::serve::deliver"
# Frames an outbox holds at most, whatever their size: small frames cost
# more than their text (a str object and a deque slot each).
_OUTBOX_FRAMES = 1024
_Reply = tuple[Any, Any]  # (result, error body or None)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


_STOPPED = _error("invocation_stopped", "Invocation stopped")
# The engine's code and words when the adapter fails a state function (an
# unreachable Redis, a lost bridge), as its state worker answers them. Its
# delete reads the old value first, so an unreachable store fails there,
# with the lookup's code.
_STORE_FAILED = {
    "state::set": ("SET_ERROR", "Failed to set value"),
    "state::get": ("GET_ERROR", "Failed to get value"),
    "state::delete": ("GET_ERROR", "Failed to get value before delete"),
    "state::update": ("UPDATE_ERROR", "Failed to update value"),
    "state::list": ("LIST_ERROR", "Failed to list values"),
    "state::list_groups": ("LIST_GROUPS_ERROR", "Failed to list groups"),
}

_NONE = type(None)
_STR: tuple[type, ...] = (str,)
_OPT_STR: tuple[type, ...] = (str, _NONE)
_OPT_OBJECT: tuple[type, ...] = (dict, _NONE)
#: Each frame kind the server acts on, and the JSON types its fields may
#: have, after the engine's serde types (a String, an Option, a struct). A
#: field without None is required; fields not named (data, config,
#: metadata, result, ...) may hold any JSON value.
_FRAME_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "invokefunction": {
        "invocation_id": _OPT_STR, "function_id": _STR, "action": _OPT_OBJECT,
        "namespace": _OPT_STR, "traceparent": _OPT_STR, "baggage": _OPT_STR,
    },
    "invocationresult": {
        "invocation_id": _STR, "function_id": _OPT_STR, "error": _OPT_OBJECT,
        "traceparent": _OPT_STR, "baggage": _OPT_STR,
    },
    "registerfunction": {"id": _STR, "description": _OPT_STR, "invocation": _OPT_OBJECT},
    "unregisterfunction": {"id": _STR},
    "registertrigger": {
        "id": _STR, "trigger_type": _STR, "function_id": _STR,
        "namespace": _OPT_STR, "trigger_namespace": _OPT_STR,
    },
    "unregistertrigger": {"id": _STR, "trigger_type": _OPT_STR},
    "reattach": {"previous_worker_id": _STR, "reattach_token": _OPT_STR},
    "ping": {},
}
_TYPE_NAMES = {str: "a string", dict: "an object", _NONE: "null"}


def _misfit(kind: str, msg: dict[str, Any]) -> str | None:
    """What is wrong with the types of a ``kind`` frame's fields, or None."""
    for name, allowed in _FRAME_FIELDS[kind].items():
        value = msg.get(name)
        if not isinstance(value, allowed):
            what = " or ".join(_TYPE_NAMES[t] for t in allowed)
            if value is None:
                return f"{kind}: missing field `{name}`"
            return f"{kind}: `{name}` must be {what}, not {_json_type(value)}"
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    names: dict[type, str] = {list: "an array", dict: "an object", str: "a string"}
    return names.get(type(value), type(value).__name__)


class _Outbox:
    """The frames waiting to be written to one connection: at most
    ``max_frames`` of them and ``max_bytes`` of text (a frame of any size
    gets in when the outbox is empty). ``put`` waits while it is full; the
    connection's writer task takes frames out with ``get``."""

    __slots__ = ("_frames", "_bytes", "_max_bytes", "_max_frames", "_room", "_ready", "closed", "busy")

    def __init__(self, max_bytes: int, max_frames: int) -> None:
        self._frames: collections.deque[bytes] = collections.deque()  # JSON text, UTF-8
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_frames = max_frames
        self._room: list[asyncio.Future[None]] = []  # producers waiting for room
        self._ready: asyncio.Future[None] | None = None  # the writer waiting for a frame
        self.closed = False
        self.busy = False  # the writer holds a frame it has not finished writing

    def __len__(self) -> int:
        return len(self._frames) + self.busy

    def _fits(self, size: int) -> bool:
        return not self._frames or (len(self._frames) < self._max_frames and self._bytes + size <= self._max_bytes)

    async def put(self, data: bytes) -> bool:
        """Queue ``data``, waiting for room; False if the connection is gone."""
        size = len(data)
        # Behind producers already waiting, so a large frame is not starved
        # by a stream of small ones.
        wait = bool(self._room)
        while not self.closed and (wait or not self._fits(size)):
            wait = False
            fut = asyncio.get_running_loop().create_future()
            self._room.append(fut)
            try:
                await fut
            finally:
                if not fut.done():  # cancelled while waiting
                    self._room.remove(fut)
        if self.closed:
            return False
        self._frames.append(data)
        self._bytes += size
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        return True

    async def get(self) -> bytes | None:
        """The next frame to write, waiting for one; None once closed."""
        while not self._frames and not self.closed:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                await self._ready
            finally:
                self._ready = None
        if self.closed:
            return None
        data = self._frames.popleft()
        self._bytes -= len(data)
        self.busy = True
        self._wake()
        return data

    def close(self) -> None:
        """The connection is gone: drop what waits, release every waiter."""
        self.closed = True
        self._frames.clear()
        self._bytes = 0
        self._wake()
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    def _wake(self) -> None:
        waiters, self._room = self._room, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class _Worker:
    """One connection: what it registered, the calls waiting on it, and
    what bounds the work it causes (its in-flight slots, its outbox)."""

    __slots__ = ("ws", "id", "token", "functions", "triggers", "calls", "info", "gone", "slots", "outbox", "writer")

    def __init__(self, ws: ServerConnection, max_in_flight: int, max_queued_bytes: int) -> None:
        self.ws = ws
        self.id = str(uuid.uuid4())
        self.token = str(uuid.uuid4())
        self.functions: set[str] = set()
        self.triggers: set[str] = set()
        # invocation id -> future of (result, error): calls this server made to it
        self.calls: dict[str, asyncio.Future[_Reply]] = {}
        self.info: Any = None  # what engine::workers::register told us
        self.gone = False
        self.slots = asyncio.Semaphore(max_in_flight)
        self.outbox = _Outbox(max_queued_bytes, _OUTBOX_FRAMES)
        self.writer: asyncio.Task[None] | None = None


class _Binding:
    """A worker's state trigger, and the State trigger that feeds it."""

    __slots__ = ("id", "function_id", "condition_id", "metadata", "owner", "handle")

    def __init__(self, tid: str, function_id: str, condition_id: str | None, metadata: Any, owner: _Worker, handle: Any):
        self.id = tid
        self.function_id = function_id
        self.condition_id = condition_id
        self.metadata = metadata
        self.owner = owner
        self.handle = handle


class Server:
    """Serve ``state`` to iii workers over WebSocket.

    Args:
        state: the store to serve (any adapter). The server registers one
            function and its triggers on it; it does not close it.
        host, port: where to listen (port 0: a free one, see ``port``
            after :meth:`start`).
        token: when set, a connection must send ``Authorization: Bearer
            <token>`` or it is refused with HTTP 401.
        call_timeout: seconds a call routed to a worker, and each condition
            or handler call of a trigger, may take before it fails with
            code ``timeout``.
        send_timeout: seconds a worker the server has called may go
            without reading; then it is disconnected. A client that only
            stops reading its answers is pushed back instead (see below).
        max_in_flight: calls of one connection the server works on at once
            (state calls on a thread pool, routed calls); while all are
            busy, that connection is not read.
        max_queued_bytes: text waiting to be written to one connection
            (answers, calls, events); while it is full, what would add to
            it waits, and so, through ``max_in_flight``, does the reading.
        ping_interval, ping_timeout: WebSocket keep-alive (as the SDK's).
    """

    def __init__(
        self,
        state: State,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        call_timeout: float = 30.0,
        send_timeout: float = 10.0,
        max_in_flight: int = 64,
        max_queued_bytes: int = 4 * 2**20,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._token = token
        self._call_timeout = call_timeout
        self._send_timeout = send_timeout
        self._max_in_flight = max_in_flight
        self._max_queued_bytes = max_queued_bytes
        self._ping = (ping_interval, ping_timeout)
        # The compiled kv store answers in microseconds: inline. The rest may
        # block on a network or a disk sync: a thread pool.
        self._inline = state.storage.local and state.sync != "always"
        self._workers: dict[str, _Worker] = {}
        self._functions: dict[str, _Worker] = {}
        self._bindings: dict[str, _Binding] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._deliver_ref: Any = None
        self._stopping = False
        self.counters = {"calls": 0, "routed": 0, "trigger_calls": 0, "trigger_errors": 0, "bad_frames": 0}
        # One per kind of _FRAME_FIELDS, which checks the frame first.
        self._handlers: dict[str, Callable[[_Worker, dict[str, Any]], Awaitable[Any] | None]] = {
            "invokefunction": self._on_invoke,
            "invocationresult": self._on_result,
            "registerfunction": self._on_register_function,
            "unregisterfunction": self._on_unregister_function,
            "registertrigger": self._on_register_trigger,
            "unregistertrigger": self._on_unregister_trigger,
            "reattach": self._on_reattach,
            "ping": self._on_ping,
        }

    # ---- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        """Listen. Returns once the socket is bound (``port`` is then the
        real port)."""
        self._loop = asyncio.get_running_loop()
        self._deliver_ref = self.state.register_function(_DELIVER_ID, self._deliver_from_thread)
        self._server = await serve(
            self._serve_connection,
            self.host,
            self.port,
            max_size=MAX_FRAME_BYTES,
            compression=None,  # JSON on loopback: deflate costs more than it saves
            process_request=self._check_token if self._token else None,
            ping_interval=self._ping[0],
            ping_timeout=self._ping[1],
            write_limit=2**20,
            close_timeout=2,  # a peer that will not finish the closing handshake does not hold up SIGTERM
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let in-flight calls and trigger deliveries finish
        (at most ``timeout`` seconds), then close every connection. The
        store stays open: flush and close it after this."""
        if self._stopping:
            return
        self._stopping = True
        self._server.close(close_connections=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Events of writes already acknowledged: into tasks, then done.
        await asyncio.to_thread(self.state.flush_events, timeout)
        while self._tasks and loop.time() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
        # Their answers are queued: let them leave before the close frame.
        while any(w.outbox for w in self._workers.values()) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.gather(*(w.ws.close(1001, "server shutting down") for w in list(self._workers.values())))
        await self._server.wait_closed()
        if self._deliver_ref is not None:
            self._deliver_ref.unregister()
        for b in list(self._bindings.values()):
            b.handle.unregister()
        self._bindings.clear()

    async def wait_closed(self) -> None:
        await self._server.wait_closed()

    def stats(self) -> dict[str, Any]:
        """Connections, registrations and call counters."""
        return {
            "workers": len(self._workers),
            "functions": len(self._functions),
            "triggers": len(self._bindings),
            "tasks": len(self._tasks),
            **self.counters,
        }

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _start(self, w: _Worker, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` in a task holding one of ``w``'s in-flight
        slots; the caller (``w``'s read loop) waits while none is free,
        which is what stops a flood: the socket is not read meanwhile."""
        await w.slots.acquire()
        task = self._spawn(fn(*args))
        task.add_done_callback(lambda _: w.slots.release())

    def _check_token(self, connection: ServerConnection, request: Any) -> Any:
        # Exactly one Authorization header, and the right one: two are a bad
        # credential like any other (Headers.get would raise on them).
        given = request.headers.get_all("Authorization")
        if len(given) == 1 and hmac.compare_digest(given[0].encode(), f"Bearer {self._token}".encode()):
            return None
        return connection.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token\n")

    # ---- connections --------------------------------------------------------

    async def _serve_connection(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        if path.split("?", 1)[0].rstrip("/").endswith("/otel"):
            # iii-sdk's telemetry side channel: accepted and drained.
            async for _ in ws:
                pass
            return
        if self._stopping:
            await ws.close(1001, "server shutting down")
            return
        w = _Worker(ws, self._max_in_flight, self._max_queued_bytes)
        self._workers[w.id] = w
        w.writer = asyncio.ensure_future(self._write_loop(w))
        handlers = self._handlers
        try:
            await self._queue(w, {"type": "workerregistered", "worker_id": w.id, "reattach_token": w.token})
            async for raw in ws:
                if isinstance(raw, bytes) and raw[:4] in _TELEMETRY_PREFIXES:
                    continue
                msg, refused = _parse(raw)
                kind = msg.get("type") if isinstance(msg, dict) else None
                if not isinstance(kind, str):
                    self.counters["bad_frames"] += 1
                    _log.debug("worker %s: ignored a frame that is not JSON or has no type", w.id)
                    continue
                handler = handlers.get(kind)
                if handler is None:
                    if kind not in _IGNORED:
                        self.counters["bad_frames"] += 1
                        _log.debug("worker %s: ignored a frame of unknown type %.80r", w.id, kind)
                    continue
                problem = _misfit(kind, msg)
                if problem is not None:
                    refused = _error("deserialization_error", problem)
                if refused is not None:
                    pending = self._on_bad_frame(w, kind, msg, refused)
                else:
                    pending = handler(w, msg)
                if pending is not None:
                    await pending
        except ConnectionClosed:
            pass
        finally:
            self._drop(w)

    def _on_bad_frame(self, w: _Worker, kind: str, msg: dict[str, Any], error: dict[str, str]) -> Awaitable[None] | None:
        """A frame of a known kind whose fields are of the wrong type, or
        hold what the API refuses (an integer beyond 64 bits): answered
        where the protocol has an answer, ignored otherwise."""
        self.counters["bad_frames"] += 1
        iid = msg.get("invocation_id")
        if kind == "invokefunction" and isinstance(iid, str):
            try:
                void = is_void(msg.get("action"))
            except StateError:
                void = False  # a malformed action: the caller waits for an answer
            if not void:
                fid = msg.get("function_id")
                return self._reply(w, iid, fid if isinstance(fid, str) else None, None, error)
        elif kind == "invocationresult" and isinstance(iid, str):
            # The worker's answer cannot be passed on: its caller learns why
            # now rather than at the timeout.
            fut = w.calls.get(iid)
            if fut is not None and not fut.done():
                fut.set_result((None, error))
                return None
        _log.debug("worker %s: ignored a %s frame: %s", w.id, kind, error["message"])
        return None

    def _drop(self, w: _Worker) -> None:
        """A worker is gone: its functions and triggers go with it, and
        calls waiting on it fail now rather than at their timeout."""
        if w.gone:
            return
        w.gone = True
        self._workers.pop(w.id, None)
        for fid in w.functions:
            if self._functions.get(fid) is w:
                del self._functions[fid]
        w.functions.clear()
        for tid in list(w.triggers):
            self._remove_binding(tid)
        for fut in w.calls.values():
            if not fut.done():
                fut.set_result((None, _STOPPED))
        w.calls.clear()
        w.outbox.close()

    async def _write_loop(self, w: _Worker) -> None:
        """Write ``w``'s outbox to its socket, one frame at a time. A
        worker the server waits on (a call made to it) that reads nothing
        for ``send_timeout`` seconds is disconnected; one that only leaves
        its own answers unread is left to push back."""
        ws = w.ws
        try:
            while (data := await w.outbox.get()) is not None:
                send = asyncio.ensure_future(ws.send(data, text=True))
                try:
                    while not (await asyncio.wait({send}, timeout=self._send_timeout))[0]:
                        if w.calls and not w.gone:
                            _log.warning("worker %s has not read for %.0f s: disconnecting it", w.id, self._send_timeout)
                            ws.transport.abort()
                            return
                    send.result()
                finally:
                    w.outbox.busy = False
        except ConnectionClosed:
            pass
        finally:
            # Whatever ended the writing ended the connection: release
            # everyone waiting on it (the read loop drops it too, later).
            self._drop(w)

    async def _queue(self, w: _Worker, frame: dict[str, Any]) -> bool:
        """Queue a frame answering what ``w`` sent: waits, without a
        timeout, while ``w`` does not read (its read loop or one of its
        in-flight slots waits with it: the push-back). False if gone."""
        return await w.outbox.put(_codec.dumps(frame))

    async def _send(self, w: _Worker, frame: dict[str, Any]) -> bool:
        """Queue a call or an event for ``w``, giving up on (and
        disconnecting) a worker whose outbox stays full for
        ``send_timeout`` seconds. False if it is gone."""
        if w.gone:
            return False
        try:
            return await asyncio.wait_for(self._queue(w, frame), self._send_timeout)
        except TimeoutError:
            _log.warning("worker %s has not read for %.0f s: disconnecting it", w.id, self._send_timeout)
            w.ws.transport.abort()
            self._drop(w)
            return False

    async def _reply(self, w: _Worker, invocation_id: str, function_id: Any, result: Any, error: Any) -> None:
        frame: dict[str, Any] = {"type": "invocationresult", "invocation_id": invocation_id, "function_id": function_id}
        if error is not None:
            frame["error"] = error
        elif result is not None:
            # As the engine (serde skips a None result): no `result` field
            # for a missing key's get or delete, a void answer, a null.
            frame["result"] = result
        await self._queue(w, frame)

    # ---- frames from workers --------------------------------------------------

    def _on_invoke(self, w: _Worker, msg: dict[str, Any]) -> Awaitable[None] | None:
        self.counters["calls"] += 1
        fid: str = msg["function_id"]  # _FRAME_FIELDS: a string; the id a string or None
        iid: str | None = msg.get("invocation_id")
        try:
            void = is_void(msg.get("action"))
        except StateError as e:  # enqueue (no queues here) or a malformed action
            return self._answer(w, iid, fid, None, _error(e.code, e.message))
        if void:
            iid = None
        ns = msg.get("namespace")
        if ns is not None and not ns.strip():
            return self._answer(w, iid, fid, None, _error("INVALID_NAMESPACE", "namespace must not be blank"))
        data = msg.get("data")
        builtin = STATE_FUNCTIONS.get(fid)
        if builtin is not None:
            if self._inline:
                result, error = self._run_builtin(fid, builtin, data)
                return self._answer(w, iid, fid, result, error)
            return self._start(w, self._builtin_in_thread, w, iid, fid, builtin, data)
        if fid == "engine::workers::register":
            w.info = data
            return self._answer(w, iid, fid, None, None)
        owner = self._functions.get(fid)
        if owner is not None:
            return self._start(w, self._route, w, iid, owner, fid, msg)
        return self._answer(w, iid, fid, None, _not_found(fid))

    def _answer(self, w: _Worker, iid: str | None, fid: str, result: Any, error: Any) -> Awaitable[None] | None:
        if iid is None:  # a void call, or one without an id: nobody waits
            return None
        return self._reply(w, iid, fid, result, error)

    def _run_builtin(self, fid: str, fn: Callable[[State, Any], Any], data: Any) -> _Reply:
        try:
            return fn(self.state, data), None
        except AdapterUnavailableError as e:
            # The Python API's error; on the wire, the engine's code for it.
            code, words = _STORE_FAILED[fid]
            return None, _error(code, f"{words}: {e.message}")
        except StateError as e:
            return None, _error(e.code, e.message)
        except Exception as e:  # a store failure, not the caller's input
            _log.exception("%s failed", fid)
            code, words = _STORE_FAILED[fid]
            return None, _error(code, f"{words}: {type(e).__name__}: {e}")

    async def _builtin_in_thread(self, w: _Worker, iid: str | None, fid: str, fn: Callable[[State, Any], Any], data: Any) -> None:
        result, error = await asyncio.to_thread(self._run_builtin, fid, fn, data)
        if iid is not None:
            await self._reply(w, iid, fid, result, error)

    async def _route(self, caller: _Worker, iid: str | None, owner: _Worker, fid: str, msg: dict[str, Any]) -> None:
        self.counters["routed"] += 1
        extra = {name: msg[name] for name in ("metadata", "traceparent", "baggage") if msg.get(name) is not None}
        result, error = await self._call_worker(owner, fid, msg.get("data"), extra)
        if iid is not None:
            await self._reply(caller, iid, fid, result, error)

    async def _call_worker(self, owner: _Worker, fid: str, data: Any, extra: dict[str, Any]) -> _Reply:
        """Invoke ``fid`` on the worker that registered it; wait for its answer."""
        iid = str(uuid.uuid4())
        frame = {"type": "invokefunction", "invocation_id": iid, "function_id": fid, "data": data, **extra}
        fut: asyncio.Future[_Reply] = asyncio.get_running_loop().create_future()
        owner.calls[iid] = fut
        try:
            if not await self._send(owner, frame):
                return None, _STOPPED
            try:
                return await asyncio.wait_for(fut, self._call_timeout)
            except TimeoutError:
                return None, _error("timeout", f"{fid} did not answer within {self._call_timeout:g} s")
        finally:
            owner.calls.pop(iid, None)

    def _on_result(self, w: _Worker, msg: dict[str, Any]) -> None:
        fut = w.calls.get(msg["invocation_id"])
        if fut is None or fut.done():
            return  # late (after a timeout) or unknown: normal, dropped
        error = msg.get("error")
        fut.set_result((msg.get("result"), error if error else None))

    def _on_register_function(self, w: _Worker, msg: dict[str, Any]) -> Awaitable[Any] | None:
        fid: str = msg["id"]
        if not fid:
            self.counters["bad_frames"] += 1
            return None
        if fid in STATE_FUNCTIONS or fid.startswith("engine::"):
            _log.warning("worker %s: cannot register %r, a function of the server", w.id, fid)
            return None
        owner = self._functions.get(fid)
        if owner is not None and owner is not w:
            return self._queue(w, {
                "type": "registrationrejected",
                "code": "FUNCTION_NAMESPACE_CONFLICT",  # the only code the SDK survives
                "namespace": "default",
                "function_id": fid,
                "owner_worker_id": owner.id,
            })
        self._functions[fid] = w
        w.functions.add(fid)
        return None

    # Ownership, one rule for functions and triggers: a registration
    # belongs to the connection that made it, until that connection is gone
    # (it disconnects, or a reconnect of the same worker retires it with
    # `reattach`, see _on_reattach). Another connection's unregister of it
    # is ignored, its register of the same id refused.

    def _on_unregister_function(self, w: _Worker, msg: dict[str, Any]) -> None:
        fid: str = msg["id"]
        if self._functions.get(fid) is w:
            del self._functions[fid]
            w.functions.discard(fid)

    def _on_register_trigger(self, w: _Worker, msg: dict[str, Any]) -> Awaitable[Any] | None:
        tid: str = msg["id"]
        kind: str = msg["trigger_type"]
        fid: str = msg["function_id"]
        if not tid:
            self.counters["bad_frames"] += 1
            return None
        taken = self._bindings.get(tid)
        if taken is not None and taken.owner is not w:
            _log.warning("worker %s: cannot register trigger %r, worker %s's", w.id, tid, taken.owner.id)
            return self._queue(w, {
                "type": "triggerregistrationresult", "id": tid, "trigger_type": kind, "function_id": fid,
                "error": _error("trigger_registration_failed", f"trigger id {tid} is registered by another worker"),
            })
        try:
            function_id, config, metadata = parse_trigger(
                {"type": kind, "function_id": fid, "config": msg.get("config"), "metadata": msg.get("metadata")}
            )
        except TriggerConfigError as e:
            code = e.code if e.code == "trigger_type_not_found" else "trigger_registration_failed"
            return self._queue(w, {
                "type": "triggerregistrationresult", "id": tid, "trigger_type": kind,
                "function_id": fid, "error": _error(code, e.message),
            })
        # The worker's own id again (the SDK re-sends what it has): a
        # repeat replaces.
        self._remove_binding(tid)
        handle = self.state.register_trigger({
            "type": "state",
            "function_id": _DELIVER_ID,
            "config": {"scope": config["scope"], "key": config["key"]},
            "metadata": tid,
        })
        self._bindings[tid] = _Binding(tid, function_id, config["condition_function_id"], metadata, w, handle)
        w.triggers.add(tid)
        return None

    def _on_unregister_trigger(self, w: _Worker, msg: dict[str, Any]) -> None:
        tid: str = msg["id"]
        b = self._bindings.get(tid)
        if b is not None and b.owner is w:
            self._remove_binding(tid)

    def _remove_binding(self, tid: str) -> None:
        b = self._bindings.pop(tid, None)
        if b is not None:
            b.handle.unregister()
            b.owner.triggers.discard(tid)

    def _on_reattach(self, w: _Worker, msg: dict[str, Any]) -> None:
        old = self._workers.get(msg["previous_worker_id"])
        token = msg.get("reattach_token") or ""
        if old is not None and old is not w and hmac.compare_digest(token.encode(), old.token.encode()):
            # The client's old socket, not yet noticed dead: its functions
            # and triggers go now, so the replay that follows (the same ids)
            # registers them to this connection instead of being refused.
            self._drop(old)
            old.ws.transport.abort()

    def _on_ping(self, w: _Worker, msg: dict[str, Any]) -> Awaitable[bool]:
        return self._queue(w, {"type": "pong"})

    # ---- triggers -------------------------------------------------------------

    def _deliver_from_thread(self, event: dict[str, Any], metadata: Any) -> None:
        """Runs on the store's dispatcher thread, once per matching trigger
        and event, in write order: hand over to the loop, never wait."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._fire, metadata, event)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _fire(self, tid: str, event: dict[str, Any]) -> None:
        b = self._bindings.get(tid)
        if b is not None:
            self._spawn(self._run_binding(b, event))

    async def _run_binding(self, b: _Binding, event: dict[str, Any]) -> None:
        # As the engine: the condition gets the event and no metadata; only
        # an answer of exactly false (or an error) skips the handler.
        if b.condition_id is not None:
            verdict, error = await self._invoke(b.condition_id, event, None)
            if error is not None:
                self.counters["trigger_errors"] += 1
                _log.warning("trigger %s: condition %s failed: %s", b.id, b.condition_id, error)
                return
            if verdict is False:
                return
        _, error = await self._invoke(b.function_id, event, b.metadata)
        if error is not None:
            self.counters["trigger_errors"] += 1
            _log.warning("trigger %s: handler %s failed: %s", b.id, b.function_id, error)

    async def _invoke(self, fid: str, data: Any, metadata: Any) -> _Reply:
        self.counters["trigger_calls"] += 1
        builtin = STATE_FUNCTIONS.get(fid)
        if builtin is not None:
            if self._inline:
                return self._run_builtin(fid, builtin, data)
            return await asyncio.to_thread(self._run_builtin, fid, builtin, data)
        owner = self._functions.get(fid)
        if owner is None:
            return None, _not_found(fid)
        return await self._call_worker(owner, fid, data, {} if metadata is None else {"metadata": metadata})


# Frames a worker may send that need nothing from a state server.
_IGNORED = frozenset({
    "pong", "registerservice", "registertriggertype", "unregistertriggertype",
    "triggerregistrationresult", "workerregistered", "registrationrejected",
    "observe", "unobserve", "observerack", "invocationsobserved", "localinvocationstats",
})


def _parse(raw: str | bytes) -> tuple[Any, dict[str, str] | None]:
    """A frame's JSON, by the API's rules (loads_text), and the error for
    it if the API refuses what it holds (an integer beyond 64 bits): then
    the frame is still decoded, so that the refusal can be answered. A
    frame that is not JSON gives (None, None)."""
    try:
        return _codec.loads_text(raw), None
    except InvalidValueError as e:
        return _codec.loads(raw), _error(e.code, e.message)
    except ValueError:
        return None, None


def _not_found(fid: str) -> dict[str, str]:
    return _error("function_not_found", f"Function {fid} not found in namespace default.")


async def _serve_until_signalled(server: Server, on_ready: Callable[[Server], None]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    on_ready(server)
    await stop.wait()
    _log.info("pystate serve: stopping")
    await server.stop()


def run(
    state: State,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    token: str | None = None,
    on_ready: Callable[[Server], None] = lambda server: None,
    **options: Any,
) -> None:
    """Serve ``state`` until SIGTERM or SIGINT, then stop accepting, finish
    in-flight calls, and close the store (which makes its writes durable)."""
    server = Server(state, host=host, port=port, token=token, **options)
    try:
        asyncio.run(_serve_until_signalled(server, on_ready))
    finally:
        state.close(timeout=30)


def token_from_env() -> str | None:
    """``III_TOKEN``, as iii-sdk reads it; None when unset or empty."""
    return os.environ.get("III_TOKEN") or None
