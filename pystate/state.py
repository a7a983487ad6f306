"""``State``: the store with the iii engine's function surface.

A State holds a storage (the adapter's: :mod:`pystate.storage`) and the
one write path over it (:mod:`pystate.writes`), and adds what every
adapter shares: functions, triggers, event dispatch, and ``trigger``,
which accepts the engine's ``state::*`` requests and answers with the
engine's response shapes, so code written against iii-state runs unchanged.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import logging
import os
import threading
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, TypeVar, overload

from pystate._options import check_max_value_bytes
from pystate.dispatch import QUEUE_POLICIES, EventDispatcher
from pystate.errors import (
    ClosedError,
    ConfigError,
    PayloadError,
    StateError,
    UnsupportedActionError,
)
from pystate.functions import FunctionRef, FunctionRegistry
from pystate.storage import ADAPTERS, open_storage
from pystate.triggers import Trigger, TriggerIndex, parse_trigger
from pystate.writes import UpdateResult, Writes

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from pystate._options import BridgeOptions, KvOptions, QueuePolicy, RedisOptions, SyncMode

__all__ = ["State", "UpdateResult", "Subscription", "STATE_FUNCTIONS", "is_void"]

F = TypeVar("F", bound=Callable[..., Any])

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


def is_void(action: Any) -> bool:
    """Whether a call's ``action`` makes it fire-and-forget: None (a
    synchronous call) gives False, ``{"type": "void"}`` True.

    Raises:
        UnsupportedActionError: an ``enqueue`` action (code ``enqueue_error``,
            the engine's answer without a queue worker).
        PayloadError: any other action.
    """
    if action is None:
        return False
    kind = action.get("type") if isinstance(action, dict) else None
    if kind == "void":
        return True
    if kind == "enqueue":
        raise UnsupportedActionError("No queue provider is installed: enqueue actions need a queue worker")
    raise PayloadError(f'action: expected {{"type": "void"}}, got {action!r}')


#: The six ``state::*`` functions, by id: what ``State.trigger`` (and
#: ``pystate serve``) answers them with.
STATE_FUNCTIONS: dict[str, Callable[[State, Any], Any]] = {
    "state::set": _fn_set,
    "state::get": _fn_get,
    "state::delete": _fn_delete,
    "state::update": _fn_update,
    "state::list": _fn_list,
    "state::list_groups": _fn_list_groups,
}


class Subscription:
    """What ``@st.on_change(...)`` gives back: the decorated function, still
    callable as before, with ``unregister()`` and the ``trigger`` it made.
    """

    def __init__(self, fn: Callable[..., Any], trigger: Trigger, refs: list[FunctionRef]) -> None:
        functools.update_wrapper(self, fn)
        self.function = fn
        self.trigger = trigger
        self._refs = refs

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def unregister(self) -> None:
        """Stop delivery and remove the functions ``on_change`` registered."""
        self.trigger.unregister()
        for ref in self._refs:
            ref.unregister()

    def __repr__(self) -> str:
        return f"<pystate subscription {self.trigger.function_id!r}>"


log = logging.getLogger("pystate")


def _check_dispatch_options(triggers_enabled: Any, max_pending_events: Any, event_queue_full: Any) -> None:
    if type(max_pending_events) is not int or max_pending_events < 1:
        raise ConfigError(f"max_pending_events: expected a positive integer, got {max_pending_events!r}")
    if event_queue_full not in QUEUE_POLICIES:
        raise ConfigError(
            f"event_queue_full: expected one of {', '.join(QUEUE_POLICIES)}, got {event_queue_full!r}"
        )
    if not isinstance(triggers_enabled, bool):
        raise ConfigError(f"triggers_enabled: expected True or False, got {triggers_enabled!r}")

# Every open State, for os.fork(): a child must not inherit locks held by
# threads it does not have (see State._after_fork_in_child).
_OPEN_STATES: weakref.WeakSet[Any] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for st in list(_OPEN_STATES):
        st._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class State:
    """An embedded iii-state store: JSON values addressed by (scope, key).

    ``State()`` is an in-memory store on pystate's compiled core;
    ``State("dir")`` is durable: one append-only log per scope in ``dir``,
    replayed when opened. A new or empty ``dir`` becomes a store (it gets a
    ``PYSTATE`` marker); a non-empty directory that is not one is refused.
    ``State(adapter="redis", redis_url=...)`` keeps the values in a Redis
    server, ``State(adapter="bridge", bridge_url=...)`` behind a remote
    engine: the same calls, triggers and answers. Either is safe to share
    between threads and is a context manager.

    >>> with State() as st:
    ...     st.set("users", "u1", {"name": "Ada", "visits": 0})
    ...     st.update("users", "u1", [{"type": "increment", "path": "visits", "by": 1}]).new_value
    ...     st.trigger("state::get", {"scope": "users", "key": "u1"})
    {'name': 'Ada', 'visits': 1}
    {'name': 'Ada', 'visits': 1}

    A State holds a storage (:mod:`pystate.storage`: the adapter's) and the
    one write path over it (:mod:`pystate.writes`); the functions, triggers
    and event dispatch are its own.

    Args:
        path: a directory for a durable store; None (default) for memory.
        adapter: ``"kv"`` (default), ``"redis"`` or ``"bridge"``; the other
            two take their own options (README, "Adapters").
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
        read_only: open an existing store to read it, changing nothing on
            disk: damage is reported (:class:`pystate.RecoveryWarning`), not
            cut; writes and ``compact`` raise :class:`pystate.ReadOnlyError`.
            Several read-only opens may share a directory; a writer may not
            join them.
        max_value_bytes: refuse a ``set`` whose JSON text is longer than
            this (code ``VALUE_TOO_LARGE``). As in the engine, ``update``
            results are not limited. None (default): no limit.
        triggers_enabled: False turns event dispatch off: triggers can still
            be registered, but no write queues an event.
        max_pending_events: how many events may wait for their handlers
            (default 10,000) before writes to watched keys are held back.
        event_queue_full: what a watched write does when that many wait:
            ``"block"`` (default) waits for room before writing;
            ``"raise"`` raises :class:`pystate.EventQueueFullError` and
            writes nothing. Events are never dropped.
        share_events: True: triggers also fire for writes other processes
            make to the same directory (README, "Several processes, one
            store"); a thread looks every 5 ms. File stores only.

    Raises:
        LockedError: another process writes to the directory in another
            sync mode.
        CorruptError: a log is damaged before its end (names file and
            offset); nothing on disk was changed.
        NotAStoreError: ``path`` is a directory that holds files but is not
            a pystate store (or, read-only, holds no store); nothing in it
            was touched.
    """

    # What type checkers see: one signature per adapter, so that a typo
    # (``synch=``) or another adapter's option is flagged.
    @overload
    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, adapter: Literal["kv"] = "kv",
        **options: Unpack[KvOptions],
    ) -> None: ...
    @overload
    def __init__(self, path: None = None, *, adapter: Literal["redis"], **options: Unpack[RedisOptions]) -> None: ...
    @overload
    def __init__(self, path: None = None, *, adapter: Literal["bridge"], **options: Unpack[BridgeOptions]) -> None: ...

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        adapter: str = "kv",
        max_value_bytes: int | None = None,
        triggers_enabled: bool = True,
        max_pending_events: int = 10_000,
        event_queue_full: QueuePolicy = "block",
        **options: Any,
    ) -> None:
        if adapter not in ADAPTERS:
            raise ConfigError(f"adapter: expected one of {', '.join(ADAPTERS)}, got {adapter!r}")
        check_max_value_bytes(max_value_bytes)
        _check_dispatch_options(triggers_enabled, max_pending_events, event_queue_full)
        opened = open_storage(adapter, path, options)
        self._storage = storage = opened.storage
        self._writes = writes = Writes(storage, max_value_bytes)
        self._feed = opened.feed
        self._functions = FunctionRegistry(reserved=STATE_FUNCTIONS.__contains__)
        # Weakly: the dispatcher thread reaches the index, and must not keep
        # the store alive.
        rewire = weakref.WeakMethod(self._rewire)
        self._triggers = TriggerIndex(on_change=lambda: _call_alive(rewire))
        self._events = EventDispatcher(
            self._triggers, self._functions, max_pending=max_pending_events, when_full=event_queue_full
        )
        self._triggers_enabled = triggers_enabled
        # A store dropped without close() still runs what it queued, and
        # stops its threads; the finalizer holds the dispatcher, not the store.
        weakref.finalize(self, self._events.close)
        _OPEN_STATES.add(self)
        # The hot paths, bound once on the instance: a call goes straight to
        # the write path or the storage (a subclass's override is kept).
        cls, d = type(self), self.__dict__
        for name, fn in (("set", writes.set), ("delete", writes.delete), ("update", writes.update),
                         ("get", storage.get), ("list", storage.list)):
            if getattr(cls, name) is getattr(State, name):
                d[name] = fn
        if self._feed is not None:
            self._feed.start(self._events.emit if triggers_enabled else None)
            self._rewire()

    def _after_fork_in_child(self) -> None:
        """A child of fork() goes on with the stores its parent opened (the C
        core re-attaches a file store to its directory); what the parent's
        other threads held here is made anew."""
        after = getattr(self._storage, "_after_fork_in_child", None)
        if after is not None:
            after()
        self._writes.after_fork_in_child()
        self._events.after_fork_in_child()
        self._triggers._lock = threading.Lock()
        self._functions._lock = threading.Lock()
        if self._feed is not None:
            self._feed.after_fork_in_child()
            self._rewire()  # (its write path held the parent's lock)

    def _rewire(self) -> None:
        """Point the write path's trigger gate at the current triggers."""
        idx, ev = self._triggers, self._events
        emit: Any = ev.emit
        if self._feed is not None:
            # With a feed, this process's events keep their order with other
            # writers' (or, None: the feed delivers them too).
            emit = self._feed.own_emit(emit)
        if emit is not None and self._triggers_enabled and idx.count:
            self._writes.set_watch(
                emit,
                ev.admit,
                ev.pending,
                ev.bound,
                idx.watch_all,
                idx.watched_scopes,
                idx.watched_keys,
                idx.watched_pairs,
            )
        else:
            self._writes.set_watch(None)

    # ---- the data calls ---------------------------------------------------

    def set(self, scope: str, key: str, value: Any) -> Any:
        """Store ``value`` at (scope, key); return the previous value or None.

        >>> st = State()
        >>> st.set("users", "u1", {"name": "Ada"}) is None
        True
        >>> st.set("users", "u1", {"name": "Grace"})
        {'name': 'Ada'}

        Raises:
            InvalidValueError: the value is not JSON (NaN, a set, an integer
                outside 64 bits...); nothing was stored.
            ValueTooLargeError: its JSON text exceeds ``max_value_bytes``.
        """
        return self._writes.set(scope, key, value)

    def get(self, scope: str, key: str, default: Any = None) -> Any:
        """The value at (scope, key), or ``default`` when there is none.

        A stored JSON null is a value: it reads as None, not as ``default``.

        >>> State().get("users", "nobody", "?")
        '?'
        """
        return self._storage.get(scope, key, default)

    def delete(self, scope: str, key: str) -> Any:
        """Remove (scope, key); return the removed value or None.

        >>> st = State()
        >>> _ = st.set("s", "k", [1])
        >>> st.delete("s", "k"), st.delete("s", "k")
        ([1], None)
        """
        return self._writes.delete(scope, key)

    def update(self, scope: str, key: str, ops: list[dict[str, Any]]) -> UpdateResult:
        """Apply ``ops`` to the value at (scope, key) atomically.

        Returns an :class:`UpdateResult`. Ops that cannot apply are skipped
        and reported in ``errors``; the rest still apply, and the result is
        stored even when every op failed. A missing key starts as ``{}``.

        >>> st = State()
        >>> st.update("c", "hits", [{"type": "increment", "path": "n", "by": 1}])
        UpdateResult(old_value=None, new_value={'n': 1}, errors=[])
        """
        return self._writes.update(scope, key, ops)

    def list(self, scope: str) -> builtins.list[Any]:
        """All values of ``scope``: in key insertion order on the kv
        adapter, in the server's order on redis ([] if none).

        >>> st = State()
        >>> _ = st.set("s", "a", 1); _ = st.set("s", "b", 2)
        >>> st.list("s")
        [1, 2]
        """
        return self._storage.list(scope)

    def list_groups(self) -> builtins.list[str]:
        """Names of the scopes that hold at least one key, sorted.

        >>> st = State()
        >>> _ = st.set("b", "k", 1); _ = st.set("a", "k", 1)
        >>> st.list_groups()
        ['a', 'b']
        """
        return self._storage.list_groups()

    def __contains__(self, item: object) -> bool:
        """Whether a key exists: ``(scope, key) in st``. A stored null
        exists (except through a bridge, where null reads as missing).

        >>> st = State()
        >>> _ = st.set("s", "k", None)
        >>> ("s", "k") in st, ("s", "other") in st
        (True, False)
        """
        return item in self._storage

    def keys(self, scope: str) -> builtins.list[str]:
        """The keys of ``scope``, in the order :meth:`list` gives the values
        ([] if none).

        >>> st = State()
        >>> _ = st.set("s", "b", 1); _ = st.set("s", "a", 2)
        >>> st.keys("s"), st.keys("none")
        (['b', 'a'], [])

        Raises:
            UnsupportedError: through a bridge (the engine has no such call).
        """
        return self._storage.keys(scope)

    def items(self, scope: str, page: int = 1000) -> Iterator[tuple[str, Any]]:
        """Iterate ``(key, value)`` over ``scope``, a page of ``page``
        entries at a time, so a big scope is never all in memory.

        >>> st = State()
        >>> _ = st.set("s", "a", 1); _ = st.set("s", "b", [2])
        >>> list(st.items("s"))
        [('a', 1), ('b', [2])]
        """
        return self._storage.items(scope, page)

    def items_page(self, scope: str, pos: int = 0, limit: int = 1000) -> tuple[builtins.list[tuple[str, bytes]], int]:
        """One page of ``scope``'s keys and raw JSON texts: ``(pairs,
        next_pos)``; an empty list means the scope is exhausted. Pages are
        consistent one by one; a scope written between pages may show keys
        missed or repeated. :meth:`items` walks every page.

        >>> st = State()
        >>> _ = st.set("s", "a", {"n": 1})
        >>> st.items_page("s")
        ([('a', b'{"n":1}')], 1)
        """
        return self._storage.items_page(scope, pos, limit)

    # ---- durability -------------------------------------------------------

    def flush(self) -> None:
        """Make every write so far durable now (fdatasync of every log
        written since its last sync), whatever the sync mode. In memory,
        and where the server owns durability, does nothing.

        >>> State().flush()
        """
        self._storage.flush()

    def compact(self, scope: str | None = None) -> None:
        """Rewrite the log of ``scope`` (default: of every scope) to hold only
        live records: new file, fdatasync, rename over the old one, sync of
        the directory. Crash-safe at every step. Elsewhere, does nothing.

        >>> State().compact()
        """
        self._storage.compact(scope)

    def check(self) -> dict[str, Any]:
        """Read every log again and verify each record, and that replaying
        them gives exactly the keys and values in memory (redis: that every
        value is JSON). Changes nothing. Returns ``{"ok": bool, "logs": n,
        "records": n, "problem": str | None}``.

        >>> State().check()["ok"]
        True
        """
        return self._storage.check()

    # ---- what it is -------------------------------------------------------

    @property
    def adapter(self) -> str:
        """The storage adapter: ``"kv"`` (the compiled store), ``"redis"`` or ``"bridge"``."""
        return self._storage.name

    @property
    def storage(self) -> Any:
        """The storage this State holds (:class:`pystate.storage.Storage`):
        what it promises is in ``ordered``, ``durable``, ``local``."""
        return self._storage

    @property
    def path(self) -> str | None:
        """The store directory, or None (in memory, or another adapter)."""
        return self._storage.path

    @property
    def sync(self) -> str | None:
        """The sync mode of a file store, or None."""
        return self._storage.sync

    @property
    def read_only(self) -> bool:
        """Whether the store was opened ``read_only`` (writes raise ReadOnlyError)."""
        return self._storage.read_only

    @property
    def clustered(self) -> bool:
        """Whether the storage is a cluster (a Redis Cluster, for ``redis``);
        False for the others."""
        return bool(getattr(self._storage, "clustered", False))

    @property
    def max_value_bytes(self) -> int | None:
        """Largest JSON text ``set`` accepts, in bytes (None: no limit)."""
        return self._writes.max_value_bytes

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._storage.closed

    def __enter__(self) -> State:
        if self._storage.closed:
            raise ClosedError("the store is closed")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _seal(self) -> None:
        self._writes.seal()

    @classmethod
    def from_config(cls, config_path: str | os.PathLike[str], **overrides: Any) -> State:
        """Open the store an iii engine config file describes (its
        ``iii-state`` entry; see :mod:`pystate.config`). ``overrides`` are
        State arguments that take precedence over the file.

        Raises:
            ConfigError: the file cannot be read or a value is invalid; the
                message names the file, the key and what is allowed.
        """
        from pystate.config import load_state_options

        options = load_state_options(config_path)
        options.update(overrides)
        return cls(**options)

    # ---- functions and triggers ------------------------------------------

    @property
    def triggers_enabled(self) -> bool:
        """Whether writes queue events for triggers."""
        return self._triggers_enabled

    def register_function(
        self,
        function_id: str,
        handler: Callable[..., Any],
        *,
        description: str | None = None,
        metadata: Any = None,
    ) -> FunctionRef:
        """Register ``handler`` (a function or a coroutine function) so that
        ``trigger(function_id, payload)`` and triggers can call it.

        The handler receives the payload; it also receives the trigger's
        metadata if it declares a parameter named ``metadata``, as in
        iii-sdk. A coroutine function runs on the asyncio loop running where
        it was registered (else on a loop of the store's own).

        >>> st = State()
        >>> ref = st.register_function("greet", lambda data: f"hello {data['name']}")
        >>> st.trigger("greet", {"name": "Ada"})
        'hello Ada'
        >>> ref.unregister()

        Raises:
            PayloadError: the id is not a non-empty string, or the handler
                is not callable.
            StateError: (code ``function_exists``) the id is taken.
        """
        return self._functions.register(function_id, handler, description=description, metadata=metadata)

    def register_trigger(self, trigger: Any) -> Trigger:
        """Register a state trigger, as iii-sdk's ``register_trigger``.

        ``trigger`` is ``{"type": "state", "function_id": ..., "config":
        {"scope": ..., "key": ..., "condition_function_id": ...},
        "metadata": ...}``; every config field is optional. After each
        write whose scope and key match, the condition function (if any)
        is called with the event, and the handler runs unless it returned
        False (exactly False, as in the engine). Returns a
        :class:`~pystate.triggers.Trigger` with ``unregister()``.

        >>> st = State()
        >>> seen = []
        >>> _ = st.register_function("audit", seen.append)
        >>> t = st.register_trigger({"type": "state", "function_id": "audit",
        ...                          "config": {"scope": "users"}})
        >>> _ = st.set("users", "u1", {"name": "Ada"})
        >>> st.flush_events()
        True
        >>> seen[0]["event_type"], seen[0]["new_value"]
        ('state:created', {'name': 'Ada'})
        >>> t.unregister()

        Raises:
            TriggerConfigError: an unknown type (code
                ``trigger_type_not_found``) or a malformed config.
            FunctionNotFoundError: the handler or condition function is not
                registered.
        """
        if self.closed:
            raise ClosedError("the store is closed")
        function_id, config, metadata = parse_trigger(trigger)
        self._functions.require(function_id)
        if config["condition_function_id"] is not None:
            self._functions.require(config["condition_function_id"])
        return self._triggers.add(function_id, config, metadata)

    def on_change(
        self,
        scope: str | None = None,
        key: str | None = None,
        condition: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Subscription]:
        """Decorator: run the function after every write to ``scope`` /
        ``key`` (None: any), when ``condition(event)`` is not False.

        >>> st = State()
        >>> @st.on_change(scope="orders", condition=lambda e: e["event_type"] != "state:deleted")
        ... def on_order(event):
        ...     print(event["key"], event["new_value"])
        >>> _ = st.set("orders", "o1", {"total": 5})
        >>> st.flush_events()
        o1 {'total': 5}
        True
        >>> on_order.unregister()
        """
        for name, value in (("scope", scope), ("key", key)):
            if value is not None and not isinstance(value, str):
                raise PayloadError(f"on_change: {name} must be a string or None, got {type(value).__name__}")
        if condition is not None and not callable(condition):
            raise PayloadError(f"on_change: condition must be callable, got {type(condition).__name__}")

        def decorate(fn: Callable[..., Any]) -> Subscription:
            tag = f"{getattr(fn, '__qualname__', 'handler')}#{uuid.uuid4().hex[:12]}"
            refs = [self.register_function(f"pystate::on_change::{tag}", fn)]
            cond_id = None
            try:
                if condition is not None:
                    refs.append(self.register_function(f"pystate::condition::{tag}", condition))
                    cond_id = refs[-1].id
                trig = self.register_trigger(
                    {
                        "type": "state",
                        "function_id": refs[0].id,
                        "config": {"scope": scope, "key": key, "condition_function_id": cond_id},
                    }
                )
            except BaseException:
                for ref in refs:
                    ref.unregister()
                raise
            return Subscription(fn, trig, refs)

        return decorate

    def flush_events(self, timeout: float | None = None) -> bool:
        """Wait until every queued event has been handled, coroutine
        handlers included. Returns False if ``timeout`` seconds passed
        first.

        >>> State().flush_events(timeout=1)
        True
        """
        return self._events.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Refuse writes (ClosedError from now on), run the events already
        queued (waiting at most ``timeout`` seconds; None: until done), stop
        the dispatch threads, make every write durable and free the store.
        Every write acknowledged before close() began gets its events;
        those still queued when the time is up are dropped, logged and
        counted. Closing twice, or from several threads at once, is fine:
        a second close() waits (at most its own ``timeout``) for the first.

        >>> st = State()
        >>> st.close(); st.close()
        >>> st.closed
        True
        """
        if self._feed is not None:
            self._feed.stop()
        if not self._storage.closed:
            # Writes stop first: a writer that kept writing would keep the
            # queue from ever draining, and an event queued after the drain
            # would never run.
            self._writes.seal()
            self._events.close(timeout)
            self._writes.set_watch(None)
        self._storage.close()

    def stats(self) -> dict[str, Any]:
        """The storage's counters (kv: scopes, keys, bytes, and on file the
        logs, recovery and per-scope figures; redis: its URL), plus ``handler_errors`` (handlers and conditions that raised),
        ``triggers`` and ``events`` (``pending``, ``delivered``,
        ``running_coroutines``, ``dropped``).

        >>> State().stats()["handler_errors"]
        0
        """
        out = self._storage.stats()
        out["handler_errors"] = self._events.handler_errors
        out["triggers"] = self._triggers.count
        out["events"] = self._events.stats()
        return out

    def trigger(self, request: Any, payload: Any = _UNSET) -> Any:
        """Call a function by id, as the engine's ``trigger`` does.

        Two forms are accepted: ``trigger(function_id, payload)`` and
        iii-sdk's ``trigger({"function_id": ..., "payload": ...,
        "action": {"type": "void"}})``. The id is one of the six
        ``state::*`` functions or one given to :meth:`register_function`,
        whose result is returned (a coroutine function is awaited on its
        loop). A void action returns None at once: a ``state::*`` call has
        been made by then, a registered function runs on the dispatcher
        and its errors are logged and counted. Results have the engine's shapes: ``state::set`` and
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
            InvocationError: a registered function raised (code
                ``invocation_failed``; the exception is ``__cause__``).
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
        fn = STATE_FUNCTIONS.get(function_id)
        user_fn = None
        if fn is None:
            user_fn = self._functions.require(function_id)
        void = is_void(action)
        if user_fn is not None:
            if void:
                self._events.submit_call(user_fn, payload)
                return None
            return self._functions.call(function_id, payload)
        assert fn is not None  # a builtin: require() raised for anything else
        result = fn(self, payload)
        return None if void else result

    def __repr__(self) -> str:
        return f"<pystate.State {self._storage.describe()}>"


def _call_alive(ref: weakref.WeakMethod[Callable[[], None]]) -> None:
    method = ref()
    if method is not None:
        method()


# inspect.signature(State) and help(State) show the kv adapter's options
# (the others are in the overloads and in each adapter's open_storage).
def _signature() -> inspect.Signature:
    own = [p for p in inspect.signature(State.__init__).parameters.values()][1:-1]
    kv = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
          for name, default in (("sync", "interval"), ("save_interval_ms", 5000), ("repair", False),
                                ("read_only", False), ("share_events", False))]
    return inspect.Signature(own[:2] + kv[:4] + own[2:] + kv[4:])


State.__signature__ = _signature()  # type: ignore[attr-defined]
