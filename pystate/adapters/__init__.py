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
