"""The ``bridge`` adapter: state kept by a remote iii engine or ``pystate serve``.

Every state call is forwarded over the iii worker protocol (one WebSocket,
one ``invokefunction`` per call, answers matched by ``invocation_id``), so
the remote side is the single owner of the data and many processes, on many
machines, share it. Triggers registered on this object fire for writes made
through it, as with the other adapters; writes made by others fire the
remote side's own triggers.

A dropped connection fails the calls waiting on it with
``adapter_unavailable``; the next call reconnects.

>>> import pystate  # doctest: +SKIP
>>> st = pystate.State(adapter="bridge", bridge_url="ws://127.0.0.1:49134")  # doctest: +SKIP
>>> st.set("users", "u1", {"name": "Ada"}) is None  # doctest: +SKIP
True
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
import uuid
from typing import Any, Iterator
from urllib.parse import urlparse

from pystate._backend import codec as _codec
from pystate._backend import core as _core
from pystate.errors import (
    AdapterUnavailableError,
    ClosedError,
    ConfigError,
    FunctionNotFoundError,
    PayloadError,
    StateError,
    UnsupportedError,
    ValueTooLargeError,
)
from pystate.adapters.remote import RemoteState
from pystate.adapters import check_pair as _pair
from pystate.adapters import check_text as _text
from pystate._backend import ops as _ops

UpdateResult = _core.UpdateResult
apply = _ops.apply

__all__ = ["BridgeState", "DEFAULT_BRIDGE_URL"]

#: The engine's default address.
DEFAULT_BRIDGE_URL = "ws://127.0.0.1:49134"
_MAX_FRAME = 64 * 2**20
_log = logging.getLogger("pystate.bridge")

_ERRORS: dict[str, type[StateError]] = {
    "deserialization_error": PayloadError,
    "VALUE_TOO_LARGE": ValueTooLargeError,
    "function_not_found": FunctionNotFoundError,
    "adapter_unavailable": AdapterUnavailableError,
    "invocation_stopped": AdapterUnavailableError,
}


class _Waiter:
    """One call's answer, handed from the reader thread to the caller."""

    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: Any = None


class BridgeState(RemoteState):
    """A :class:`pystate.State` whose values live behind an iii engine or a
    ``pystate serve`` process.

    Made by ``State(adapter="bridge", bridge_url=...)``.

    Args:
        bridge_url: ``ws://host:port`` or ``wss://...`` (default
            ``ws://127.0.0.1:49134``, the engine's port).
        token: sent as ``Authorization: Bearer <token>`` (default: the
            ``III_TOKEN`` environment variable, as iii-sdk does).
        timeout: seconds a call may wait for its answer (default 30) before
            it fails with ``adapter_unavailable``.
        max_value_bytes, triggers_enabled, max_pending_events,
            event_queue_full: as for :class:`pystate.State`.

    Raises:
        ConfigError: a malformed URL, or options of the kv adapter.
        AdapterUnavailableError: the remote side cannot be reached.
    """

    __slots__ = (
        "_url", "_headers", "_timeout", "_conn", "_conn_lock",
        "_pending", "_reader", "worker_id",
    )

    __signature__ = None  # State's shows the kv adapter's options; inspect reads __init__ here

    def __init__(
        self,
        path: Any = None,
        *,
        adapter: str = "bridge",
        bridge_url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        max_value_bytes: int | None = None,
        triggers_enabled: bool = True,
        max_pending_events: int = 10_000,
        event_queue_full: str = "block",
        **kv_options: Any,
    ) -> None:
        self._conn: Any = None
        self._check_options("bridge", "bridge_url", path, kv_options, max_value_bytes,
                            triggers_enabled, max_pending_events, event_queue_full)
        if not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout: expected a positive number of seconds, got {timeout!r}")
        url = DEFAULT_BRIDGE_URL if bridge_url is None else bridge_url
        parsed = urlparse(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("ws", "wss") or not parsed.netloc:
            raise ConfigError(f"bridge_url: expected ws://host:port or wss://..., got {bridge_url!r}")
        token = token if token is not None else os.environ.get("III_TOKEN") or None
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = float(timeout)
        self._conn_lock = threading.Lock()
        self._pending: dict[str, _Waiter] = {}
        self._reader: threading.Thread | None = None
        self.worker_id: str | None = None
        self._connect()
        self._is_closed = False
        self._init_dispatch(triggers_enabled, max_pending_events, event_queue_full)

    # ---- the connection -------------------------------------------------------

    def _connect(self) -> Any:
        """Open the socket and start its reader; the caller holds no lock."""
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        with self._conn_lock:
            if self._conn is not None:
                return self._conn
            try:
                conn = connect(
                    self._url,
                    max_size=_MAX_FRAME,
                    compression=None,
                    additional_headers=self._headers,
                    open_timeout=min(self._timeout, 10.0),
                ).__enter__()  # the socket is ours until close(); websockets>=17 asks for this form
            except InvalidStatus as e:
                raise AdapterUnavailableError(
                    f"{self._url} refused the connection (HTTP {e.response.status_code}"
                    f"{': check the token' if e.response.status_code == 401 else ''})"
                ) from None
            except (OSError, TimeoutError, WebSocketException) as e:
                raise AdapterUnavailableError(f"cannot reach {self._url}: {e}") from None
            self._conn = conn
            self._reader = threading.Thread(target=self._read, args=(conn,), name="pystate-bridge", daemon=True)
            self._reader.start()
            return conn

    def _read(self, conn: Any) -> None:
        """The reader thread: answers to their callers, until the socket ends."""
        loads = _codec.loads
        pending = self._pending
        try:
            for raw in conn:
                try:
                    msg = loads(raw)
                    kind = msg.get("type")
                except (ValueError, AttributeError):
                    continue
                if kind == "invocationresult":
                    waiter = pending.pop(msg.get("invocation_id"), None)
                    if waiter is not None:
                        waiter.result = msg.get("result")
                        waiter.error = msg.get("error") or None
                        waiter.done.set()
                elif kind == "workerregistered":
                    self.worker_id = msg.get("worker_id")
                elif kind == "invokefunction" and msg.get("invocation_id") is not None:
                    # We register no functions remotely; answer rather than
                    # leave the other side waiting.
                    fid = msg.get("function_id")
                    conn.send(_codec.dumps({
                        "type": "invocationresult", "invocation_id": msg["invocation_id"], "function_id": fid,
                        "error": {"code": "function_not_found", "message": f"Function {fid} not found"},
                    }), text=True)
                elif kind == "ping":
                    conn.send(b'{"type":"pong"}', text=True)
        except Exception as e:  # the socket ended
            _log.debug("bridge to %s ended: %s", self._url, e)
        finally:
            with self._conn_lock:
                if self._conn is conn:
                    self._conn = None
            # Every call still waiting on this socket fails now.
            for iid in list(pending):
                waiter = pending.pop(iid, None)
                if waiter is not None and not waiter.done.is_set():
                    waiter.error = {"code": "adapter_unavailable", "message": f"the connection to {self._url} was lost"}
                    waiter.done.set()

    def _call(self, fid: str, payload: dict[str, Any]) -> Any:
        if self._is_closed:
            raise ClosedError("the store is closed")
        conn = self._conn or self._connect()
        iid = str(uuid.uuid4())
        frame = _codec.dumps({"type": "invokefunction", "invocation_id": iid, "function_id": fid, "data": payload})
        waiter = _Waiter()
        self._pending[iid] = waiter
        try:
            conn.send(frame, text=True)
        except Exception as e:
            self._pending.pop(iid, None)
            raise AdapterUnavailableError(f"cannot send to {self._url}: {e}") from None
        if not waiter.done.wait(self._timeout):
            self._pending.pop(iid, None)
            raise AdapterUnavailableError(f"{fid}: no answer from {self._url} within {self._timeout:g} s")
        error = waiter.error
        if error is not None:
            raise _as_exception(fid, error)
        return waiter.result

    # ---- plumbing ---------------------------------------------------------------

    @property
    def adapter(self) -> str:
        """The storage adapter: ``"bridge"``."""
        return "bridge"

    @property
    def bridge_url(self) -> str:
        return self._url

    def _rewire(self) -> None:
        self._watched = bool(self._triggers_enabled and self._triggers.count)

    # ---- the six functions -------------------------------------------------------

    def set(self, scope: str, key: str, value: Any) -> Any:
        """Store ``value`` at (scope, key); return the previous value or None."""
        _text(scope, "scope")
        _text(key, "key")
        if self._limit is not None:
            size = len(_codec.dumps(value))
            if size > self._limit:
                raise ValueTooLargeError(
                    f"value of {size} bytes exceeds the configured max_value_bytes limit of {self._limit}"
                )
        payload = {"scope": scope, "key": key, "value": value}
        self._writable()
        if not self._is_watched(scope, key):
            return self._call("state::set", payload)["old_value"]
        self._admit()
        # Held from the write to the event: events of one key queue in the
        # order the remote side applied the writes.
        with self._stripe(scope, key):
            self._writable()  # under the stripe: close() waits for this write's event
            old = self._call("state::set", payload)["old_value"]
            dumps = _codec.dumps
            self._events.emit(
                "state:created" if old is None else "state:updated", scope, key,
                None if old is None else dumps(old), dumps(value),
            )
        return old

    def get(self, scope: str, key: str, default: Any = None) -> Any:
        """The value at (scope, key), or ``default``."""
        _text(scope, "scope")
        _text(key, "key")
        value = self._call("state::get", {"scope": scope, "key": key})
        return default if value is None else value

    def delete(self, scope: str, key: str) -> Any:
        """Remove (scope, key); return the removed value or None."""
        _text(scope, "scope")
        _text(key, "key")
        payload = {"scope": scope, "key": key}
        self._writable()
        if not self._is_watched(scope, key):
            return self._call("state::delete", payload)
        self._admit()
        with self._stripe(scope, key):
            self._writable()  # under the stripe: close() waits for this write's event
            old = self._call("state::delete", payload)
            self._events.emit("state:deleted", scope, key, None if old is None else _codec.dumps(old), None)
        return old

    def update(self, scope: str, key: str, ops: Any) -> UpdateResult:
        """Apply ``ops`` atomically on the remote side; see :meth:`pystate.State.update`."""
        _text(scope, "scope")
        _text(key, "key")
        # The compiled op engine checks the ops here, so a malformed request
        # fails with the kv adapter's error before anything is sent.
        apply(None, True, ops)
        payload = {"scope": scope, "key": key, "ops": ops}
        self._writable()
        if not self._is_watched(scope, key):
            r = self._call("state::update", payload)
            return UpdateResult(r.get("old_value"), r.get("new_value"), r.get("errors") or [])
        self._admit()
        with self._stripe(scope, key):
            self._writable()  # under the stripe: close() waits for this write's event
            r = self._call("state::update", payload)
            old, new = r.get("old_value"), r.get("new_value")
            dumps = _codec.dumps
            self._events.emit(
                "state:created" if old is None else "state:updated", scope, key,
                None if old is None else dumps(old), dumps(new),
            )
        return UpdateResult(old, new, r.get("errors") or [])

    def list(self, scope: str) -> list[Any]:
        """All values of ``scope``, in the remote side's order."""
        _text(scope, "scope")
        return self._call("state::list", {"scope": scope})

    def __contains__(self, item: object) -> bool:
        """``(scope, key) in st``, through ``state::get``: as with
        :meth:`get`, a stored null reads as missing over the wire."""
        scope, key = _pair(item)
        return self._call("state::get", {"scope": scope, "key": key}) is not None

    def keys(self, scope: str) -> builtins.list[str]:
        """Not possible through a bridge: the engine's state API has no call
        that lists keys. Raises UnsupportedError."""
        _text(scope, "scope")
        raise UnsupportedError("keys: the bridge adapter cannot list keys (the engine's state API has no such call)")

    def items(self, scope: str, page: int = 1000) -> Iterator[tuple[str, Any]]:
        """Not possible through a bridge, as :meth:`keys`. Raises UnsupportedError."""
        _text(scope, "scope")
        raise UnsupportedError("items: the bridge adapter cannot list keys (the engine's state API has no such call)")

    def list_groups(self) -> builtins.list[str]:
        """Sorted names of the remote side's scopes."""
        return self._call("state::list_groups", {})["groups"]

    # ---- the rest of the State surface ---------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters of this client: ``adapter``, ``bridge_url``,
        ``connected``, and the trigger counters of :meth:`pystate.State.stats`."""
        if self._is_closed:
            raise ClosedError("the store is closed")
        return {
            "adapter": "bridge",
            "bridge_url": self._url,
            "connected": self._conn is not None,
            "handler_errors": self._events.handler_errors,
            "triggers": self._triggers.count,
            "events": self._events.stats(),
        }

    def flush(self) -> None:
        """Nothing to do here: durability is the remote side's."""
        if self._is_closed:
            raise ClosedError("the store is closed")

    def compact(self, scope: str | None = None) -> None:
        """Nothing to do here: the remote side manages its storage."""
        if self._is_closed:
            raise ClosedError("the store is closed")

    def check(self) -> dict[str, Any]:
        """Read every scope through the bridge (each value arrives as JSON).
        Changes nothing."""
        records = sum(len(self.list(scope)) for scope in self.list_groups())
        return {"ok": True, "logs": 0, "records": records, "problem": None}

    def close(self, timeout: float | None = None) -> None:
        """Refuse writes (ClosedError from now on), run queued events, stop
        dispatch and disconnect. Idempotent."""
        if self._is_closed or self._sealed:
            return
        # Writes stop first, as in State.close: see the redis adapter.
        self._seal()
        self._events.close(timeout)
        self._watched = False
        self._is_closed = True
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._reader is not None:
            self._reader.join(10)

    def __repr__(self) -> str:
        state = ", closed" if self._is_closed else ""
        return f"<pystate.State bridge to {self._url}{state}>"


_PREFIX = "Failed to deserialize input for "


def _as_exception(fid: str, error: Any) -> StateError:
    """The remote error as the exception the kv adapter raises for it."""
    if not isinstance(error, dict):
        return StateError(f"{fid}: {error!r}", code="UNKNOWN")
    code = str(error.get("code", "UNKNOWN"))
    message = str(error.get("message", ""))
    cls = _ERRORS.get(code)
    if cls is PayloadError and message.startswith(_PREFIX + fid + ": "):
        message = message[len(_PREFIX) + len(fid) + 2:]  # the kv adapter's own wording
    if cls is None:
        return StateError(message, code=code)
    return cls(message)
