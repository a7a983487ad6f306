"""``State``: the store with the iii engine's function surface.

The fast data paths (``set``, ``get``, ``delete``, ``update``, ``list``,
``list_groups``) are compiled methods inherited from
:class:`pystate._core.Store`. This module adds ``trigger``, which accepts
the engine's ``state::*`` requests and answers with the engine's response
shapes, so code written against iii-state runs unchanged.
"""

from __future__ import annotations

import functools
import logging
import os
import struct
import threading
import uuid
import weakref
import inspect
from typing import TYPE_CHECKING, Any, Callable, Literal, TypeVar, overload

from pystate._backend import core as _core
from pystate._options import check_testing_options
from pystate.dispatch import QUEUE_POLICIES, EventDispatcher
from pystate.errors import (
    ClosedError,
    ConfigError,
    PayloadError,
    StateError,
    UnsupportedActionError,
)
from pystate.functions import FunctionRef, FunctionRegistry
from pystate.triggers import Trigger, TriggerIndex, parse_trigger

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from pystate._options import BridgeOptions, KvOptions, QueuePolicy, RedisOptions, SyncMode

__all__ = ["State", "UpdateResult", "Subscription"]

F = TypeVar("F", bound=Callable[..., Any])

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


_BUILTINS: dict[str, Callable[[State, Any], Any]] = {
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
#: How often a share_events store looks for other processes' writes.
SHARE_EVENTS_POLL_S = 0.005
_U32 = struct.Struct("<I")

# Every open State, for os.fork(): a child must not inherit locks held by
# threads it does not have (see State._after_fork_in_child).
_OPEN_STATES: weakref.WeakSet[Any] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for st in list(_OPEN_STATES):
        st._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class State(_core.Store):
    """An embedded iii-state store: JSON values addressed by (scope, key).

    ``State()`` is an in-memory store on pystate's compiled core;
    ``State("dir")`` is durable: one append-only log per scope in ``dir``,
    replayed when opened. A new or empty ``dir`` becomes a store (it gets a
    ``PYSTATE`` marker); a non-empty directory that is not one is refused.
    Either is safe to share between threads and is a context manager.

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

    __slots__ = ("_functions", "_triggers", "_events", "_triggers_enabled", "_share_stop", "_share_thread", "_share_lock",
                 "__weakref__")

    def __new__(cls, *args: Any, adapter: str = "kv", **kwargs: Any) -> State:
        # State(adapter="redis", ...) is a State whose storage is a Redis
        # server: the subclass overrides every storage method.
        if cls is State and adapter != "kv":
            cls = _adapter_class(adapter)
        return super().__new__(cls)

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
        sync: SyncMode = "interval",
        save_interval_ms: int = 5000,
        repair: bool = False,
        read_only: bool = False,
        max_value_bytes: int | None = None,
        triggers_enabled: bool = True,
        max_pending_events: int = 10_000,
        event_queue_full: QueuePolicy = "block",
        share_events: bool = False,
        **_testing: Any,
    ) -> None:
        if adapter != "kv":
            raise ConfigError(f"adapter: expected one of kv, redis, bridge, got {adapter!r}")
        check_testing_options(_testing)
        self._check_dispatch_options(triggers_enabled, max_pending_events, event_queue_full)
        if type(share_events) is not bool:
            raise ConfigError(f"share_events: expected True or False, got {share_events!r}")
        if share_events and path is None:
            raise ConfigError(
                "share_events applies to file-based stores (an in-memory store is one process's): give a path"
            )
        if path is not None and read_only is not True:
            # The C core creates the directory itself; its parents too, here
            # (a reader creates nothing).
            parent = os.path.dirname(os.path.abspath(os.fspath(path)))
            os.makedirs(parent, exist_ok=True)
        super().__init__(
            path,
            sync=sync,
            save_interval_ms=save_interval_ms,
            repair=repair,
            read_only=read_only,
            max_value_bytes=max_value_bytes,
            **_testing,
        )
        self._init_dispatch(triggers_enabled, max_pending_events, event_queue_full)
        if share_events:
            self._changes()  # from now on the C core keeps other processes' changes
            self._start_sharing()

    # ---- other processes' writes as events (share_events=True) ----------

    def _start_sharing(self) -> None:
        stop = threading.Event()
        me = weakref.ref(self)

        def run() -> None:
            # Weakly: a store dropped without close() is not kept alive.
            while not stop.wait(SHARE_EVENTS_POLL_S):
                st = me()
                if st is None:
                    return
                try:
                    st._deliver_changes()
                except ClosedError:
                    return
                except StateError as e:  # a damaged log, a full disk: said, then tried again
                    log.warning("share_events: %s", e)
                del st

        self._share_stop = stop
        if getattr(self, "_share_lock", None) is None:
            self._share_lock = threading.Lock()
        self._share_thread = threading.Thread(target=run, name="pystate-share-events", daemon=True)
        self._share_thread.start()

    def _stop_sharing(self) -> None:
        stop = getattr(self, "_share_stop", None)
        if stop is not None:
            stop.set()
            if self._share_thread is not threading.current_thread():
                self._share_thread.join()

    def _deliver_changes(self) -> None:
        """Queue the events of what other processes wrote since the last look,
        in the order their logs hold them."""
        with self._share_lock:
            self._deliver_changes_locked()

    def _deliver_changes_locked(self) -> None:
        data, count = self._changes()
        if not count or not self._triggers_enabled:
            return
        emit, unpack, p = self._events.emit, _U32.unpack_from, 0
        for _ in range(count):
            kind = data[p]
            p += 1
            (n,) = unpack(data, p)
            scope = data[p + 4:p + 4 + n].decode()
            p += 4 + n
            (n,) = unpack(data, p)
            key = data[p + 4:p + 4 + n].decode()
            p += 4 + n
            (n,) = unpack(data, p)
            old = data[p + 4:p + 3 + n] if n else None
            p += 4 + max(n - 1, 0)
            (n,) = unpack(data, p)
            new = data[p + 4:p + 3 + n] if n else None
            p += 4 + max(n - 1, 0)
            event = "state:deleted" if kind == 2 else "state:created" if old is None else "state:updated"
            emit(event, scope, key, old, new)

    @staticmethod
    def _check_dispatch_options(triggers_enabled: Any, max_pending_events: Any, event_queue_full: Any) -> None:
        if type(max_pending_events) is not int or max_pending_events < 1:
            raise ConfigError(
                f"max_pending_events: expected a positive integer, got {max_pending_events!r}"
            )
        if event_queue_full not in QUEUE_POLICIES:
            raise ConfigError(
                f"event_queue_full: expected one of {', '.join(QUEUE_POLICIES)}, got {event_queue_full!r}"
            )
        if not isinstance(triggers_enabled, bool):
            raise ConfigError(f"triggers_enabled: expected True or False, got {triggers_enabled!r}")

    def _init_dispatch(self, triggers_enabled: bool, max_pending_events: int, event_queue_full: str) -> None:
        self._functions = FunctionRegistry(reserved=_BUILTINS.__contains__)
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

    def _after_fork_in_child(self) -> None:
        """A child of fork() goes on with the stores its parent opened (the C
        core re-attaches a file store to its directory); what the parent's
        other threads held here is made anew."""
        after = getattr(super(), "_after_fork_in_child", None)
        if after is not None:
            after()
        self._events.after_fork_in_child()
        self._triggers._lock = threading.Lock()
        self._functions._lock = threading.Lock()
        if getattr(self, "_share_stop", None) is not None and not self._share_stop.is_set():
            self._share_lock = threading.Lock()
            self._start_sharing()  # the parent's poller did not come along
            self._rewire()  # (its write path held the parent's lock)

    def _rewire(self) -> None:
        """Point the compiled write path at the current triggers."""
        idx, ev = self._triggers, self._events
        emit = ev.emit
        if getattr(self, "_share_stop", None) is not None:
            # Another process's change that this write followed (the C core
            # applies them before a write) is queued before this write's own.
            me, lock, queue = weakref.ref(self), self._share_lock, ev.emit

            def emit(event_type: str, scope: str, key: str, old: Any, new: Any) -> None:
                st = me()
                with lock:
                    if st is not None:
                        try:
                            st._deliver_changes_locked()
                        except ClosedError:
                            pass  # closing meanwhile: the changes die with the store
                        except StateError as e:  # a damaged log: never this write's failure
                            log.warning("share_events: %s", e)
                    queue(event_type, scope, key, old, new)

        if self._triggers_enabled and idx.count:
            self._set_watch(
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
            self._set_watch(None)

    @property
    def adapter(self) -> str:
        """The storage adapter: ``"kv"`` (this compiled store), ``"redis"`` or ``"bridge"``."""
        return "kv"

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
        self._stop_sharing()
        if not self.closed:
            # Writes stop first: a writer that kept writing would keep the
            # queue from ever draining, and an event queued after the drain
            # would never run.
            self._seal()
            self._events.close(timeout)
            self._set_watch(None)
        super().close()

    def stats(self) -> dict[str, Any]:
        """The store's counters (see :meth:`pystate._core.Store.stats`),
        plus ``handler_errors`` (handlers and conditions that raised),
        ``triggers`` and ``events`` (``pending``, ``delivered``,
        ``running_coroutines``, ``dropped``).

        >>> State().stats()["handler_errors"]
        0
        """
        out = super().stats()
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
        fn = _BUILTINS.get(function_id)
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
        where = "in memory" if self.path is None else f"at {self.path!r}, sync={self.sync}"
        if self.closed:
            return f"<pystate.State {where}, closed>"
        s = self.stats()
        return f"<pystate.State {where}, {s['scopes']} scopes, {s['keys']} keys>"


def _call_alive(ref: weakref.WeakMethod[Callable[[], None]]) -> None:
    method = ref()
    if method is not None:
        method()


# inspect.signature(State) and help(State) show the kv adapter's options
# (State.__new__ only picks the class; its (*args, **kwargs) says nothing).
State.__signature__ = inspect.signature(State.__init__).replace(  # type: ignore[attr-defined]
    parameters=[p for p in list(inspect.signature(State.__init__).parameters.values())[1:]
                if p.kind is not inspect.Parameter.VAR_KEYWORD]
)


def _adapter_class(adapter: Any) -> type[State]:
    if adapter == "redis":
        from pystate.adapters.redis_adapter import RedisState

        return RedisState
    if adapter == "bridge":
        from pystate.adapters.bridge_adapter import BridgeState

        return BridgeState
    raise ConfigError(f"adapter: expected one of kv, redis, bridge, got {adapter!r}")
