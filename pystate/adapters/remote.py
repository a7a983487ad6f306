"""What the adapters whose data lives elsewhere (redis, bridge) share: the
closed flag, the value-size limit, and the trigger gate that the compiled
kv store keeps in C (a write to a watched key waits for room in the event
queue, then emits its event itself)."""

from __future__ import annotations

import threading
from typing import Any

from pystate._options import check_max_value_bytes
from pystate.errors import ClosedError, ConfigError
from pystate.state import State

__all__ = ["RemoteState"]

_N_STRIPES = 64


class RemoteState(State):
    """Base of :class:`~pystate.adapters.redis_adapter.RedisState` and
    :class:`~pystate.adapters.bridge_adapter.BridgeState`; not made directly."""

    __slots__ = ("_is_closed", "_limit", "_sealed", "_stripes", "_watched")

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
        check_max_value_bytes(max_value_bytes)
        self._check_dispatch_options(triggers_enabled, max_pending_events, event_queue_full)
        self._limit = max_value_bytes
        self._watched = False
        self._sealed = False
        # A watched write holds its key's stripe from the write to its event,
        # so the events of one key queue in the order the server applied them.
        self._stripes = [threading.Lock() for _ in range(_N_STRIPES)]

    def _stripe(self, scope: str, key: str) -> threading.Lock:
        return self._stripes[hash((scope, key)) % _N_STRIPES]

    def _writable(self) -> None:
        if self._sealed:
            raise ClosedError("the store is closed")

    def _seal(self) -> None:
        """Refuse writes from now on (reads go on, for the handlers close()
        still runs), and wait for the watched writes under way: each holds
        its stripe lock from the check to its event, so once every stripe
        has been taken, all the events of acknowledged writes are queued and
        no more come."""
        self._sealed = True
        for lock in self._stripes:
            with lock:
                pass

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

    def __exit__(self, *exc: object) -> None:
        self.close()
