"""The ``redis`` adapter: state in a Redis server, in the iii engine's layout.

Each scope is one hash, ``state:<scope>``; its fields are the keys and its
values the JSON texts, as the engine writes them, so a pystate process and
an engine sharing a server read and write the same data.

Every call is atomic on the server. ``put`` and ``remove`` run a Lua script
that reads the old text and writes in one step; ``put_if`` is a Lua
compare-and-set on the exact old text, on which the write path
(:mod:`pystate.writes`) runs ``update`` with pystate's op engine (Lua's
JSON cannot keep 64-bit integers exact), starting over if another client
wrote the key in between: two processes racing on one counter lose no
increment, and a failure leaves either the old value or the new one, never
half of it.

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
from pystate.errors import AdapterUnavailableError, ClosedError, ConfigError
from pystate.storage import Emit, Opened, check_pair as _pair, check_text as _text, refuse_kv_options

__all__ = ["RedisStorage", "RedisFeed", "open_storage", "DEFAULT_REDIS_URL", "PREFIX"]

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


def open_storage(path: Any, options: dict[str, Any]) -> Opened:
    """Open the redis storage ``State(adapter="redis", ...)`` holds; see
    :class:`RedisStorage` for the options."""
    options = dict(options)
    own = {name: options.pop(name) for name in ("redis_url", "socket_timeout", "share_events", "events_channel")
           if name in options}
    refuse_kv_options("redis", "redis_url", path, options)
    share_events = own.pop("share_events", False)
    if not isinstance(share_events, bool):
        raise ConfigError(f"share_events: expected True or False, got {share_events!r}")
    storage = RedisStorage(share_events=share_events, **own)
    return Opened(storage, RedisFeed(storage) if share_events else None)


class RedisStorage:
    """The storage of ``State(adapter="redis", redis_url=...)``: values in
    a Redis server, one hash per scope. Only the storage differs:
    functions, triggers (fired for writes made through this object),
    ``trigger`` and ``AsyncState`` work as with the kv adapter.

    Args:
        redis_url: ``redis://[user:password@]host:port/db`` (also
            ``rediss://`` and ``unix://``); default ``redis://localhost:6379``,
            as in the engine.
        socket_timeout: seconds a call may wait on the server before it
            fails with ``adapter_unavailable`` (default 5).
        share_events: every write publishes its change on
            ``events_channel``, and :class:`RedisFeed` hands this process
            every client's changes, its own included, in the server's order.

    Raises:
        ConfigError: a malformed URL.
        AdapterUnavailableError: the server cannot be reached.
    """

    name = "redis"
    #: Redis keeps no order inside a hash.
    ordered = False
    durable = True
    local = False
    applies_ops = False
    path = None
    sync = None
    read_only = False

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        socket_timeout: float = 5.0,
        share_events: bool = False,
        events_channel: str = DEFAULT_EVENTS_CHANNEL,
    ) -> None:
        self._is_closed = True  # until connected
        self._channel = ""
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
        if share_events:
            self._channel = events_channel  # every write publishes, whatever this process watches

    # ---- plumbing ----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._is_closed

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

    # ---- raw writes ----------------------------------------------------------

    def put(self, scope: str, key: str, data: bytes) -> bytes | None:
        """Store the JSON text ``data``; return the text it replaced, or None."""
        _text(scope, "scope")
        _text(key, "key")
        old: bytes | None = self._call(self._scripts["set"], keys=[PREFIX + scope],
                                       args=[key, data, scope, self._channel])
        return old

    def put_if(self, scope: str, key: str, data: bytes, expect: bytes | None) -> bool:
        """Compare-and-set on the exact text ``expect`` (None: the key must
        not exist), in one script; whether it stored ``data``."""
        _text(scope, "scope")
        _text(key, "key")
        args = [key, data, "0" if expect is None else "1", b"" if expect is None else expect, scope, self._channel]
        return bool(self._call(self._scripts["cas"], keys=[PREFIX + scope], args=args))

    def remove(self, scope: str, key: str) -> bytes | None:
        """Remove the key; return its text, or None."""
        _text(scope, "scope")
        _text(key, "key")
        old: bytes | None = self._call(self._scripts["delete"], keys=[PREFIX + scope], args=[key, scope, self._channel])
        return old

    def get_seen(self, scope: str, key: str) -> tuple[bytes | None, int]:
        """(the text at (scope, key) or None, 0): a server others share
        vouches for no read, so every update's write is a put_if."""
        _text(scope, "scope")
        _text(key, "key")
        data: bytes | None = self._call(self._redis.hget, PREFIX + scope, key)
        return data, 0

    def put_seen(self, seen: int, data: bytes) -> bool:
        """Always False (see get_seen)."""
        return False

    # ---- reads ---------------------------------------------------------------

    def get(self, scope: str, key: str, default: Any = None) -> Any:
        """The value at (scope, key), or ``default``."""
        _text(scope, "scope")
        _text(key, "key")
        data = self._call(self._redis.hget, PREFIX + scope, key)
        return default if data is None else _codec.loads(data)

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
        hidden) and ``cluster``."""
        if self._is_closed:
            raise ClosedError("the store is closed")
        return {"adapter": "redis", "redis_url": _safe(self._url), "cluster": self._clustered}

    def items_page(self, scope: str, pos: int = 0, limit: int = 1000) -> tuple[builtins.list[tuple[str, bytes]], int]:
        """One HSCAN page of (key, JSON text) pairs, and where the next
        starts (-1 after the last page, whose successor is empty)."""
        _text(scope, "scope")
        while pos != -1:
            pos, pairs = self._call(self._redis.hscan, PREFIX + scope, pos, count=limit)
            pos = pos or -1
            out = [(k.decode("utf-8"), v) for k, v in pairs.items()]
            if out:
                return out, pos
        return [], -1

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

    def close(self) -> None:
        """Disconnect; later calls raise ClosedError. Idempotent."""
        if self._is_closed:
            return
        self._is_closed = True
        self._redis.close()

    def describe(self) -> str:
        """What the store is, for State's repr."""
        return f"redis at {_safe(self._url)}" + (", closed" if self._is_closed else "")


class RedisFeed:
    """Every client's changes (this process's too), from the channel every
    write of a ``share_events`` store publishes on, in the order the server
    applied them: local writes then queue no event of their own."""

    def __init__(self, storage: RedisStorage) -> None:
        self._storage = storage
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, emit: Emit | None) -> None:
        """Subscribe before returning, so no change made after the
        constructor returns is missed (None: triggers are off, no need)."""
        if emit is None:
            return
        st = self._storage
        pubsub = st._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(st._channel)
            # Wait for the confirmation: from then on the server sends us every message.
            deadline = time.monotonic() + 10
            while not pubsub.subscribed and time.monotonic() < deadline:
                pubsub.get_message(timeout=0.05)
        except st._redis_errors as e:
            pubsub.close()
            raise AdapterUnavailableError(f"cannot subscribe to {st._channel!r}: {e}") from None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_listen, args=(pubsub, self._stop, emit, st._redis_errors),
            name="pystate-redis-events", daemon=True,
        )
        self._thread.start()

    def own_emit(self, emit: Emit) -> None:
        return None  # the channel brings this process's own changes too

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def after_fork_in_child(self) -> None:
        pass  # the child has no subscriber thread; its writes still publish


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    p = urlparse(url)
    if p.password:
        netloc = p.netloc.replace(f":{p.password}@", ":***@")
        return p._replace(netloc=netloc).geturl()
    return url


_log = logging.getLogger("pystate.redis")


def _listen(pubsub: Any, stop: threading.Event, emit: Emit, errors: tuple[type[BaseException], ...]) -> None:
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
            emit(
                ev["t"], ev["s"], ev["k"],
                None if old is None else old.encode(), None if new is None else new.encode(),
            )
        except Exception:  # a foreign message on our channel
            _log.exception("pystate: ignored a malformed message on the event channel: %r", msg.get("data"))
    pubsub.close()
