"""The ``redis`` adapter: state in a Redis server, in the iii engine's layout.

Each scope is one hash, ``state:<scope>``; its fields are the keys and its
values the JSON texts, as the engine writes them, so a pystate process and
an engine sharing a server read and write the same data.

Every call is atomic on the server. ``set`` and ``delete`` run a Lua script
that reads the old text and writes in one step. ``update`` runs pystate's
compiled op engine here (Lua's JSON cannot keep 64-bit integers exact) and
stores the result with a Lua compare-and-set on the exact old text,
starting over if another client wrote the key in between: two processes
racing on one counter lose no increment, and a failure leaves either the
old value or the new one, never half of it.

Redis keeps no order inside a hash, so ``list`` returns a scope's values in
the server's order, not in insertion order.

>>> import pystate  # doctest: +SKIP
>>> st = pystate.State(adapter="redis", redis_url="redis://localhost:6379/0")  # doctest: +SKIP
>>> st.set("users", "u1", {"name": "Ada"}) is None  # doctest: +SKIP
True
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from typing import Any, Iterator
from urllib.parse import urlparse

from pystate._backend import codec as _codec
from pystate._backend import core as _core
from pystate._backend import ops as _ops
from pystate.errors import (
    AdapterUnavailableError,
    ClosedError,
    ConfigError,
    ValueTooLargeError,
)
from pystate.adapters.remote import RemoteState
from pystate.adapters import check_pair as _pair
from pystate.adapters import check_text as _text

UpdateResult = _core.UpdateResult
apply = _ops.apply

__all__ = ["RedisState", "DEFAULT_REDIS_URL", "PREFIX"]

#: The engine's default server.
DEFAULT_REDIS_URL = "redis://localhost:6379"
#: Scope hashes are named ``PREFIX + scope``, as the engine names them.
PREFIX = "state:"

_SCHEMES = ("redis", "rediss", "unix")

# Every script takes, last, the channel to publish the change on ('' for
# none): published inside the script, so every subscriber sees the changes
# of one key in the order the server applied them. The message is
# {"t": event type, "s": scope, "k": key, "o": old text, "n": new text},
# "o"/"n" left out for no value.
_PUBLISH = """
local function publish(channel, etype, scope, key, old, new)
  if channel ~= '' then
    redis.call('PUBLISH', channel, cjson.encode({t = etype, s = scope, k = key, o = old or nil, n = new}))
  end
end
"""

# KEYS[1] the scope's hash, ARGV[1] the key, ARGV[2] the new JSON text,
# ARGV[3] the scope's name, ARGV[4] the channel.
_SET = _PUBLISH + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
publish(ARGV[4], old and 'state:updated' or 'state:created', ARGV[3], ARGV[1], old, ARGV[2])
return old
"""
# ARGV[1] the key, ARGV[2] the scope's name, ARGV[3] the channel.
_DELETE = _PUBLISH + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then redis.call('HDEL', KEYS[1], ARGV[1]) end
publish(ARGV[3], 'state:deleted', ARGV[2], ARGV[1], old, nil)
return old
"""
# ARGV[2] the new text; ARGV[3] "1" if the key must exist with exactly the
# text ARGV[4], "0" if it must not exist; ARGV[5] the scope's name, ARGV[6]
# the channel. Returns 1 when written.
_CAS = _PUBLISH + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[3] == '1' then
  if cur ~= ARGV[4] then return 0 end
elseif cur then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
publish(ARGV[6], cur and 'state:updated' or 'state:created', ARGV[5], ARGV[1], cur, ARGV[2])
return 1
"""

#: The default channel of ``share_events``.
DEFAULT_EVENTS_CHANNEL = "pystate:state-events"

_EV_CREATED, _EV_UPDATED, _EV_DELETED = "state:created", "state:updated", "state:deleted"


class RedisState(RemoteState):
    """A :class:`pystate.State` whose values live in a Redis server.

    Made by ``State(adapter="redis", redis_url=...)``. Only the storage
    differs: functions, triggers (fired for writes made through this
    object), ``trigger`` and ``AsyncState`` work as with the kv adapter.

    Args:
        redis_url: ``redis://[user:password@]host:port/db`` (also
            ``rediss://`` and ``unix://``); default ``redis://localhost:6379``,
            as in the engine.
        max_value_bytes, triggers_enabled, max_pending_events,
            event_queue_full: as for :class:`pystate.State`.
        socket_timeout: seconds a call may wait on the server before it
            fails with ``adapter_unavailable`` (default 5).

    Raises:
        ConfigError: a malformed URL, or options of the kv adapter.
        AdapterUnavailableError: the server cannot be reached.
    """

    __slots__ = (
        "_redis",
        "_url",
        "_scripts",
        "_redis_errors",
        "_clustered",
        "_channel",
        "_subscriber",
        "_sub_stop",
    )

    __signature__ = None  # State's shows the kv adapter's options; inspect reads __init__ here

    def __init__(
        self,
        path: Any = None,
        *,
        adapter: str = "redis",
        redis_url: str | None = None,
        max_value_bytes: int | None = None,
        triggers_enabled: bool = True,
        max_pending_events: int = 10_000,
        event_queue_full: str = "block",
        socket_timeout: float = 5.0,
        share_events: bool = False,
        events_channel: str = DEFAULT_EVENTS_CHANNEL,
        **kv_options: Any,
    ) -> None:
        self._subscriber: threading.Thread | None = None
        self._channel = ""
        self._check_options("redis", "redis_url", path, kv_options, max_value_bytes,
                            triggers_enabled, max_pending_events, event_queue_full)
        if not isinstance(share_events, bool):
            raise ConfigError(f"share_events: expected True or False, got {share_events!r}")
        if not isinstance(events_channel, str) or not events_channel:
            raise ConfigError(f"events_channel: expected a non-empty string, got {events_channel!r}")
        url = DEFAULT_REDIS_URL if redis_url is None else redis_url
        if not isinstance(url, str) or urlparse(url).scheme not in _SCHEMES or not (
            urlparse(url).netloc or urlparse(url).path
        ):
            raise ConfigError(
                f"redis_url: expected redis://host:port[/db], rediss://... or unix://path, got {redis_url!r}"
            )
        try:
            import redis
        except ImportError:  # pragma: no cover - redis-py is a declared dependency
            raise ConfigError("the redis adapter needs redis-py: pip install 'pystate-store[redis]'") from None
        self._redis_errors: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
        self._url = url
        try:
            self._redis = redis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
        except ValueError as e:
            raise ConfigError(f"redis_url: {e} (got {redis_url!r})") from None
        try:
            self._redis.ping()
            # A cluster node: talk to the cluster (each scope's hash is one
            # key, so it lives on one slot; SCAN visits every primary).
            clustered = self._redis.info("cluster").get("cluster_enabled") == 1
            if clustered:
                from redis.cluster import RedisCluster

                self._redis.close()
                self._redis = RedisCluster.from_url(  # type: ignore[assignment]  # the same commands
                    url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
                )
                self._redis_errors = self._redis_errors + (redis.exceptions.ClusterError,)
                self._redis.ping()
        except self._redis_errors as e:
            self._redis.close()
            raise AdapterUnavailableError(f"cannot reach Redis at {_safe(url)}: {e}") from None
        self._clustered = clustered
        self._scripts = {
            "set": self._redis.register_script(_SET),
            "delete": self._redis.register_script(_DELETE),
            "cas": self._redis.register_script(_CAS),
        }
        self._is_closed = False
        self._init_dispatch(triggers_enabled, max_pending_events, event_queue_full)
        if share_events:
            self._channel = events_channel  # every write publishes, whatever this process watches
            if triggers_enabled:
                self._start_subscriber()

    # ---- plumbing ----------------------------------------------------------

    @property
    def adapter(self) -> str:
        """The storage adapter: ``"redis"``."""
        return "redis"

    @property
    def clustered(self) -> bool:
        """True when the server is a Redis Cluster node."""
        return self._clustered

    @property
    def redis_url(self) -> str:
        """The server's URL (with any password)."""
        return self._url

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._is_closed:
            raise ClosedError("the store is closed")
        try:
            return fn(*args, **kwargs)
        except self._redis_errors as e:
            raise AdapterUnavailableError(f"Redis at {_safe(self._url)} is unavailable: {e}") from e

    def _rewire(self) -> None:
        idx = self._triggers
        # With shared events every event, this process's own included,
        # arrives through the channel, in the server's order.
        self._watched = bool(self._triggers_enabled and idx.count and self._subscriber is None)

    def _emit(self, event_type: str, scope: str, key: str, old: bytes | None, new: bytes | None) -> None:
        self._events.emit(event_type, scope, key, old, new)

    # ---- shared events ------------------------------------------------------

    def _start_subscriber(self) -> None:
        """Subscribe before returning, so no change made after the
        constructor returns is missed."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self._channel)
            # Wait for the confirmation: from then on the server sends us every message.
            deadline = time.monotonic() + 10
            while not pubsub.subscribed and time.monotonic() < deadline:
                pubsub.get_message(timeout=0.05)
        except self._redis_errors as e:
            pubsub.close()
            raise AdapterUnavailableError(f"cannot subscribe to {self._channel!r}: {e}") from None
        self._sub_stop = threading.Event()
        self._subscriber = threading.Thread(
            target=_listen, args=(pubsub, self._sub_stop, self._events, self._triggers, self._redis_errors),
            name="pystate-redis-events", daemon=True,
        )
        self._subscriber.start()
        self._rewire()

    # ---- the six functions -----------------------------------------------

    def set(self, scope: str, key: str, value: Any) -> Any:
        """Store ``value`` at (scope, key); return the previous value or None."""
        _text(scope, "scope")
        _text(key, "key")
        data = _codec.dumps(value)
        if self._limit is not None and len(data) > self._limit:
            raise ValueTooLargeError(
                f"value of {len(data)} bytes exceeds the configured max_value_bytes limit of {self._limit}"
            )
        args = [key, data, scope, self._channel]
        self._writable()
        if not self._is_watched(scope, key):
            old = self._call(self._scripts["set"], keys=[PREFIX + scope], args=args)
            return None if old is None else _codec.loads(old)
        self._admit()
        with self._stripe(scope, key):
            self._writable()  # under the stripe: close() waits for this write's event
            old = self._call(self._scripts["set"], keys=[PREFIX + scope], args=args)
            self._emit(_EV_CREATED if old is None else _EV_UPDATED, scope, key, old, data)
        return None if old is None else _codec.loads(old)

    def get(self, scope: str, key: str, default: Any = None) -> Any:
        """The value at (scope, key), or ``default``."""
        _text(scope, "scope")
        _text(key, "key")
        data = self._call(self._redis.hget, PREFIX + scope, key)
        return default if data is None else _codec.loads(data)

    def delete(self, scope: str, key: str) -> Any:
        """Remove (scope, key); return the removed value or None."""
        _text(scope, "scope")
        _text(key, "key")
        args = [key, scope, self._channel]
        self._writable()
        if not self._is_watched(scope, key):
            old = self._call(self._scripts["delete"], keys=[PREFIX + scope], args=args)
            return None if old is None else _codec.loads(old)
        self._admit()
        with self._stripe(scope, key):
            self._writable()  # under the stripe: close() waits for this write's event
            old = self._call(self._scripts["delete"], keys=[PREFIX + scope], args=args)
            self._emit(_EV_DELETED, scope, key, old, None)
        return None if old is None else _codec.loads(old)

    def update(self, scope: str, key: str, ops: Any) -> UpdateResult:
        """Apply ``ops`` atomically (compare-and-set, retried on conflict);
        see :meth:`pystate.State.update`."""
        _text(scope, "scope")
        _text(key, "key")
        self._writable()
        if not self._is_watched(scope, key):
            return self._update(scope, key, ops, False)
        self._admit()
        with self._stripe(scope, key):
            self._writable()  # under the stripe: close() waits for this write's event
            return self._update(scope, key, ops, True)

    def _update(self, scope: str, key: str, ops: Any, watched: bool) -> UpdateResult:
        name = PREFIX + scope
        cas = self._scripts["cas"]
        while True:
            old_data = self._call(self._redis.hget, name, key)
            if old_data is None:
                old = None
                new, errors = apply(None, True, ops)
            else:
                old = _codec.loads(old_data)
                new, errors = apply(_codec.loads(old_data), False, ops)
            new_data = _codec.dumps(new)
            exists = "0" if old_data is None else "1"
            args = [key, new_data, exists, old_data if old_data is not None else b"", scope, self._channel]
            if self._call(cas, keys=[name], args=args):
                break
        if watched:
            self._emit(_EV_CREATED if old_data is None else _EV_UPDATED, scope, key, old_data, new_data)
        return UpdateResult(old, new, errors)

    def list(self, scope: str) -> list[Any]:
        """All values of ``scope``, in Redis's order (not insertion order)."""
        _text(scope, "scope")
        loads = _codec.loads
        return [loads(v) for v in self._call(self._redis.hvals, PREFIX + scope)]

    def keys(self, scope: str) -> builtins.list[str]:
        """The keys of ``scope``, in Redis's order (HKEYS), which is the
        order :meth:`list` gives the values while the scope is not written."""
        _text(scope, "scope")
        return [k.decode("utf-8") for k in self._call(self._redis.hkeys, PREFIX + scope)]

    def items(self, scope: str, page: int = 1000) -> Iterator[tuple[str, Any]]:
        """Iterate ``(key, value)`` over ``scope`` with HSCAN, ``page`` at a
        time (a key written meanwhile may be seen twice or not at all)."""
        _text(scope, "scope")
        loads = _codec.loads
        cursor = 0
        while True:
            cursor, pairs = self._call(self._redis.hscan, PREFIX + scope, cursor, count=page)
            for k, v in pairs.items():
                yield k.decode("utf-8"), loads(v)
            if not cursor:
                return

    def __contains__(self, item: object) -> bool:
        """``(scope, key) in st``: HEXISTS (a stored null exists)."""
        scope, key = _pair(item)
        return bool(self._call(self._redis.hexists, PREFIX + scope, key))

    def list_groups(self) -> builtins.list[str]:
        """Sorted names of the scopes holding keys (SCAN, never KEYS)."""
        names = set()
        cut = len(PREFIX)
        for raw in self._call(self._scan_all):
            names.add(raw[cut:].decode("utf-8", "surrogateescape"))
        return sorted(names)

    def _scan_all(self) -> builtins.list[bytes]:
        # On a cluster, redis-py's scan_iter walks every primary in turn.
        return list(self._redis.scan_iter(match=PREFIX + "*", count=1000, _type="hash"))

    # ---- the rest of the State surface -----------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters of this client: ``adapter``, ``redis_url`` (password
        hidden), and the trigger counters of :meth:`pystate.State.stats`."""
        if self._is_closed:
            raise ClosedError("the store is closed")
        return {
            "adapter": "redis",
            "redis_url": _safe(self._url),
            "cluster": self._clustered,
            "handler_errors": self._events.handler_errors,
            "triggers": self._triggers.count,
            "events": self._events.stats(),
        }

    def flush(self) -> None:
        """Nothing to do: durability is the server's (its AOF/RDB settings)."""
        if self._is_closed:
            raise ClosedError("the store is closed")

    def compact(self, scope: str | None = None) -> None:
        """Nothing to do: Redis manages its own memory."""
        if self._is_closed:
            raise ClosedError("the store is closed")

    def check(self) -> dict[str, Any]:
        """Verify that every value of every scope is JSON. Changes nothing."""
        records, problem = 0, None
        for scope in self.list_groups():
            for field, value in self._call(self._redis.hgetall, PREFIX + scope).items():
                records += 1
                try:
                    _codec.loads(value)
                except ValueError:
                    problem = problem or f"scope {scope!r} key {field!r}: not JSON"
        return {"ok": problem is None, "logs": 0, "records": records, "problem": problem}

    def close(self, timeout: float | None = None) -> None:
        """Refuse writes (ClosedError from now on), run queued events, stop
        dispatch and disconnect. Idempotent."""
        if self._is_closed or self._sealed:
            return
        # Writes stop first: a writer that kept writing would keep the
        # event queue from ever draining.
        self._seal()
        if self._subscriber is not None:
            self._sub_stop.set()
            self._subscriber.join()
        self._events.close(timeout)
        self._watched = False
        self._is_closed = True
        self._redis.close()

    def __repr__(self) -> str:
        state = ", closed" if self._is_closed else ""
        return f"<pystate.State redis at {_safe(self._url)}{state}>"


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    p = urlparse(url)
    if p.password:
        netloc = p.netloc.replace(f":{p.password}@", ":***@")
        return p._replace(netloc=netloc).geturl()
    return url


_log = logging.getLogger("pystate.redis")


def _listen(pubsub: Any, stop: threading.Event, events: Any, index: Any, errors: tuple) -> None:
    """The subscriber thread: every change published on the channel, in the
    server's order, into this process's event queue (matched like a local
    write). It queues past the bound rather than wait: Redis would drop a
    subscriber that stops reading."""
    loads = _codec.loads
    while not stop.is_set():
        try:
            msg = pubsub.get_message(timeout=0.2)
        except errors as e:
            _log.warning("pystate: lost the Redis event channel (%s); resubscribing", e)
            time.sleep(0.2)
            continue
        if msg is None or msg.get("type") != "message":
            continue
        try:
            ev = loads(msg["data"])
            old, new = ev.get("o"), ev.get("n")
            events.emit(
                ev["t"], ev["s"], ev["k"],
                None if old is None else old.encode(), None if new is None else new.encode(),
            )
        except Exception:  # a foreign message on our channel
            _log.exception("pystate: ignored a malformed message on the event channel: %r", msg.get("data"))
    pubsub.close()
