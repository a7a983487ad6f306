"""Storage adapters other than the compiled kv store.

``pystate.State(adapter="redis", redis_url=...)`` gives a
:class:`~pystate.adapters.redis_adapter.RedisState`, and
``pystate.State(adapter="bridge", bridge_url=...)`` a
:class:`~pystate.adapters.bridge_adapter.BridgeState`: the same surface
(functions, triggers, ``trigger``), with the values in a Redis server or
behind a remote iii engine or ``pystate serve``.
"""

from __future__ import annotations

from typing import Any

from pystate.errors import PayloadError


def check_text(value: Any, what: str) -> str:
    """A scope or key as the kv store accepts it: a str that is valid
    Unicode (the compiled store refuses lone surrogates; so must we)."""
    if not isinstance(value, str):
        raise PayloadError(f"{what}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError(f"{what}: not valid Unicode text (it contains a lone surrogate)") from None
    return value


def check_pair(item: Any) -> tuple[str, str]:
    """The ``(scope, key)`` of ``(scope, key) in st``, checked as the kv
    store checks it."""
    if type(item) is not tuple or len(item) != 2:
        raise PayloadError(f"in: expected a (scope, key) pair, got {type(item).__name__}")
    return check_text(item[0], "scope"), check_text(item[1], "key")
