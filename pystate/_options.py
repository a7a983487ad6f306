"""The rules for a store's open options, written once for both bindings.

The Cython and the cffi ``Store`` each fill their C options struct with the
fields :func:`check_store_options` returns; neither checks an option itself, so an
option refused by one binding is refused by the other with the same
:class:`~pystate.errors.ConfigError`.

>>> check_store_options(None, "interval", 5000, False, False)
>>> check_store_options("data", "always", 200, False, True)["read_only"]
1
>>> try:
...     check_max_value_bytes(2**70)
... except ConfigError as e:
...     print(e.code, "|", e.message)
invalid_config | max_value_bytes: expected a positive integer up to 9223372036854775807 or None, got 1180591620717411303424
"""

from __future__ import annotations

import os
import sys
from typing import Any, Literal, TypedDict

from pystate.errors import ConfigError

__all__ = [
    "SYNC_NAMES", "check_max_value_bytes", "check_store_options", "check_testing_options", "path_bytes",
    "KvOptions", "RedisOptions", "BridgeOptions",
]

SyncMode = Literal["interval", "never", "always"]
QueuePolicy = Literal["block", "raise"]


# What each adapter takes besides ``path`` and ``adapter``, for type checkers
# (``State(...)`` and ``AsyncState(...)`` are typed with them).
class _DispatchOptions(TypedDict, total=False):
    max_value_bytes: int | None
    triggers_enabled: bool
    max_pending_events: int
    event_queue_full: QueuePolicy


class KvOptions(_DispatchOptions, total=False):
    """The kv adapter's options (see :class:`pystate.State`)."""

    sync: SyncMode
    save_interval_ms: int
    repair: bool
    read_only: bool
    share_events: bool


class RedisOptions(_DispatchOptions, total=False):
    """The redis adapter's options (see README, "The redis adapter")."""

    redis_url: str | None
    socket_timeout: float
    share_events: bool
    events_channel: str


class BridgeOptions(_DispatchOptions, total=False):
    """The bridge adapter's options (see README, "The bridge adapter")."""

    bridge_url: str | None
    token: str | None
    timeout: float


#: Knobs the tests use to reach rare paths; not options of the API.
TESTING_OPTIONS = frozenset({"_compact_hook", "_compact_min_dead", "_max_open_files"})


def check_testing_options(given: dict[str, Any]) -> None:
    """Refuse a keyword that is no option of the kv adapter (a typo such
    as ``synch``) with ConfigError, naming the options there are."""
    for name in given:
        if name not in TESTING_OPTIONS:
            shared = _DispatchOptions.__annotations__
            own = [k for k in KvOptions.__annotations__ if k not in shared]
            known = ", ".join(["path", "adapter", *own, *shared])
            raise ConfigError(f"{name}: not an option of the kv adapter; it takes {known}")

#: The ``sync`` modes, in the order error messages list them.
SYNC_NAMES = ("interval", "never", "always")

#: A value's length is a Py_ssize_t; a bigger limit could not be held.
MAX_VALUE_BYTES_LIMIT = sys.maxsize


def path_bytes(path: Any) -> bytes:
    """A store directory's path as the C core takes it."""
    try:
        bpath = os.fsencode(path)
    except TypeError:
        raise ConfigError(f"path: expected a directory path, got {path!r}") from None
    if not bpath or b"\0" in bpath:
        raise ConfigError(f"path: expected a directory path, got {path!r}")
    return bpath


def check_max_value_bytes(value: Any) -> None:
    """The value-size limit every adapter takes: None, or 1 to sys.maxsize."""
    if value is not None and (type(value) is not int or not 1 <= value <= MAX_VALUE_BYTES_LIMIT):
        raise ConfigError(f"max_value_bytes: expected a positive integer up to {MAX_VALUE_BYTES_LIMIT} or None, got {value!r}")


def check_store_options(
    path: Any, sync: Any, save_interval_ms: Any, repair: Any, read_only: Any,
    compact_min_dead: int = 0, max_open_files: int = 0,
) -> dict[str, Any] | None:
    """Refuse a bad open option of a kv store with ConfigError. Return None
    for an in-memory store, and for a file store the ps_options fields to
    open it with, by their C names: ``path`` as bytes, ``sync`` by its name
    (each binding has the C constants) and the rest as the integers C takes.
    (``max_value_bytes`` is every adapter's: :func:`check_max_value_bytes`.)
    The last two are testing knobs (:data:`TESTING_OPTIONS`)."""
    for name, flag in (("repair", repair), ("read_only", read_only)):
        if type(flag) is not bool:
            raise ConfigError(f"{name}: expected True or False, got {flag!r}")
    if path is None:
        if sync != "interval" or save_interval_ms != 5000 or repair or read_only:
            raise ConfigError(
                "sync, save_interval_ms, repair and read_only apply to file-based stores: give a path"
            )
        return None
    if sync not in SYNC_NAMES:
        raise ConfigError(f"sync: expected one of {', '.join(SYNC_NAMES)}, got {sync!r}")
    if type(save_interval_ms) is not int or not 100 <= save_interval_ms <= 3_600_000:
        raise ConfigError(f"save_interval_ms: expected an integer from 100 to 3600000, got {save_interval_ms!r}")
    return {
        "path": path_bytes(path),
        "sync": sync,
        "sync_interval_ms": save_interval_ms,
        "repair": 1 if repair else 0,
        "read_only": 1 if read_only else 0,
        "compact_min_dead": compact_min_dead,
        "max_open_files": max_open_files,
    }
