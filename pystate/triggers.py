"""State triggers: registration, validation and the match index.

A trigger is ``{"type": "state", "function_id": ..., "config": {"scope",
"key", "condition_function_id"}, "metadata": ...}`` as in the iii engine.
Matching is indexed four ways (exact scope and key, scope only, key only,
neither), so finding the triggers of a write costs a few dict lookups
however many triggers exist. The index also keeps the sets the compiled
write path consults to decide whether a write is watched at all.

>>> from pystate.triggers import TriggerIndex
>>> idx = TriggerIndex()
>>> t = idx.add("on_user", {"scope": "users"}, None)
>>> [x.function_id for x in idx.match("users", "u1")], idx.match("orders", "o1")
(['on_user'], ())
"""

from __future__ import annotations

import itertools
import threading
import uuid
from typing import Any, Callable

from pystate.errors import TriggerConfigError

__all__ = ["Trigger", "TriggerIndex", "parse_trigger"]

TRIGGER_TYPE = "state"
_CONFIG_FIELDS = ("scope", "key", "condition_function_id")


def parse_trigger(trigger: Any) -> tuple[str, dict[str, str | None], Any]:
    """Validate a register_trigger request; return (function_id, config, metadata).

    Accepts iii-sdk's shape, a dict (or an object with the same attributes)
    with ``type``, ``function_id``, optional ``config`` and ``metadata``.
    Unknown config fields are ignored, as the engine ignores them.
    """
    if isinstance(trigger, dict):
        get = trigger.get
    else:
        def get(name: str, default: Any = None) -> Any:
            return getattr(trigger, name, default)

    kind = get("type", get("trigger_type"))
    if kind != TRIGGER_TYPE:
        raise TriggerConfigError(
            f"register_trigger: unknown trigger type {kind!r}: this store provides only 'state'",
            code="trigger_type_not_found",
        )
    function_id = get("function_id")
    if not isinstance(function_id, str) or not function_id:
        raise TriggerConfigError(
            f"register_trigger: function_id must be a non-empty string, got {function_id!r}"
        )
    raw = get("config")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TriggerConfigError(
            f"Failed to parse trigger config: expected an object, got {type(raw).__name__}"
        )
    config: dict[str, str | None] = {}
    for name in _CONFIG_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise TriggerConfigError(
                f"Failed to parse trigger config: `{name}` must be a string or null, "
                f"got {type(value).__name__} {value!r}"
            )
        config[name] = value
    return function_id, config, get("metadata")


class Trigger:
    """A registered state trigger. ``unregister()`` stops delivery at once:
    events already queued for it are not delivered."""

    __slots__ = ("id", "function_id", "config", "metadata", "scope", "key", "condition_id", "seq", "active", "_index")

    def __init__(
        self,
        index: TriggerIndex,
        seq: int,
        function_id: str,
        config: dict[str, str | None],
        metadata: Any,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.function_id = function_id
        self.config = config
        self.metadata = metadata
        self.scope = config["scope"]
        self.key = config["key"]
        self.condition_id = config["condition_function_id"]
        self.seq = seq
        self.active = True
        self._index = index

    def unregister(self) -> None:
        """Remove the trigger (idempotent)."""
        self._index.remove(self)

    def __repr__(self) -> str:
        return f"<pystate trigger {self.function_id!r} scope={self.scope!r} key={self.key!r}>"


def _seq(t: Trigger) -> int:
    return t.seq


def _without(bucket: tuple[Trigger, ...], t: Trigger) -> tuple[Trigger, ...]:
    return tuple(x for x in bucket if x is not t)


class TriggerIndex:
    """Registered triggers, indexed for matching.

    Buckets are tuples replaced on change (never mutated), so a writer
    matching concurrently with a registration sees a consistent bucket.
    The compiled write path reads ``watched_scopes``, ``watched_keys`` and
    ``watched_pairs`` by reference (so they are updated in place) to turn
    away, before any work, every write no trigger can match.
    """

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._on_change = on_change
        self._pair: dict[tuple[str, str], tuple[Trigger, ...]] = {}
        self._scope: dict[str, tuple[Trigger, ...]] = {}
        self.by_scope = self._scope  # read by the dispatcher's emit
        self.scopes_only = True  # no trigger filters by key, and each names a scope
        self._key: dict[str, tuple[Trigger, ...]] = {}
        self._global: tuple[Trigger, ...] = ()
        self._scope_refs: dict[str, int] = {}
        self._key_refs: dict[str, int] = {}
        self._pair_refs: dict[tuple[str, str], int] = {}
        self.watched_scopes: set[str] = set()  # scopes of scope-only triggers
        self.watched_keys: set[str] = set()  # keys of key-only triggers
        self.watched_pairs: dict[str, set[str]] = {}  # scope -> keys of scope+key triggers
        self.count = 0

    @property
    def watch_all(self) -> bool:
        return bool(self._global)

    def add(self, function_id: str, config: dict[str, Any], metadata: Any) -> Trigger:
        cfg = {name: config.get(name) for name in _CONFIG_FIELDS}
        with self._lock:
            t = Trigger(self, next(self._seq), function_id, cfg, metadata)
            s, k = t.scope, t.key
            if s is not None and k is not None:
                self._pair[(s, k)] = self._pair.get((s, k), ()) + (t,)
            elif s is not None:
                self._scope[s] = self._scope.get(s, ()) + (t,)
            elif k is not None:
                self._key[k] = self._key.get(k, ()) + (t,)
            else:
                self._global = self._global + (t,)
            if s is not None and k is not None:
                self._pair_refs[(s, k)] = self._pair_refs.get((s, k), 0) + 1
                self.watched_pairs.setdefault(s, set()).add(k)
            elif s is not None:
                self._scope_refs[s] = self._scope_refs.get(s, 0) + 1
                self.watched_scopes.add(s)
            elif k is not None:
                self._key_refs[k] = self._key_refs.get(k, 0) + 1
                self.watched_keys.add(k)
            self.count += 1
            self._refresh()
        self._on_change()
        return t

    def remove(self, t: Trigger) -> None:
        with self._lock:
            if not t.active:
                return
            t.active = False
            s, k = t.scope, t.key
            if s is not None and k is not None:
                self._drop(self._pair, (s, k), t)
            elif s is not None:
                self._drop(self._scope, s, t)
            elif k is not None:
                self._drop(self._key, k, t)
            else:
                self._global = _without(self._global, t)
            if s is not None and k is not None:
                n = self._pair_refs[(s, k)] - 1
                if n:
                    self._pair_refs[(s, k)] = n
                else:
                    del self._pair_refs[(s, k)]
                    keys = self.watched_pairs[s]
                    keys.discard(k)
                    if not keys:
                        del self.watched_pairs[s]
            elif s is not None:
                self._unref(self._scope_refs, self.watched_scopes, s)
            elif k is not None:
                self._unref(self._key_refs, self.watched_keys, k)
            self.count -= 1
            self._refresh()
        self._on_change()

    def _refresh(self) -> None:
        self.scopes_only = not (self._global or self._pair or self._key)

    @staticmethod
    def _drop(d: dict[Any, tuple[Trigger, ...]], name: Any, t: Trigger) -> None:
        rest = _without(d.get(name, ()), t)
        if rest:
            d[name] = rest
        else:
            d.pop(name, None)

    @staticmethod
    def _unref(refs: dict[str, int], watched: set[str], name: str) -> None:
        n = refs[name] - 1
        if n:
            refs[name] = n
        else:
            del refs[name]
            watched.discard(name)

    def match(self, scope: str, key: str) -> tuple[Trigger, ...]:
        """The triggers whose scope and key filters admit (scope, key), in
        registration order."""
        by_scope = self._scope.get(scope, ())
        if not (self._global or self._pair or self._key):
            return by_scope  # the common case: scope triggers only
        found = [b for b in (
            self._global,
            self._pair.get((scope, key), ()) if self._pair else (),
            by_scope,
            self._key.get(key, ()) if self._key else (),
        ) if b]
        if len(found) == 1:
            return found[0]
        return tuple(sorted(itertools.chain.from_iterable(found), key=_seq))

    def all(self) -> list[Trigger]:
        with self._lock:
            out = list(self._global)
            for d in (self._pair, self._scope, self._key):
                for b in d.values():
                    out.extend(b)
        out.sort(key=lambda t: t.seq)
        return out
