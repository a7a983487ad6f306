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
from pystate.storage import Opened, check_pair as _pair, check_text as _text, refuse_kv_options

__all__ = ["BridgeStorage", "open_storage", "DEFAULT_BRIDGE_URL"]

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


def open_storage(path: Any, options: dict[str, Any]) -> Opened:
    """Open the bridge storage ``State(adapter="bridge", ...)`` holds; see
    :class:`BridgeStorage` for the options."""
    options = dict(options)
    own = {name: options.pop(name) for name in ("bridge_url", "token", "timeout") if name in options}
    refuse_kv_options("bridge", "bridge_url", path, options)
    return Opened(BridgeStorage(**own))


class BridgeStorage:
    """The storage of ``State(adapter="bridge", bridge_url=...)``: values
    behind an iii engine or a ``pystate serve`` process, reached through
    its ``state::*`` functions (so ``update`` is applied there).

    Args:
        bridge_url: ``ws://host:port`` or ``wss://...`` (default
            ``ws://127.0.0.1:49134``, the engine's port).
        token: sent as ``Authorization: Bearer <token>`` (default: the
            ``III_TOKEN`` environment variable, as iii-sdk does).
        timeout: seconds a call may wait for its answer (default 30) before
            it fails with ``adapter_unavailable``.

    Raises:
        ConfigError: a malformed URL.
        AdapterUnavailableError: the remote side cannot be reached.
    """

    name = "bridge"
    ordered = True  # as the remote side keeps it
    durable = True
    local = False
    #: No compare-and-set over the engine's API: update runs there.
    applies_ops = True
    path = None
    sync = None
    read_only = False

    def __init__(self, *, bridge_url: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self._is_closed = True  # until connected
        self._conn: Any = None
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
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._is_closed

    @property
    def bridge_url(self) -> str:
        return self._url

    # ---- writes ----------------------------------------------------------------

    def put(self, scope: str, key: str, data: bytes) -> bytes | None:
        """``state::set`` of the value ``data`` holds; the text it replaced, or None."""
        _text(scope, "scope")
        _text(key, "key")
        old = self._call("state::set", {"scope": scope, "key": key, "value": _codec.loads(data)})["old_value"]
        return None if old is None else _codec.dumps(old)

    def remove(self, scope: str, key: str) -> bytes | None:
        """``state::delete``; the text of the value it removed, or None."""
        _text(scope, "scope")
        _text(key, "key")
        old = self._call("state::delete", {"scope": scope, "key": key})
        return None if old is None else _codec.dumps(old)

    def apply_ops(self, scope: str, key: str, ops: Any) -> tuple[Any, Any, builtins.list[dict[str, Any]]]:
        """``state::update`` on the remote side: (old, new, errors)."""
        _text(scope, "scope")
        _text(key, "key")
        r = self._call("state::update", {"scope": scope, "key": key, "ops": ops})
        return r.get("old_value"), r.get("new_value"), r.get("errors") or []

    # ---- reads -----------------------------------------------------------------

    def get(self, scope: str, key: str, default: Any = None) -> Any:
        """The value at (scope, key), or ``default``."""
        _text(scope, "scope")
        _text(key, "key")
        value = self._call("state::get", {"scope": scope, "key": key})
        return default if value is None else value

    def list(self, scope: str) -> list[Any]:
        """All values of ``scope``, in the remote side's order."""
        _text(scope, "scope")
        values: list[Any] = self._call("state::list", {"scope": scope})
        return values

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

    def items_page(self, scope: str, pos: int = 0, limit: int = 1000) -> tuple[builtins.list[tuple[str, bytes]], int]:
        """Not possible through a bridge, as :meth:`keys`. Raises UnsupportedError."""
        _text(scope, "scope")
        raise UnsupportedError("items: the bridge adapter cannot list keys (the engine's state API has no such call)")

    def list_groups(self) -> builtins.list[str]:
        """Sorted names of the remote side's scopes."""
        groups: builtins.list[str] = self._call("state::list_groups", {})["groups"]
        return groups

    # ---- the rest of the State surface ---------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters of this client: ``adapter``, ``bridge_url``, ``connected``."""
        if self._is_closed:
            raise ClosedError("the store is closed")
        return {"adapter": "bridge", "bridge_url": self._url, "connected": self._conn is not None}

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

    def close(self) -> None:
        """Disconnect; later calls raise ClosedError. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self._reader is not None:
            self._reader.join(10)

    def describe(self) -> str:
        """What the store is, for State's repr."""
        return f"bridge to {self._url}" + (", closed" if self._is_closed else "")


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
