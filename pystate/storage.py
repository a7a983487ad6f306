"""What a storage adapter is: the small protocol :class:`pystate.State`
holds its data through, and how an adapter is found by name.

A storage stores JSON texts by (scope, key) and reads them back; it knows
nothing of triggers, ops or value rules (those are :mod:`pystate.writes`'
and :mod:`pystate.state`'s, written once for every adapter). Three
implement it: the kv binding (``pystate._backend.core.Store``, the compiled
core in memory or on file), :mod:`pystate.adapters.redis_adapter` and
:mod:`pystate.adapters.bridge_adapter`. Each adapter module has an
``open_storage(path, options)`` that checks its options and returns an
:class:`Opened`.

>>> opened = open_storage("kv", None, {})
>>> st = opened.storage
>>> st.put("s", "k", b"1"), st.get("s", "k")
(None, 1)
"""

from __future__ import annotations

import builtins
import importlib
from typing import Any, Callable, Iterator, NamedTuple, Protocol

from pystate.errors import ConfigError, bad_name, not_a_pair

__all__ = ["Storage", "CasStorage", "OpsStorage", "EventFeed", "Opened", "ADAPTERS", "open_storage", "check_text", "check_pair",
           "refuse_kv_options", "paged_items"]

#: emit(event_type, scope, key, old_json, new_json)
Emit = Callable[[str, str, str, "bytes | None", "bytes | None"], None]


class Storage(Protocol):
    """The calls :class:`pystate.State` makes of its storage.

    Writes take and give JSON text (``bytes``): the caller made the text
    and checked it is JSON. Reads decode. Every call raises
    :class:`pystate.ClosedError` after :meth:`close`. An update needs one
    more thing, either compare-and-set (:class:`CasStorage`) or a remote
    side that applies ops itself (:class:`OpsStorage`).
    """

    @property
    def name(self) -> str:
        """The adapter's name: "kv", "redis" or "bridge"."""

    @property
    def ordered(self) -> bool:
        """``list`` gives a scope's values in key insertion order."""

    @property
    def durable(self) -> bool:
        """An acknowledged write survives a crash of this process."""

    @property
    def local(self) -> bool:
        """Calls never wait on another machine (they may still wait on a disk)."""

    @property
    def applies_ops(self) -> bool:
        """True for an :class:`OpsStorage`, False for a :class:`CasStorage`."""

    @property
    def path(self) -> str | None:
        """The file store's directory, or None."""

    @property
    def sync(self) -> str | None:
        """The file store's sync mode, or None."""

    @property
    def read_only(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def put(self, scope: str, key: str, data: bytes) -> bytes | None:
        """Store ``data``; return the text it replaced, or None."""

    def remove(self, scope: str, key: str) -> bytes | None:
        """Remove the key; return its text, or None when there was none."""

    def get(self, scope: str, key: str, default: Any = None) -> Any:
        """The value at (scope, key), or ``default``."""

    def __contains__(self, item: object) -> bool: ...

    def keys(self, scope: str) -> builtins.list[str]: ...

    def items(self, scope: str, page: int = 1000) -> Iterator[tuple[str, Any]]: ...

    def items_page(self, scope: str, pos: int = 0, limit: int = 1000) -> tuple[builtins.list[tuple[str, bytes]], int]:
        """One page of (key, text) pairs and where the next starts (0: done,
        with an empty page)."""

    def list(self, scope: str) -> builtins.list[Any]: ...

    def list_groups(self) -> builtins.list[str]: ...

    def stats(self) -> dict[str, Any]: ...

    def check(self) -> dict[str, Any]: ...

    def compact(self, scope: str | None = None) -> None: ...

    def flush(self) -> None: ...

    def describe(self) -> str:
        """What ``repr(State)`` shows of it (no secrets)."""

    def close(self) -> None: ...


class CasStorage(Storage, Protocol):
    """A storage the write path updates by compare-and-set (kv, redis)."""

    def put_if(self, scope: str, key: str, data: bytes, expect: bytes | None) -> bool:
        """Store ``data`` only if the key holds exactly ``expect`` (None: does
        not exist); whether it did."""

    def get_seen(self, scope: str, key: str) -> tuple[bytes | None, int]:
        """(the text at (scope, key) or None, a token for put_seen: 0 for
        none)."""

    def put_seen(self, seen: int, data: bytes) -> bool:
        """put_if of what the read that gave ``seen`` read, when the storage
        can tell that nothing changed the key since: whether it stored
        ``data``. False when it cannot tell; the caller then calls put_if."""


class OpsStorage(Storage, Protocol):
    """A storage whose other side applies update ops atomically (bridge)."""

    def apply_ops(self, scope: str, key: str, ops: Any) -> tuple[Any, Any, builtins.list[dict[str, Any]]]:
        """Run an update: (old, new, errors)."""


class EventFeed(Protocol):
    """Events of writes other processes (or clients) make, where a storage
    can tell them (``share_events=True``)."""

    def start(self, emit: Emit | None) -> None:
        """Deliver every such change to ``emit`` from now on (None: start
        following, without events: triggers are off)."""

    def own_emit(self, emit: Emit) -> Emit | None:
        """How this process's watched writes queue their events: ``emit``
        wrapped (to keep order with the feed), or None when the feed
        delivers them too."""

    def stop(self) -> None: ...

    def after_fork_in_child(self) -> None: ...


class Opened(NamedTuple):
    """What an adapter's ``open_storage`` returns."""

    storage: CasStorage | OpsStorage
    #: Other writers' events, with share_events; else None.
    feed: EventFeed | None = None


#: The adapters, by name: the module whose ``open_storage`` opens one.
ADAPTERS = {
    "kv": "pystate.adapters.kv",
    "redis": "pystate.adapters.redis_adapter",
    "bridge": "pystate.adapters.bridge_adapter",
}


def open_storage(adapter: Any, path: Any, options: dict[str, Any]) -> Opened:
    """Open the storage ``adapter`` names with its own ``options``.

    Raises:
        ConfigError: an unknown adapter, or an option it does not take.
    """
    module = ADAPTERS.get(adapter) if isinstance(adapter, str) else None
    if module is None:
        raise ConfigError(f"adapter: expected one of {', '.join(ADAPTERS)}, got {adapter!r}")
    opened: Opened = importlib.import_module(module).open_storage(path, options)
    return opened


def refuse_kv_options(adapter: str, takes: str, path: Any, options: dict[str, Any]) -> None:
    """What an adapter other than kv says of the options left over: that
    they (and a ``path``) are the kv adapter's, and what it takes instead."""
    if path is not None or options:
        given = (["path"] if path is not None else []) + sorted(options)
        raise ConfigError(f"{', '.join(given)}: option(s) of the kv adapter; the {adapter} adapter takes {takes}")


def check_text(value: Any, what: str) -> str:
    """A scope or key as every storage accepts it: a str that is valid
    Unicode (the compiled store refuses lone surrogates; so must the rest).

    >>> check_text(1, "scope")
    Traceback (most recent call last):
    ...
    pystate.errors.PayloadError: deserialization_error: scope: expected a string, got int
    """
    if not isinstance(value, str):
        raise bad_name(what, value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_name(what, value) from None
    return value


def paged_items(items_page: Callable[[str, int, int], tuple[builtins.list[tuple[str, bytes]], int]],
                decode: Callable[[bytes], Any], scope: str, page: int) -> Iterator[tuple[str, Any]]:
    """``items(scope, page)`` of a storage that has ``items_page``: each
    ``(key, value)``, asking for ``page`` pairs at a time, so a big scope is
    never all in memory.

    >>> pages = {0: ([("a", b"1")], 1), 1: ([("b", b"2")], 2), 2: ([], 0)}
    >>> list(paged_items(lambda scope, pos, n: pages[pos], int, "s", 1))
    [('a', 1), ('b', 2)]
    """
    pos = 0
    while True:
        pairs, pos = items_page(scope, pos, page)
        if not pairs:
            return
        for key, raw in pairs:
            yield key, decode(raw)


def check_pair(item: Any) -> tuple[str, str]:
    """The ``(scope, key)`` of ``(scope, key) in st``, checked as the kv
    store checks it."""
    if type(item) is not tuple or len(item) != 2:
        raise not_a_pair(item)
    return check_text(item[0], "scope"), check_text(item[1], "key")
