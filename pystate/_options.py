"""The rules for a store's open options, written once for both bindings.

The Cython and the cffi ``Store`` each fill their C options struct from what
:func:`check_store_options` accepted; neither checks an option itself, so an
option refused by one binding is refused by the other with the same
:class:`~pystate.errors.ConfigError`.

>>> check_store_options(None, "interval", 5000, False, False, None)
>>> check_store_options("data", "always", 200, False, False, 1024)
b'data'
>>> try:
...     check_store_options(None, "interval", 5000, False, False, 2**70)
... except ConfigError as e:
...     print(e.code, "|", e.message)
invalid_config | max_value_bytes: expected a positive integer up to 9223372036854775807 or None, got 1180591620717411303424
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pystate.errors import ConfigError

__all__ = ["SYNC_NAMES", "check_max_value_bytes", "check_store_options", "path_bytes"]

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
    path: Any, sync: Any, save_interval_ms: Any, repair: Any, read_only: Any, max_value_bytes: Any
) -> bytes | None:
    """Refuse a bad open option with ConfigError; return the path as bytes
    (None for an in-memory store)."""
    check_max_value_bytes(max_value_bytes)
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
    return path_bytes(path)
