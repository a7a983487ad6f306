"""What the adapters whose data lives elsewhere (redis, bridge) share: the
closed flag, the value-size limit, and the trigger gate that the compiled
kv store keeps in C (a write to a watched key waits for room in the event
queue, then emits its event itself)."""

from __future__ import annotations

from typing import Any

from pystate.errors import ClosedError, ConfigError
from pystate.state import State

__all__ = ["RemoteState"]


class RemoteState(State):
    """Base of :class:`~pystate.adapters.redis_adapter.RedisState` and
    :class:`~pystate.adapters.bridge_adapter.BridgeState`; not made directly."""

    __slots__ = ("_is_closed", "_limit", "_watched")

    def _check_options(
        self,
        adapter: str,
        takes: str,
        path: Any,
        kv_options: dict[str, Any],
        max_value_bytes: Any,
        triggers_enabled: Any,
        max_pending_events: Any,
        event_queue_full: Any,
    ) -> None:
        """The checks every remote adapter makes before connecting: no kv
        options, a sane value limit, valid dispatch options."""
        self._is_closed = True  # until connected
        if path is not None or kv_options:
            given = (["path"] if path is not None else []) + sorted(kv_options)
            raise ConfigError(f"{', '.join(given)}: option(s) of the kv adapter; the {adapter} adapter takes {takes}")
        if max_value_bytes is not None and (type(max_value_bytes) is not int or max_value_bytes < 1):
            raise ConfigError(f"max_value_bytes: expected a positive integer or None, got {max_value_bytes!r}")
        self._check_dispatch_options(triggers_enabled, max_pending_events, event_queue_full)
        self._limit = max_value_bytes
        self._watched = False

    @property
    def closed(self) -> bool:  # type: ignore[override]
        return self._is_closed

    @property
    def max_value_bytes(self) -> int | None:  # type: ignore[override]
        return self._limit

    def _is_watched(self, scope: str, key: str) -> bool:
        if not self._watched:
            return False
        idx = self._triggers
        if idx.watch_all or scope in idx.watched_scopes or key in idx.watched_keys:
            return True
        keys = idx.watched_pairs.get(scope)
        return keys is not None and key in keys

    def _admit(self) -> None:
        """Hold a watched write back while the event queue is full (or
        raise, per ``event_queue_full``), as the kv store does."""
        ev = self._events
        if len(ev.pending) >= ev.bound:
            ev.admit()

    def __enter__(self) -> Any:
        if self._is_closed:
            raise ClosedError("the store is closed")
        return self

    def __exit__(self, *exc: object) -> bool:
        self.close()
        return False
