# cython: language_level=3, annotation_typing=False
"""cffi binding of the C core: the same ``Store`` as the Cython binding
(``pystate/_core.pyx``), written in Python over the compiled module
``pystate._cffi._native`` (cffi API mode), so it runs on PyPy as well
(as plain Python there; CPython imports it compiled by Cython).

The store is reached through ps_guard.h rather than pystate.h directly:
cffi releases the GIL around every C call, so a thread may be inside the
store while another closes it; the guard counts calls in and out and makes
close() wait for them, and a call that comes too late gets PSG_CLOSED.
Values come back in malloc'd buffers (psg_buf) instead of through a Python
callback per value.

>>> from pystate._cffi.core import Store
>>> st = Store()
>>> st.put("s", "k", b'{"n":1}') is None
True
>>> st.get("s", "k"), st.get_seen("s", "k")[0]
({'n': 1}, b'{"n":1}')
"""

from __future__ import annotations

import builtins
import os
import struct
import threading
import warnings
from functools import partial
from typing import Any, Iterator

from pystate import _reports
from pystate._cffi._native import ffi, lib
from pystate._codec import decode

try:
    import cython
except ImportError:  # plain Python without Cython installed (PyPy)
    import types

    cython = types.SimpleNamespace(compiled=False)

if cython.compiled:
    # Direct C calls where the plain-Python spelling is a method call or
    # an attribute lookup: a call into C via cffi costs little enough for
    # these to matter (core.pxd declares the helpers that use them).
    from cython.cimports.cpython.pythread import PyThread_get_thread_ident
    from cython.cimports.cpython.unicode import PyUnicode_AsUTF8String
from pystate._options import check_store_options, path_bytes
from pystate.errors import ClosedError, RecoveryWarning, bad_name, error_for_rc, not_a_pair, recovery_message
from pystate.storage import paged_items

__all__ = ["Store", "RC_CODES", "RC_END", "SYNC_MODES", "strerror", "version",
           "inspect"]

#: Names and values of the C core's status codes, from the header itself.
RC_CODES = {
    "PS_OK": lib.PS_OK,
    "PS_NOTFOUND": lib.PS_NOTFOUND,
    "PS_CONFLICT": lib.PS_CONFLICT,
    "PS_TOOBIG": lib.PS_TOOBIG,
    "PS_CORRUPT": lib.PS_CORRUPT,
    "PS_LOCKED": lib.PS_LOCKED,
    "PS_BADVERSION": lib.PS_BADVERSION,
    "PS_NOTSTORE": lib.PS_NOTSTORE,
    "PS_READONLY": lib.PS_READONLY,
    "PS_RANGE": lib.PS_RANGE,
}
#: The sync modes of a file-based store, by name.
SYNC_MODES = {"interval": lib.PS_SYNC_INTERVAL, "never": lib.PS_SYNC_NEVER,
              "always": lib.PS_SYNC_ALWAYS}
#: Hook points of a compaction, by name (testing aid).
COMPACT_HOOK_POINTS = {
    lib.PS_HOOK_COMPACT_WRITTEN: "written",
    lib.PS_HOOK_COMPACT_SYNCED: "synced",
    lib.PS_HOOK_COMPACT_RENAMED: "renamed",
    lib.PS_HOOK_COMPACT_DONE: "done",
}
#: One past the last status code (the header's sentinel).
RC_END = lib.PS_RC_END

_NOTFOUND = lib.PS_NOTFOUND
_CONFLICT = lib.PS_CONFLICT
_CORRUPT = lib.PS_CORRUPT
_CLOSED_RC = lib.PSG_CLOSED
_NULL = ffi.NULL
_new = ffi.new
_unpack = ffi.unpack
# The update loop's two calls, bound once (a lookup on lib is not free).
_psg_get_inline = lib.psg_get_inline
_psg_put_if = lib.psg_put_if
_psg_put_seen = lib.psg_put_seen

# Bytes per array handed over by list() (see _core.pyx).
LIST_BATCH = 32 * 1024

_U32 = struct.Struct("<I")


def strerror(rc: int) -> str:
    """The C core's description of a return code."""
    return ffi.string(lib.ps_strerror(rc)).decode("utf-8", "replace")


def version() -> tuple:
    """(major, minor, patch) of the linked C library."""
    v = _new("int[3]")
    lib.ps_version(v, v + 1, v + 2)
    return (v[0], v[1], v[2])


_major, _minor, _patch = version()
if (_major, _minor) != (lib.PS_VERSION_MAJOR, lib.PS_VERSION_MINOR):
    raise ImportError(
        f"pystate's C core is {_major}.{_minor}.{_patch}, but the binding was "
        f"compiled against {lib.PS_VERSION_MAJOR}.{lib.PS_VERSION_MINOR}")

# A handle that is always closed: what a Store points at before it opens,
# so every call on it reports PSG_CLOSED instead of touching NULL.
_closed_handle = _new("psg **")
_rc = lib.psg_open(_closed_handle, _NULL, _NULL)
if _rc:
    raise ImportError(f"pystate's C core cannot open a store: {strerror(_rc)}")
_CLOSED = _closed_handle[0]
lib.psg_close(_CLOSED)

@ffi.def_extern()
def pystate_compact_hook(ctx: Any, point: int) -> None:
    # Testing aid only: C calls this with the store locked.
    try:
        ffi.from_handle(ctx)(COMPACT_HOOK_POINTS.get(point, point))
    except BaseException:
        pass


# Code -> name, for the one error table (pystate.errors.RC_ERRORS).
_RC_NAMES = {v: k for k, v in RC_CODES.items()}
_RC_NAMES[_CLOSED_RC] = "PSG_CLOSED"


def _error(rc: int, what: str) -> Exception:
    return error_for_rc(rc, _RC_NAMES.get(rc), what, strerror(rc))


def _message(rep: Any) -> str:
    return ffi.string(rep.message).decode("utf-8", "replace")


# Each thread's buffers, reused by every call it makes (their memory too):
# a call fills them and the value is copied out before any other code
# runs. cffi's ffi.new, or a free per call, would cost more than the rest
# of a small get. A thread's state is (psg_buf, psg_inline, the inline
# length as a size_t *, the inline struct as a cffi buffer): reads go
# through the inline struct, whose value a slice of the buffer copies out,
# because reading a struct field by name costs a cffi attribute lookup.
_tls = threading.local()
# A thread keeps at most this much buffer between calls.
_KEEP = 64 * 1024
_INLINE = lib.PSG_INLINE
_DATA_AT = ffi.offsetof("psg_inline", "data")

# Compiled, the state the last caller used, as (thread ident, state),
# replaced whole: found there without the threading.local lookup, which
# costs more than the rest of getting it. Threads alive at once have
# distinct idents, and a finished thread's buffers are free for whichever
# thread reuses its ident. In a list, not a rebound global (see
# _last_names).
_last_buf: list = [(0, None)]


def _thread_buffer() -> tuple:
    """This thread's (psg_buf, psg_inline, its length, its bytes, its seen)."""
    if cython.compiled:
        ident = PyThread_get_thread_ident()
        m = _last_buf[0]
        if cython.cast(cython.ulong, m[0]) == ident:
            return m[1]
    try:
        t = _tls.state
    except AttributeError:
        inline = _new("psg_inline *")
        t = _tls.state = (ffi.gc(_new("psg_buf *"), lib.psg_buf_free), inline,
                          ffi.addressof(inline, "len"), ffi.buffer(inline),
                          ffi.addressof(inline, "seen"))
    if cython.compiled:
        _last_buf[0] = (ident, t)
    return t


def _read(g: Any, s: bytes, k: bytes, what: str, t: tuple) -> bytes | None:
    """The JSON text at (s, k), UTF-8 names, or None (psg_get_inline into
    ``t``, this thread's _thread_buffer())."""
    rc = _psg_get_inline(g, s, len(s), k, len(k), t[1], t[0])
    if rc:
        if rc == _NOTFOUND:
            return None
        raise _error(rc, what)
    n = t[2][0]
    if n <= _INLINE:
        return t[3][_DATA_AT:_DATA_AT + n]
    return _take(t[0])


def _take(buf: Any) -> bytes | None:
    """The bytes a call delivered into a thread's ``buf`` (None when none)."""
    if not buf.filled:
        return None
    n = buf.len
    data = _unpack(buf.data, n)
    if n > _KEEP:
        lib.psg_buf_free(buf)
    return data


def _take_once(buf: Any) -> bytes | None:
    """Like _take, for a buf of one call: its memory is freed."""
    try:
        return _unpack(buf.data, buf.len) if buf.filled else None
    finally:
        lib.psg_buf_free(buf)


def _text(s: Any, what: str) -> bytes:
    """UTF-8 of a scope or key."""
    if type(s) is not str:
        if not isinstance(s, str):
            raise bad_name(what, s)
        s = str.__str__(s)
    try:
        return s.encode()
    except UnicodeEncodeError:
        raise bad_name(what, s) from None


# The last (scope, key) encoded, with its UTF-8: an update reads, then
# writes, the same two str objects, and encoding them again would cost a
# tenth of a small update. Only exact str objects are kept (a str is
# immutable, and the tuple keeps them alive, so `is` cannot be fooled by a
# reused id); the tuple is replaced whole, so threads see a consistent one.
# It lives in a list, not a module global: rebinding a global would
# invalidate the compiled module's cached global lookups on every call.
# It starts with names no caller can pass (None would match a first call
# with None for both names, which then went through as two empty names).
_last_names: list = [(object(), object(), b"", b"")]


def _names(scope: Any, key: Any, keep: bool = False) -> tuple:
    """(scope, key, UTF-8 of scope, UTF-8 of key); ``keep``: remember them
    for the write that follows (get_seen, the read of an update), which then
    gets the remembered tuple itself: no new one."""
    m = _last_names[0]
    if m[0] is scope and m[1] is key:
        return m
    if type(scope) is str and type(key) is str:
        try:
            if cython.compiled:
                s = PyUnicode_AsUTF8String(scope)
                k = PyUnicode_AsUTF8String(key)
            else:
                s = scope.encode()
                k = key.encode()
        except UnicodeEncodeError:
            pass  # _text names which one
        else:
            m = (scope, key, s, k)
            if keep:
                _last_names[0] = m
            return m
    return (scope, key, _text(scope, "scope"), _text(key, "key"))


def _unpack_names(data: bytes, count: int) -> list:
    """The names psg_groups and psg_keys pack as [u32 length][UTF-8 bytes]."""
    names = []
    p = 0
    for _ in range(count):
        (n,) = _U32.unpack_from(data, p)
        names.append(data[p + 4:p + 4 + n].decode("utf-8"))
        p += 4 + n
    return names


def inspect(path: Any, *, repair: bool = False) -> dict:
    """Read every log of the file store at ``path`` as opening it would,
    changing nothing on disk, and say what opening would fix (see the
    Cython binding's ``inspect``: ``ok``, ``problem``, ``detail`` and the
    recovery counts).

    Raises:
        LockedError: another process has the store open for writing.
        NotAStoreError: the directory is not a pystate store.
        StoreOSError: the directory cannot be read.
    """
    o = _new("ps_options *")
    rep = _new("ps_report *")
    cpath = _new("char[]", path_bytes(path))
    o.path = cpath
    o.repair = 1 if repair else 0
    rc = lib.ps_store_inspect(o, rep)
    if rc and rc != _CORRUPT:
        raise _reports.failure(_error(rc, f"inspect {path!r}"), _message(rep))
    return _reports.inspection(partial(getattr, rep), _message(rep), failed=rc == _CORRUPT)


class Store:
    """The kv storage on the C core, in memory or durable in a directory of
    per-scope append-only logs: the cffi twin of the Cython ``Store``
    (raw writes of JSON text, decoded reads; :class:`pystate.storage.Storage`).
    Use it through :class:`pystate.State`.
    """

    __slots__ = ("_g", "_closed", "_path", "_sync", "_ro", "_hook", "durable", "__weakref__")  # a feed refers to its store weakly

    #: What this storage promises (see the Cython binding).
    name = "kv"
    ordered = True
    local = True
    applies_ops = False

    def __init__(self, path: Any = None, *, sync: str = "interval", save_interval_ms: int = 5000,
                 repair: bool = False, read_only: bool = False,
                 _compact_hook: Any = None, _compact_min_dead: int = 0,
                 _max_open_files: int = 0) -> None:
        self._g = _CLOSED
        self._closed = True
        self._path: str | None = None
        self._sync: str | None = None
        self._ro = False
        self._hook: Any = None
        self.durable = False
        fields = check_store_options(path, sync, save_interval_ms, repair, read_only, _compact_min_dead, _max_open_files)
        rep = _new("ps_report *")
        if fields is None:
            o = _new("ps_options *")
        else:
            cpath = _new("char[]", fields["path"])  # alive until psg_open copies it
            o = _new("ps_options *", {**fields, "path": cpath, "sync": SYNC_MODES[sync]})
            if _compact_hook is not None:
                self._hook = ffi.new_handle(_compact_hook)
                o.hook = lib.pystate_compact_hook
                o.hook_ctx = self._hook
        out = _new("psg **")
        rc = lib.psg_open(out, o, rep)
        if rc:
            raise _reports.failure(_error(rc, f"open {path!r}"), _message(rep))
        self._g = out[0]
        self._closed = False
        if path is not None:
            self.durable = True
            self._path = os.fspath(path)
            self._sync = sync
            self._ro = read_only
            text = recovery_message(self._path, _reports.recovery(partial(getattr, rep)), _message(rep),
                                    read_only=read_only)
            if text:
                warnings.warn(text, RecoveryWarning, stacklevel=4)

    def __del__(self) -> None:
        g = getattr(self, "_g", _CLOSED)
        if g is not _CLOSED:
            self._g = _CLOSED
            lib.psg_free(g)

    def _after_fork_in_child(self) -> None:
        # The guard's counts belong to the parent's threads, gone here.
        if self._g is not _CLOSED:
            lib.psg_after_fork(self._g)

    def describe(self) -> str:
        """What the store is, for State's repr."""
        where = "in memory" if self._path is None else f"at {self._path!r}, sync={self._sync}"
        if self._closed:
            return f"{where}, closed"
        s = self.stats()
        return f"{where}, {s['scopes']} scopes, {s['keys']} keys"

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    @property
    def path(self) -> Any:
        """The store directory, or None in memory."""
        return self._path

    @property
    def read_only(self) -> bool:
        """Whether the store was opened ``read_only`` (writes raise ReadOnlyError)."""
        return self._ro

    @property
    def sync(self) -> str | None:
        """The sync mode, or None in memory."""
        return self._sync

    def close(self) -> None:
        """Make every write durable (file-based), then free the store. Later
        calls raise ClosedError; closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        rc = lib.psg_close(self._g)  # waits for calls in flight
        if rc and rc != _CLOSED_RC:
            raise _error(rc, "close (final sync)")

    def __enter__(self) -> Any:
        if self._closed:
            raise ClosedError("the store is closed")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- raw writes ---------------------------------------------------------

    def put(self, scope: Any, key: Any, data: bytes) -> bytes | None:
        """Store the JSON text ``data`` as it is; return the previous text or None."""
        _, _, s, k = _names(scope, key)
        out = _thread_buffer()[0]
        # The old value is delivered exactly when the key existed (a JSON
        # text is never empty), which saves an `existed` out-parameter.
        rc = lib.psg_put(self._g, s, len(s), k, len(k), data, len(data), out, _NULL)
        old = _take(out)
        if rc:
            raise _error(rc, "set")
        return old

    def put_if(self, scope: Any, key: Any, data: bytes, expect: bytes | None) -> bool:
        """Compare-and-set: store ``data`` only if the key holds exactly
        ``expect`` (None: does not exist); whether it was stored."""
        _, _, s, k = _names(scope, key)
        if expect is None:
            rc = _psg_put_if(self._g, s, len(s), k, len(k), data, len(data), _NULL, 0)
        else:
            rc = _psg_put_if(self._g, s, len(s), k, len(k), data, len(data), expect, len(expect))
        if rc == _CONFLICT:
            return False
        if rc:
            raise _error(rc, "update")
        return True

    def put_seen(self, seen: int, data: bytes) -> bool:
        """put_if of the text a :meth:`get_seen` read, given its token:
        stores ``data`` when that read was the store's last call (nothing
        can have changed the key since). False, with nothing changed, when
        it was not: the key may still hold what was read, so the caller
        goes on to put_if."""
        rc = _psg_put_seen(self._g, seen, data, len(data))
        if rc == _CONFLICT:
            return False
        if rc:
            raise _error(rc, "update")
        return True

    def remove(self, scope: Any, key: Any) -> bytes | None:
        """Remove (scope, key); return its JSON text, or None when there was none."""
        _, _, s, k = _names(scope, key)
        out = _thread_buffer()[0]
        rc = lib.psg_del(self._g, s, len(s), k, len(k), out)
        old = _take(out)
        if rc:
            if rc == _NOTFOUND:
                return None
            raise _error(rc, "delete")
        return old

    # ---- reads --------------------------------------------------------------

    def get_seen(self, scope: Any, key: Any) -> tuple:
        """(the JSON text at (scope, key) or None, a token for
        :meth:`put_seen`: 0 when there is none, for a missing key or a
        file store)."""
        _, _, s, k = _names(scope, key, True)
        t = _thread_buffer()
        data = _read(self._g, s, k, "update", t)
        return data, (0 if data is None else t[4][0])

    def get(self, scope: Any, key: Any, default: Any = None) -> Any:
        """The value at (scope, key), or ``default`` when there is none.

        >>> Store().get("users", "nobody", "?")
        '?'
        """
        _, _, s, k = _names(scope, key)
        data = _read(self._g, s, k, "get", _thread_buffer())
        return default if data is None else decode(data)

    def __contains__(self, item: Any) -> bool:
        """Whether a key exists: ``(scope, key) in st``; a stored null exists."""
        if type(item) is not tuple or len(item) != 2:
            raise not_a_pair(item)
        _, _, s, k = _names(item[0], item[1])
        rc = lib.psg_has(self._g, s, len(s), k, len(k))
        if rc and rc != _NOTFOUND:
            raise _error(rc, "in")
        return rc == 0

    def keys(self, scope: Any) -> list:
        """The keys of ``scope``, in the order :meth:`list` gives the values."""
        s = _text(scope, "scope")
        out = _new("psg_buf *")
        count = _new("size_t *")
        rc = lib.psg_keys(self._g, s, len(s), out, count)
        data = _take_once(out)
        if rc:
            raise _error(rc, "keys")
        return _unpack_names(data, count[0])

    def list(self, scope: Any) -> list:
        """All values of ``scope`` in key insertion order ([] if none)."""
        s = _text(scope, "scope")
        arrays = _new("psg_bufs *")
        try:
            rc = lib.psg_list(self._g, s, len(s), LIST_BATCH, arrays)
            if rc:
                raise _error(rc, "list")
            items = arrays.items
            if arrays.count == 1:
                return decode(_unpack(items[0].data, items[0].len))
            values: list = []
            for i in range(arrays.count):
                values.extend(decode(_unpack(items[i].data, items[i].len)))
            return values
        finally:
            lib.psg_bufs_free(arrays)

    def list_groups(self) -> builtins.list[str]:
        """Names of the scopes that hold at least one key, sorted."""
        out = _new("psg_buf *")
        count = _new("size_t *")
        rc = lib.psg_groups(self._g, out, count)
        data = _take_once(out)
        if rc:
            raise _error(rc, "list_groups")
        return _unpack_names(data, count[0])

    def _changes(self) -> tuple[bytes, int]:
        # Other processes' changes since the last call, packed (pystate.h,
        # ps_events), and how many; the first call starts keeping them.
        out = _new("psg_buf *")
        count = _new("size_t *")
        rc = lib.psg_events(self._g, out, count)
        data = _take_once(out)
        if rc:
            raise _error(rc, "share_events")
        return data, count[0]

    def items_page(self, scope: Any, pos: int = 0, limit: int = 1000) -> tuple:
        """One page of ``scope``'s keys and raw JSON values, in key order:
        ``(pairs, next_pos)``; an empty list means the scope is exhausted."""
        s = _text(scope, "scope")
        cpos = _new("uint32_t *", pos)
        out = _new("psg_buf *")
        count = _new("size_t *")
        rc = lib.psg_items(self._g, s, len(s), cpos, limit, out, count)
        data = _take_once(out)
        if rc:
            raise _error(rc, "items")
        pairs = []
        p = 0
        unpack = _U32.unpack_from
        for _ in range(count[0]):
            (kl,) = unpack(data, p)
            key = data[p + 4:p + 4 + kl].decode("utf-8")
            (vl,) = unpack(data, p + 4 + kl)
            pairs.append((key, data[p + 8 + kl:p + 8 + kl + vl]))
            p += 8 + kl + vl
        return pairs, cpos[0]

    def items(self, scope: Any, page: int = 1000) -> Iterator[tuple]:
        """Iterate ``(key, value)`` over ``scope`` in key order, a page of
        ``page`` entries at a time."""
        # Checked now, not at the first next(), as the Cython binding does.
        _new("size_t *", page)
        return paged_items(self.items_page, decode, scope, page)

    def stats(self) -> dict:
        """Counters (see the Cython binding's ``stats``)."""
        s = _new("ps_stats *")
        rc = lib.psg_stats(self._g, s)
        if rc:
            raise _error(rc, "stats")
        if not self.durable:
            return _reports.stats(partial(getattr, s))
        rep = _new("ps_report *")
        rc = lib.psg_recovery(self._g, rep)
        if rc:
            raise _error(rc, "stats")
        out = _new("psg_buf *")
        count = _new("size_t *")
        rc = lib.psg_scope_stats(self._g, out, count)
        data = _take_once(out)
        if rc:
            raise _error(rc, "stats")
        return _reports.stats(partial(getattr, s), path=self._path, sync=self._sync,
                              recovery=_reports.recovery(partial(getattr, rep)),
                              per_scope=_reports.per_scope(data, count[0]))

    # ---- durability ------------------------------------------------------

    def flush(self) -> None:
        """Make every write so far durable now, whatever the sync mode. In
        memory, does nothing."""
        rc = lib.psg_sync(self._g)
        if rc:
            raise _error(rc, "flush")

    def compact(self, scope: Any = None) -> None:
        """Rewrite the log of ``scope`` (default: of every scope) to hold only
        live records, crash-safely. In memory, does nothing."""
        if scope is None:
            rc = lib.psg_compact(self._g, _NULL, 0)
        else:
            s = _text(scope, "scope")
            rc = lib.psg_compact(self._g, s, len(s))
        if rc:
            raise _error(rc, "compact")

    def check(self) -> dict:
        """Read every log again and verify each record, and that replaying
        them gives exactly the keys and values in memory. Changes nothing."""
        rep = _new("ps_report *")
        rc = lib.psg_check(self._g, rep)
        if rc and rc != _CORRUPT:
            raise _error(rc, "check")
        return _reports.check(partial(getattr, rep), _message(rep), failed=rc == _CORRUPT)
