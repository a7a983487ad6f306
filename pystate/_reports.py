"""What the C core's counters and reports say, as the dicts ``stats()``,
``check()`` and ``inspect()`` return: written once for both bindings.

Each binding reads its C structs its own way and hands them here as a
*field getter*, a callable from a field's name to its value (the Cython
binding passes a dict's ``__getitem__``, the cffi binding ``getattr`` on the
struct), so which fields are shown, under which names, and when a report
counts as clean are decided in this file only.

>>> counts = dict.fromkeys(COUNTERS + LOG_COUNTERS, 0)
>>> stats(counts.__getitem__)["keys"]
0
>>> found = dict.fromkeys(RECOVERY, 0)
>>> inspection(found.__getitem__, "", failed=False)["ok"]
True
"""

from __future__ import annotations

import struct
from typing import Any, Callable

__all__ = ["COUNTERS", "LOG_COUNTERS", "RECOVERY", "check", "failure", "inspection", "per_scope", "recovery", "stats"]

Field = Callable[[str], Any]

#: ps_stats fields every store reports.
COUNTERS = ("scopes", "keys", "key_bytes", "value_bytes", "dead_bytes", "heap_bytes")
#: ps_stats fields only a file-based store reports.
LOG_COUNTERS = ("log_bytes", "log_dead_bytes", "compactions", "sync_errors")
#: ps_report's counts, as ``stats()["recovery"]`` and ``inspect()`` show them.
RECOVERY = ("logs", "records", "torn_tails", "bytes_cut", "repaired", "records_lost", "logs_lost", "stray_files")

# ps_scope_stats packs, per scope: [u32 name length][UTF-8 name] then
# keys, live bytes, dead bytes, file bytes as four little-endian u64.
_U32 = struct.Struct("<I")
_SCOPE = struct.Struct("<QQQQ")


def recovery(field: Field) -> dict[str, int]:
    """The counts of a ps_report."""
    return {name: field(name) for name in RECOVERY}


def stats(counter: Field, *, path: str | None = None, sync: str = "", recovery: dict[str, int] | None = None,
          per_scope: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """``Store.stats()`` from a ps_stats; a file-based store (``path`` given)
    adds its sync mode, log counters, what opening found and figures per scope."""
    out: dict[str, Any] = {name: counter(name) for name in COUNTERS}
    if path is not None:
        out["path"] = path
        out["sync"] = sync
        out.update((name, counter(name)) for name in LOG_COUNTERS)
        out["recovery"] = recovery
        out["per_scope"] = per_scope
    return out


def inspection(field: Field, message: str, *, failed: bool) -> dict[str, Any]:
    """``inspect()`` from a ps_report; ``failed`` when the call returned
    PS_CORRUPT (damage opening would refuse without repair). Anything
    opening would fix, even a torn tail it cuts silently, is not ``ok``."""
    out: dict[str, Any] = recovery(field)
    out["problem"] = message if failed else None
    out["detail"] = message or None
    out["ok"] = not failed and not (out["torn_tails"] or out["repaired"] or out["stray_files"])
    return out


def check(field: Field, message: str, *, failed: bool) -> dict[str, Any]:
    """``Store.check()`` from a ps_report; ``failed`` when ps_check returned
    PS_CORRUPT."""
    return {"ok": not failed, "logs": field("logs"), "records": field("records"), "problem": message if failed else None}


def failure(err: Exception, message: str) -> Exception:
    """``err``, the exception of a failed open or inspect, with the C core's
    report line (what and where: file, offset) as its message when the
    report has one."""
    if message:
        err.message = message  # type: ignore[attr-defined]  # a StateError
        err.args = (message,)
    return err


def per_scope(data: bytes, count: int) -> dict[str, dict[str, int]]:
    """``stats()["per_scope"]`` from what ps_scope_stats wrote for ``count`` scopes."""
    per = {}
    p = 0
    for _ in range(count):
        (n,) = _U32.unpack_from(data, p)
        name = data[p + 4:p + 4 + n].decode("utf-8")
        keys, live, dead, size = _SCOPE.unpack_from(data, p + 4 + n)
        per[name] = {"keys": keys, "live_bytes": live, "dead_bytes": dead, "file_bytes": size}
        p += 4 + n + _SCOPE.size
    return per
