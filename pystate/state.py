"""``State``: the store with the iii engine's function surface.

The fast data paths (``set``, ``get``, ``delete``, ``update``, ``list``,
``list_groups``) are compiled methods inherited from
:class:`pystate._core.Store`. This module adds ``trigger``, which accepts
the engine's ``state::*`` requests and answers with the engine's response
shapes, so code written against iii-state runs unchanged.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from pystate import _core
from pystate.errors import (
    FunctionNotFoundError,
    PayloadError,
    UnsupportedActionError,
)

__all__ = ["State", "UpdateResult"]

UpdateResult = _core.UpdateResult

_UNSET: Any = object()


def _field(payload: Any, name: str, fid: str) -> Any:
    if name not in payload:
        raise PayloadError(f"Failed to deserialize input for {fid}: missing field `{name}`")
    return payload[name]


def _text(payload: Any, name: str, fid: str) -> str:
    value = _field(payload, name, fid)
    if not isinstance(value, str):
        raise PayloadError(
            f"Failed to deserialize input for {fid}: invalid type for `{name}`: "
            f"expected a string, got {type(value).__name__}"
        )
    return value


def _object(payload: Any, fid: str) -> Any:
    if not isinstance(payload, dict):
        raise PayloadError(
            f"Failed to deserialize input for {fid}: expected an object, "
            f"got {type(payload).__name__}"
        )
    return payload


def _fn_set(st: State, payload: Any) -> Any:
    fid = "state::set"
    p = _object(payload, fid)
    scope, key = _text(p, "scope", fid), _text(p, "key", fid)
    if "value" in p and "data" in p:
        raise PayloadError(f"Failed to deserialize input for {fid}: duplicate field `value`")
    if "value" in p:
        value = p["value"]
    elif "data" in p:  # the engine's backward-compatible alias
        value = p["data"]
    else:
        raise PayloadError(f"Failed to deserialize input for {fid}: missing field `value`")
    old = st.set(scope, key, value)
    return {"old_value": old, "new_value": value}


def _fn_get(st: State, payload: Any) -> Any:
    fid = "state::get"
    p = _object(payload, fid)
    return st.get(_text(p, "scope", fid), _text(p, "key", fid))


def _fn_delete(st: State, payload: Any) -> Any:
    fid = "state::delete"
    p = _object(payload, fid)
    return st.delete(_text(p, "scope", fid), _text(p, "key", fid))


def _fn_update(st: State, payload: Any) -> Any:
    fid = "state::update"
    p = _object(payload, fid)
    scope, key = _text(p, "scope", fid), _text(p, "key", fid)
    ops = _field(p, "ops", fid)
    try:
        result = st.update(scope, key, ops)
    except PayloadError as e:
        raise PayloadError(f"Failed to deserialize input for {fid}: {e.message}") from None
    return result.to_response()


def _fn_list(st: State, payload: Any) -> Any:
    fid = "state::list"
    p = _object(payload, fid)
    return st.list(_text(p, "scope", fid))


def _fn_list_groups(st: State, payload: Any) -> Any:
    if payload is not None:
        _object(payload, "state::list_groups")
    return {"groups": st.list_groups()}


_BUILTINS: dict[str, Callable[[State, Any], Any]] = {
    "state::set": _fn_set,
    "state::get": _fn_get,
    "state::delete": _fn_delete,
    "state::update": _fn_update,
    "state::list": _fn_list,
    "state::list_groups": _fn_list_groups,
}


class State(_core.Store):
    """An embedded iii-state store: JSON values addressed by (scope, key).

    ``State()`` is an in-memory store on pystate's compiled core;
    ``State("dir")`` is durable: one append-only log per scope in ``dir``
    (created if missing), replayed when opened. Either is safe to share
    between threads and is a context manager.

    >>> with State() as st:
    ...     st.set("users", "u1", {"name": "Ada", "visits": 0})
    ...     st.update("users", "u1", [{"type": "increment", "path": "visits", "by": 1}]).new_value
    ...     st.trigger("state::get", {"scope": "users", "key": "u1"})
    {'name': 'Ada', 'visits': 1}
    {'name': 'Ada', 'visits': 1}

    Args:
        path: a directory for a durable store; None (default) for memory.
        sync: when writes are made durable (file-based only). Every
            acknowledged write has reached the operating system, so killing
            the process loses nothing; against a machine crash,
            ``"always"`` fdatasyncs before each write returns (concurrent
            writers share syncs), ``"interval"`` (default) syncs in the
            background every ``save_interval_ms``, ``"never"`` leaves it to
            the operating system.
        save_interval_ms: the period of ``sync="interval"``, 100 to
            3,600,000 (default 5000), as in the engine's config.
        repair: open a directory whose logs are damaged in the middle by
            salvaging every valid record (the damaged file is kept beside
            the store as ``<file>.corrupt-<n>``) instead of raising
            :class:`pystate.CorruptError`.
        max_value_bytes: refuse a ``set`` whose JSON text is longer than
            this (code ``VALUE_TOO_LARGE``). As in the engine, ``update``
            results are not limited. None (default): no limit.

    Raises:
        LockedError: another process has the directory open.
        CorruptError: a log is damaged before its end (names file and
            offset); nothing on disk was changed.
    """

    __slots__ = ()

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        sync: str = "interval",
        save_interval_ms: int = 5000,
        repair: bool = False,
        max_value_bytes: int | None = None,
        **_testing: Any,
    ) -> None:
        if path is not None:
            # The C core creates the directory itself; its parents too, here.
            parent = os.path.dirname(os.path.abspath(os.fspath(path)))
            os.makedirs(parent, exist_ok=True)
        super().__init__(
            path,
            sync=sync,
            save_interval_ms=save_interval_ms,
            repair=repair,
            max_value_bytes=max_value_bytes,
            **_testing,
        )

    def trigger(self, request: Any, payload: Any = _UNSET) -> Any:
        """Call a function by id, as the engine's ``trigger`` does.

        Two forms are accepted: ``trigger(function_id, payload)`` and
        iii-sdk's ``trigger({"function_id": ..., "payload": ...,
        "action": {"type": "void"}})``. A void action runs the call and
        returns None. Results have the engine's shapes: ``state::set`` and
        ``state::update`` give ``{"old_value", "new_value"}`` (plus
        ``"errors"`` for an update with failed ops), ``state::get`` and
        ``state::delete`` the value or None, ``state::list`` a list,
        ``state::list_groups`` ``{"groups": [...]}``.

        >>> st = State()
        >>> st.trigger("state::set", {"scope": "s", "key": "k", "value": 1})
        {'old_value': None, 'new_value': 1}
        >>> st.trigger({"function_id": "state::list_groups", "payload": {}})
        {'groups': ['s']}

        Raises:
            FunctionNotFoundError: no function has this id.
            PayloadError: the payload is malformed (``deserialization_error``).
        """
        action = None
        if payload is _UNSET:
            if not isinstance(request, dict):
                raise PayloadError(
                    "trigger: expected (function_id, payload) or a request object "
                    '{"function_id": ..., "payload": ...}'
                )
            function_id = request.get("function_id")
            payload = request.get("payload")
            action = request.get("action")
        else:
            function_id = request
        if not isinstance(function_id, str):
            raise PayloadError(
                f"trigger: function_id must be a string, got {type(function_id).__name__}"
            )
        fn = _BUILTINS.get(function_id)
        if fn is None:
            raise FunctionNotFoundError(f"Function {function_id} not found")
        void = False
        if action is not None:
            kind = action.get("type") if isinstance(action, dict) else None
            if kind == "void":
                void = True
            elif kind == "enqueue":
                raise UnsupportedActionError(
                    "No queue provider is installed: enqueue actions need a queue worker"
                )
            else:
                raise PayloadError(f'action: expected {{"type": "void"}}, got {action!r}')
        result = fn(self, payload)
        return None if void else result

    def __repr__(self) -> str:
        where = "in memory" if self.path is None else f"at {self.path!r}, sync={self.sync}"
        if self.closed:
            return f"<pystate.State {where}, closed>"
        s = self.stats()
        return f"<pystate.State {where}, {s['scopes']} scopes, {s['keys']} keys>"
