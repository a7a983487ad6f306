# cython: language_level=3, annotation_typing=False
"""The one write path: what happens between ``State.set``/``delete``/
``update`` and the storage, for every adapter and both bindings.

A storage (:class:`pystate.storage.Storage`) only stores JSON texts. Here,
once for all of them:

- a value is encoded (and refused if it is not JSON) and held to
  ``max_value_bytes``;
- the trigger gate: a write to a key no trigger watches goes straight to
  the storage. A watched write first waits for room in the event queue
  (back pressure, before anything changes), then holds its key's stripe
  lock from the write until its event is queued, so the events of one key
  reach the queue in write order, and ``seal()`` can tell when every
  acknowledged write has queued its event;
- ``update`` reads the text, runs the op engine on it, and stores the
  result by compare-and-set on the exact text it read, starting over if
  another writer (thread or process) got in between. After a first
  conflict the updaters of a key take turns, so that optimistic retries
  cannot keep spoiling each other. A storage that applies ops itself (the
  bridge) is asked to, instead;
- the event of each write, ``(event_type, scope, key, old_json, new_json)``.

>>> from pystate._backend import core
>>> w = Writes(core.Store())
>>> w.set("s", "k", {"n": 1}) is None
True
>>> w.update("s", "k", [{"type": "increment", "path": "n", "by": 1}])
UpdateResult(old_value={'n': 1}, new_value={'n': 2}, errors=[])
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pystate.errors import ClosedError, ValueTooLargeError
from pystate.storage import check_text

try:
    import cython
except ImportError:  # plain Python without Cython installed (PyPy)
    import types

    cython = types.SimpleNamespace(compiled=False, cclass=lambda cls: cls, freelist=lambda n: lambda cls: cls)

if cython.compiled:
    # C to C: the codec, the op engine, and (KvStore, cimported in
    # writes.pxd) the Cython binding's raw calls.
    from cython.cimports.pystate._codec import copy_containers, decode, encode, encode_trusted
    from cython.cimports.pystate._ops import apply_parsed, parse_ops
else:
    from pystate._codec import copy_containers, decode, encode, encode_trusted
    from pystate._ops import apply_parsed, parse_ops

    KvStore: Any = None  # (compiled only)

if TYPE_CHECKING:
    from pystate.storage import CasStorage, OpsStorage

__all__ = ["Writes", "UpdateResult", "EV_CREATED", "EV_UPDATED", "EV_DELETED", "N_STRIPES"]

#: The event types of the engine's state triggers.
EV_CREATED = "state:created"
EV_UPDATED = "state:updated"
EV_DELETED = "state:deleted"

#: Stripe locks per store: writers of different keys rarely share one.
N_STRIPES = 64


# Tests set this to run code between an update's read and its write, to
# prove that a concurrent writer makes the update start over.
_race_hook: Callable[[], None] | None = None


def _set_race_hook(hook: Callable[[], None] | None) -> None:
    """Testing aid: call ``hook()`` inside every update, after the read and
    before the compare-and-set. None removes it."""
    global _race_hook
    _race_hook = hook


def _closed() -> ClosedError:
    return ClosedError("the store is closed")


@cython.freelist(16)
@cython.cclass
class UpdateResult:
    """What ``update`` returns: the value before and after, and the errors
    of the ops that could not apply (empty when all applied).

    Unpacks like a tuple: ``old, new, errors = st.update(...)``.
    ``old_value`` and ``new_value`` share no dict or list with each other
    or with the store.

    >>> r = UpdateResult({"n": 1}, {"n": 2})
    >>> old, new, errors = r
    >>> r.to_response()
    {'old_value': {'n': 1}, 'new_value': {'n': 2}}
    """

    __slots__ = ("_old", "_new", "_errors")

    def __init__(self, old_value: Any = None, new_value: Any = None, errors: Any = None) -> None:
        self._old = old_value
        self._new = new_value
        self._errors: list[dict[str, Any]] = [] if errors is None else list(errors)

    @property
    def old_value(self) -> Any:
        return self._old

    @property
    def new_value(self) -> Any:
        return self._new

    @property
    def errors(self) -> list[dict[str, Any]]:
        return self._errors

    def to_response(self) -> dict[str, Any]:
        """The engine's ``state::update`` response: ``errors`` only when
        there are any."""
        r = {"old_value": self._old, "new_value": self._new}
        if self._errors:
            r["errors"] = self._errors
        return r

    def __iter__(self) -> Iterator[Any]:
        return iter((self._old, self._new, self._errors))

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: Any) -> Any:
        return (self._old, self._new, self._errors)[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, UpdateResult):
            other = tuple(other)
        if isinstance(other, tuple):
            return (self._old, self._new, self._errors) == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"UpdateResult(old_value={self._old!r}, new_value={self._new!r}, errors={self._errors!r})"


def _result(old: Any, new: Any, errors: list[dict[str, Any]]) -> UpdateResult:
    r = UpdateResult.__new__(UpdateResult)
    r._old = old
    r._new = new
    r._errors = errors
    return r


def _exact(data: bytes) -> bytes:
    # An exact-size copy for an event that may wait in the queue: orjson's
    # own result keeps a 4 KiB block.
    return bytes(memoryview(data)) if len(data) < 2048 else data


class Writes:
    """The write path over one storage; :class:`pystate.State` holds one.

    ``max_value_bytes`` refuses a ``set`` whose JSON text is longer (None:
    no limit). The trigger gate is off until :meth:`set_watch` installs it.
    """

    __slots__ = ("storage", "max_value_bytes", "_limit", "_sealed", "_emit", "_admit", "_pending", "_bound",
                 "_all", "_scopes", "_keys", "_pairs", "_stripes", "_turns", "_put", "_put_if", "_remove",
                 "_get_seen", "_put_seen", "_native", "_kv")

    def __init__(self, storage: CasStorage | OpsStorage, max_value_bytes: int | None = None) -> None:
        self.storage: Any = storage
        self.max_value_bytes = max_value_bytes
        self._limit = -1 if max_value_bytes is None else max_value_bytes
        self._sealed = False
        self._emit: Callable[..., None] | None = None
        self._admit: Callable[[], None] | None = None
        self._pending: Any = ()
        self._bound = 0
        self._all = False
        self._scopes: set[str] = set()
        self._keys: set[str] = set()
        self._pairs: dict[str, set[str]] = {}
        self._stripes = [threading.Lock() for _ in range(N_STRIPES)]
        self._turns = [threading.Lock() for _ in range(N_STRIPES)]
        # Bound once: these are the hot path's calls.
        self._put = storage.put
        self._remove = storage.remove
        self._native = storage.applies_ops
        self._kv = None
        if cython.compiled and type(storage) is KvStore:
            self._kv = storage
        if not self._native:
            self._put_if = self.storage.put_if
            self._get_seen = self.storage.get_seen
            self._put_seen = self.storage.put_seen

    # ---- the trigger gate ----------------------------------------------

    def set_watch(
        self,
        emit: Callable[[str, str, str, bytes | None, bytes | None], None] | None,
        admit: Callable[[], None] | None = None,
        pending: Any = None,
        bound: int = 0,
        watch_all: bool = False,
        scopes: set[str] | None = None,
        keys: set[str] | None = None,
        pairs: dict[str, set[str]] | None = None,
    ) -> None:
        """Install (or, with ``emit=None``, remove) the trigger gate.

        A write to (scope, key) is watched when ``watch_all`` is true, or
        ``scope`` is in ``scopes``, or ``key`` is in ``keys``, or ``key`` is
        in ``pairs[scope]``; the containers are kept by reference, so their
        owner updates them in place. A watched write first calls
        ``admit()`` if ``len(pending) >= bound``, then writes, then calls
        ``emit(event_type, scope, key, old_json, new_json)`` (JSON texts as
        bytes, None for no value) before any later write of the same key
        can emit. ``emit`` must not raise.
        """
        self._emit = None  # off while the rest changes
        self._admit = admit
        self._pending = pending if pending is not None else ()
        self._bound = bound
        self._all = bool(watch_all)
        self._scopes = scopes if scopes is not None else set()
        self._keys = keys if keys is not None else set()
        self._pairs = pairs if pairs is not None else {}
        self._emit = emit

    def _watched(self, scope: Any, key: Any) -> bool:
        if type(scope) is not str or type(key) is not str:
            check_text(scope, "scope")  # an unhashable name fails as the storage would fail it
            check_text(key, "key")
        if self._all or scope in self._scopes or key in self._keys:
            return True
        if self._pairs:
            keys = self._pairs.get(scope)
            return keys is not None and key in keys
        return False

    def _enter(self, scope: str, key: str) -> threading.Lock:
        """Admission, then the stripe lock of (scope, key), held by the
        caller until its event is queued."""
        if self._admit is not None and len(self._pending) >= self._bound:
            self._admit()
        lock = self._stripes[(hash(scope) * 1000003 ^ hash(key)) % N_STRIPES]
        lock.acquire()
        if self._sealed:
            lock.release()
            raise _closed()
        return lock

    def seal(self) -> None:
        """Refuse writes from now on (ClosedError), and return once every
        watched write already past that check has queued its event: the
        first step of closing, so that draining the queue drains
        everything. Reads go on."""
        self._sealed = True
        for lock in self._stripes:  # a watched write holds one from check to emit
            with lock:
                pass

    @property
    def sealed(self) -> bool:
        """True once :meth:`seal` was called."""
        return self._sealed

    def after_fork_in_child(self) -> None:
        """A child of fork(): the parent's other threads are gone, with the
        stripes they held; fresh locks (the old ones are left as they are)."""
        self._stripes = [threading.Lock() for _ in range(N_STRIPES)]
        self._turns = [threading.Lock() for _ in range(N_STRIPES)]

    # ---- the writes ----------------------------------------------------

    def set(self, scope: str, key: str, value: Any) -> Any:
        """Store ``value`` at (scope, key); return the previous value or None."""
        data = encode(value)
        if self._limit >= 0 and len(data) > self._limit:
            raise ValueTooLargeError(
                f"value of {len(data)} bytes exceeds the configured max_value_bytes limit of {self._limit}")
        if self._emit is None or not self._watched(scope, key):
            if self._sealed:
                raise _closed()
            if self._kv is not None:
                old = self._kv.put(scope, key, data)
            else:
                old = self._put(scope, key, data)
            return None if old is None else decode(old)
        lock = self._enter(scope, key)
        try:
            old = self._put(scope, key, data)
            emit = self._emit
            if emit is not None:
                emit(EV_CREATED if old is None else EV_UPDATED, scope, key, old, _exact(data))
        finally:
            lock.release()
        return None if old is None else decode(old)

    def delete(self, scope: str, key: str) -> Any:
        """Remove (scope, key); return the removed value or None."""
        if self._emit is None or not self._watched(scope, key):
            if self._sealed:
                raise _closed()
            if self._kv is not None:
                old = self._kv.remove(scope, key)
            else:
                old = self._remove(scope, key)
            return None if old is None else decode(old)
        lock = self._enter(scope, key)
        try:
            old = self._remove(scope, key)
            emit = self._emit
            if emit is not None:
                # As the engine does, deleting a missing key is an event too.
                emit(EV_DELETED, scope, key, old, None)
        finally:
            lock.release()
        return None if old is None else decode(old)

    def update(self, scope: str, key: str, ops: Any) -> UpdateResult:
        """Apply ``ops`` to the value at (scope, key) atomically; see
        :meth:`pystate.State.update`."""
        if self._emit is None or not self._watched(scope, key):
            if self._sealed:
                raise _closed()
            return self._update(scope, key, ops, False)
        lock = self._enter(scope, key)
        try:
            return self._update(scope, key, ops, True)
        finally:
            lock.release()

    def _update(self, scope: str, key: str, ops: Any, watched: bool) -> UpdateResult:
        if self._native:
            return self._update_native(scope, key, ops, watched)
        get_seen, put_seen, put_if = self._get_seen, self._put_seen, self._put_if
        kv = self._kv
        turn = None
        seen = 0   # the read's token for put_seen, from kv (a C integer)
        token = 0  # the same, from any other storage
        if kv is not None:
            # The key's index slot is on its way from memory while the ops
            # are parsed (the miss was 7% of an in-memory update). _prefetch
            # checks the names first, as the read does without it, and
            # keeps their UTF-8 for every read of this update.
            kv._prefetch(scope, key, cython.address(names))
            parsed = parse_ops(ops)
            old_data = kv._read_seen(cython.address(names), cython.address(seen))
        else:
            old_data, token = get_seen(scope, key)
            parsed = parse_ops(ops)
        try:
            while True:
                # The text is decoded once; the op engine works on a copy of
                # its containers, so old and new share none (a copy costs
                # about a quarter of a second decode).
                errors = []
                if old_data is None:
                    old = None
                    new = apply_parsed(None, True, parsed, errors)
                else:
                    old = decode(old_data)
                    new = apply_parsed(copy_containers(old), False, parsed, errors)
                new_data = encode_trusted(new)
                if _race_hook is not None:
                    _race_hook()
                if self._sealed:
                    raise _closed()
                # put_seen when nothing came between the read and this write
                # (nearly always), without the names or the compare.
                if kv is not None:
                    if (seen != 0 and kv.put_seen(seen, new_data)) or kv.put_if(scope, key, new_data, old_data):
                        break
                elif (token and put_seen(token, new_data)) or put_if(scope, key, new_data, old_data):
                    break
                if turn is None:
                    # A contended key: from the first conflict on, its
                    # updaters retry one at a time (with cffi, whose calls
                    # let other threads run, 4 threads x 500 appends to one
                    # key took 7.7 s without this, 4.6 s with it).
                    turn = self._turns[(hash(scope) * 1000003 ^ hash(key)) % N_STRIPES]
                    turn.acquire()
                # Again, with the ops parsed afresh: their values went into
                # the value just dropped.
                if kv is not None:
                    old_data = kv._read_seen(cython.address(names), cython.address(seen))
                else:
                    old_data, token = get_seen(scope, key)
                parsed = parse_ops(ops)
        finally:
            if turn is not None:
                turn.release()
        if watched:
            emit = self._emit
            if emit is not None:
                emit(EV_CREATED if old_data is None else EV_UPDATED, scope, key, old_data, _exact(new_data))
        return _result(old, new, errors)

    def _update_native(self, scope: str, key: str, ops: Any, watched: bool) -> UpdateResult:
        # Checked here, so a malformed request fails with the kv adapter's
        # error before anything is sent.
        parse_ops(ops)
        old, new, errors = self.storage.apply_ops(scope, key, ops)
        if watched:
            emit = self._emit
            if emit is not None:
                emit(EV_CREATED if old is None else EV_UPDATED, scope, key,
                     None if old is None else encode_trusted(old), encode_trusted(new))
        return UpdateResult(old, new, errors)
