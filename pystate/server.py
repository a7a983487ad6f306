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
from pystate.errors import StateError, TriggerConfigError
from pystate.state import _BUILTINS, State, is_void
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
_Reply = tuple[Any, Any]  # (result, error body or None)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


_STOPPED = _error("invocation_stopped", "Invocation stopped")
_OP_ERROR = {
    "state::set": "SET_ERROR",
    "state::get": "GET_ERROR",
    "state::delete": "DELETE_ERROR",
    "state::update": "UPDATE_ERROR",
    "state::list": "LIST_ERROR",
    "state::list_groups": "LIST_GROUPS_ERROR",
}


class _Worker:
    """One connection: what it registered and the calls waiting on it."""

    __slots__ = ("ws", "id", "token", "functions", "triggers", "calls", "info", "gone")

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.id = str(uuid.uuid4())
        self.token = str(uuid.uuid4())
        self.functions: set[str] = set()
        self.triggers: set[str] = set()
        # invocation id -> future of (result, error): calls this server made to it
        self.calls: dict[str, asyncio.Future[_Reply]] = {}
        self.info: Any = None  # what engine::workers::register told us
        self.gone = False


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
        send_timeout: seconds a frame to a worker may wait for that worker
            to read; a worker that stops reading longer is disconnected.
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
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self.state = state
        self.host = host
        self.port = port
        self._token = token
        self._call_timeout = call_timeout
        self._send_timeout = send_timeout
        self._ping = (ping_interval, ping_timeout)
        # The compiled kv store answers in microseconds: inline. The rest may
        # block on a network or a disk sync: a thread pool.
        self._inline = state.adapter == "kv" and getattr(state, "sync", None) != "always"
        self._workers: dict[str, _Worker] = {}
        self._functions: dict[str, _Worker] = {}
        self._bindings: dict[str, _Binding] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._deliver_ref: Any = None
        self._stopping = False
        self.counters = {"calls": 0, "routed": 0, "trigger_calls": 0, "trigger_errors": 0, "bad_frames": 0}
        self._handlers: dict[str, Callable[[_Worker, dict[str, Any]], Awaitable[None] | None]] = {
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

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _check_token(self, connection: ServerConnection, request: Any) -> Any:
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
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
        w = _Worker(ws)
        self._workers[w.id] = w
        handlers = self._handlers
        loads = _codec.loads
        try:
            await ws.send(_codec.dumps({"type": "workerregistered", "worker_id": w.id, "reattach_token": w.token}), text=True)
            async for raw in ws:
                if isinstance(raw, bytes) and raw[:4] in _TELEMETRY_PREFIXES:
                    continue
                try:
                    msg = loads(raw)
                except ValueError:
                    self.counters["bad_frames"] += 1
                    _log.debug("worker %s: ignored a frame that is not JSON", w.id)
                    continue
                handler = handlers.get(msg.get("type")) if isinstance(msg, dict) else None
                if handler is None:
                    if not isinstance(msg, dict) or msg.get("type") not in _IGNORED:
                        self.counters["bad_frames"] += 1
                        _log.debug("worker %s: ignored a frame of unknown type", w.id)
                    continue
                pending = handler(w, msg)
                if pending is not None:
                    await pending
        except ConnectionClosed:
            pass
        finally:
            self._drop(w)

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

    async def _send(self, w: _Worker, frame: dict[str, Any]) -> bool:
        """Send, giving up on (and disconnecting) a worker that does not
        read for ``send_timeout`` seconds. False if it is gone."""
        if w.gone:
            return False
        data = _codec.dumps(frame)
        try:
            await asyncio.wait_for(asyncio.shield(w.ws.send(data, text=True)), self._send_timeout)
            return True
        except ConnectionClosed:
            return False
        except TimeoutError:
            _log.warning("worker %s has not read for %.0f s: disconnecting it", w.id, self._send_timeout)
            w.ws.transport.abort()
            self._drop(w)
            return False

    async def _reply(self, w: _Worker, invocation_id: Any, function_id: Any, result: Any, error: Any) -> None:
        frame: dict[str, Any] = {"type": "invocationresult", "invocation_id": invocation_id, "function_id": function_id}
        if error is not None:
            frame["error"] = error
        else:
            frame["result"] = result
        # No timeout here: a caller that stops reading stops being read
        # (its read loop waits on this), and keep-alive ends it.
        try:
            await w.ws.send(_codec.dumps(frame), text=True)
        except ConnectionClosed:
            pass

    # ---- frames from workers --------------------------------------------------

    def _on_invoke(self, w: _Worker, msg: dict[str, Any]) -> Awaitable[None] | None:
        self.counters["calls"] += 1
        fid = msg.get("function_id")
        iid = msg.get("invocation_id")
        try:
            void = is_void(msg.get("action"))
        except StateError as e:  # enqueue (no queues here) or a malformed action
            return self._answer(w, iid, fid, None, _error(e.code, e.message))
        answer = not void and iid is not None
        if not isinstance(fid, str):
            if answer:
                return self._answer(w, iid, fid, None, _error(
                    "deserialization_error", "invokefunction: function_id must be a string"))
            return None
        ns = msg.get("namespace")
        if isinstance(ns, str) and not ns.strip():
            if answer:
                return self._answer(w, iid, fid, None, _error("INVALID_NAMESPACE", "namespace must not be blank"))
            return None
        data = msg.get("data")
        builtin = _BUILTINS.get(fid)
        if builtin is not None:
            if self._inline:
                result, error = self._run_builtin(fid, builtin, data)
                return self._answer(w, iid, fid, result, error) if answer else None
            self._spawn(self._builtin_in_thread(w, iid if answer else None, fid, builtin, data))
            return None
        if fid == "engine::workers::register":
            w.info = data
            return self._answer(w, iid, fid, None, None) if answer else None
        owner = self._functions.get(fid)
        if owner is not None:
            self._spawn(self._route(w, iid if answer else None, owner, fid, msg))
            return None
        if answer:
            return self._answer(w, iid, fid, None, _not_found(fid))
        return None

    def _answer(self, w: _Worker, iid: Any, fid: Any, result: Any, error: Any) -> Awaitable[None] | None:
        if iid is None:
            return None
        return self._reply(w, iid, fid, result, error)

    def _run_builtin(self, fid: str, fn: Callable[[State, Any], Any], data: Any) -> _Reply:
        try:
            return fn(self.state, data), None
        except StateError as e:
            return None, _error(e.code, e.message)
        except Exception as e:  # a store failure, not the caller's input
            _log.exception("%s failed", fid)
            return None, _error(_OP_ERROR[fid], f"{type(e).__name__}: {e}")

    async def _builtin_in_thread(self, w: _Worker, iid: Any, fid: str, fn: Callable[[State, Any], Any], data: Any) -> None:
        result, error = await asyncio.to_thread(self._run_builtin, fid, fn, data)
        if iid is not None:
            await self._reply(w, iid, fid, result, error)

    async def _route(self, caller: _Worker, iid: Any, owner: _Worker, fid: str, msg: dict[str, Any]) -> None:
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
        fut = w.calls.get(msg.get("invocation_id"))  # type: ignore[arg-type]
        if fut is None or fut.done():
            return  # late (after a timeout) or unknown: normal, dropped
        error = msg.get("error")
        fut.set_result((msg.get("result"), error if error else None))

    def _on_register_function(self, w: _Worker, msg: dict[str, Any]) -> Awaitable[None] | None:
        fid = msg.get("id")
        if not isinstance(fid, str) or not fid:
            self.counters["bad_frames"] += 1
            return None
        if fid in _BUILTINS or fid.startswith("engine::"):
            _log.warning("worker %s: cannot register %r, a function of the server", w.id, fid)
            return None
        owner = self._functions.get(fid)
        if owner is not None and owner is not w:
            return self._send(w, {
                "type": "registrationrejected",
                "code": "FUNCTION_NAMESPACE_CONFLICT",  # the only code the SDK survives
                "namespace": "default",
                "function_id": fid,
                "owner_worker_id": owner.id,
            })
        self._functions[fid] = w
        w.functions.add(fid)
        return None

    def _on_unregister_function(self, w: _Worker, msg: dict[str, Any]) -> None:
        fid = msg.get("id")
        if isinstance(fid, str) and self._functions.get(fid) is w:
            del self._functions[fid]
            w.functions.discard(fid)

    def _on_register_trigger(self, w: _Worker, msg: dict[str, Any]) -> Awaitable[None] | None:
        tid = msg.get("id")
        kind = msg.get("trigger_type")
        fid = msg.get("function_id")
        if not isinstance(tid, str) or not tid:
            self.counters["bad_frames"] += 1
            return None
        try:
            function_id, config, metadata = parse_trigger(
                {"type": kind, "function_id": fid, "config": msg.get("config"), "metadata": msg.get("metadata")}
            )
        except TriggerConfigError as e:
            code = e.code if e.code == "trigger_type_not_found" else "trigger_registration_failed"
            return self._send(w, {
                "type": "triggerregistrationresult", "id": tid, "trigger_type": kind,
                "function_id": fid, "error": _error(code, e.message),
            })
        # The SDK replays its triggers with the same ids after a reconnect:
        # a repeat replaces.
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
        tid = msg.get("id")
        if isinstance(tid, str):
            self._remove_binding(tid)

    def _remove_binding(self, tid: str) -> None:
        b = self._bindings.pop(tid, None)
        if b is not None:
            b.handle.unregister()
            b.owner.triggers.discard(tid)

    def _on_reattach(self, w: _Worker, msg: dict[str, Any]) -> None:
        old = self._workers.get(msg.get("previous_worker_id"))  # type: ignore[arg-type]
        if old is not None and old is not w and hmac.compare_digest(
            str(msg.get("reattach_token", "")).encode(), old.token.encode()
        ):
            # The client's old socket, not yet noticed dead: its
            # registrations must not shadow the replay that follows.
            self._drop(old)
            old.ws.transport.abort()

    def _on_ping(self, w: _Worker, msg: dict[str, Any]) -> Awaitable[None]:
        return self._send(w, {"type": "pong"})

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
        builtin = _BUILTINS.get(fid)
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
