"""The ``kv`` adapter: pystate's compiled core, in memory or on file.

The storage is the binding's ``Store`` itself (Cython, or cffi on PyPy:
:mod:`pystate._backend`), so a read is one compiled call. With
``share_events=True`` a :class:`KvFeed` also hands this process the
changes other processes make to the same directory.

>>> opened = open_storage(None, {})
>>> opened.storage.name, opened.feed is None
('kv', True)
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import weakref
from typing import Any

from pystate._backend import core as _core
from pystate._options import check_testing_options
from pystate.errors import ClosedError, ConfigError, StateError
from pystate.storage import Emit, Opened

__all__ = ["open_storage", "KvFeed", "SHARE_EVENTS_POLL_S"]

log = logging.getLogger("pystate")

#: How often a share_events store looks for other processes' writes.
SHARE_EVENTS_POLL_S = 0.005

_U32 = struct.Struct("<I")


def open_storage(path: Any, options: dict[str, Any]) -> Opened:
    """Open a kv store: in memory when ``path`` is None, else the store
    directory ``path`` (created, with its parents, unless read-only).

    ``options``: ``sync``, ``save_interval_ms``, ``repair``, ``read_only``,
    ``share_events`` (see :class:`pystate.State`).
    """
    options = dict(options)
    sync = options.pop("sync", "interval")
    save_interval_ms = options.pop("save_interval_ms", 5000)
    repair = options.pop("repair", False)
    read_only = options.pop("read_only", False)
    share_events = options.pop("share_events", False)
    check_testing_options(options)
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
    store = _core.Store(path, sync=sync, save_interval_ms=save_interval_ms, repair=repair,
                        read_only=read_only, **options)
    feed = None
    if share_events:
        store._changes()  # from now on the C core keeps other processes' changes
        feed = KvFeed(store)
    return Opened(store, feed)


class KvFeed:
    """Other processes' writes to a kv store's directory, as events, in the
    order their logs hold them: a thread looks every 5 ms, and a watched
    write of this process first queues the changes it followed (the C core
    applies them before a write), so per-key order holds across processes.
    """

    def __init__(self, store: Any) -> None:
        self._store = weakref.ref(store)  # a store dropped without close() is not kept alive
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._emit: Emit | None = None

    def start(self, emit: Emit | None) -> None:
        self._emit = emit
        self._stop = threading.Event()
        stop, me = self._stop, weakref.ref(self)

        def run() -> None:
            while not stop.wait(SHARE_EVENTS_POLL_S):
                feed = me()
                if feed is None:
                    return
                try:
                    feed.deliver()
                except ClosedError:
                    return
                except StateError as e:  # a damaged log, a full disk: said, then tried again
                    log.warning("share_events: %s", e)
                del feed

        self._thread = threading.Thread(target=run, name="pystate-share-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def deliver(self) -> None:
        """Queue the events of what other processes wrote since the last look."""
        with self._lock:
            self._deliver_locked()

    def _deliver_locked(self) -> None:
        store, emit = self._store(), self._emit
        if store is None:
            return
        data, count = store._changes()
        if emit is None:  # triggers are off: the changes are only drained
            return
        unpack, p = _U32.unpack_from, 0
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

    def own_emit(self, emit: Emit) -> Emit:
        lock, drain = self._lock, self._deliver_locked

        def ordered(event_type: str, scope: str, key: str, old: Any, new: Any) -> None:
            with lock:
                try:
                    drain()
                except ClosedError:
                    pass  # closing meanwhile: the changes die with the store
                except StateError as e:  # a damaged log: never this write's failure
                    log.warning("share_events: %s", e)
                emit(event_type, scope, key, old, new)

        return ordered

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._thread is not None and not self._stop.is_set():
            self.start(self._emit)  # the parent's poller did not come along

