# cython: language_level=3, boundscheck=False, wraparound=False
"""Cython binding of the C core (csrc/pystate.h): convert, call, check.

Every value the C store hands out arrives through a sink that allocates a
Python ``bytes`` object of the exact size and lets the store copy into it
while it holds its lock: one copy, no pointer into the store ever escapes,
and the bytes go straight to the JSON decoder.

Calls that only touch memory keep the GIL: they take a few hundred
nanoseconds, less than releasing and re-taking it would cost. Writes to a
file-based store release it around the C call (a pwrite, maybe an
fdatasync); their old values then arrive in a malloc'd buffer, since no
Python object can be made without the GIL.
"""
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.ref cimport PyObject, Py_XDECREF
from cpython.unicode cimport PyUnicode_DecodeUTF8

from pystate._cdefs cimport *
from pystate._codec cimport decode

import os
import warnings

from pystate import _reports
from pystate._codec import decode as decode_object  # decode, as a Python callable
from pystate._options import check_store_options, path_bytes

from pystate.errors import (
    ClosedError,
    RecoveryWarning,
    bad_name,
    error_for_rc,
    not_a_pair,
    recovery_message,
)
from pystate.storage import paged_items

cdef extern from "<unistd.h>" nogil:
    int usleep(unsigned int usec)

cdef extern from "Python.h":
    PyObject *PyBytes_FromStringAndSize_raw "PyBytes_FromStringAndSize" (const char *v, Py_ssize_t n)
    char *raw_bytes_data "PyBytes_AS_STRING" (PyObject *o)
    int raw_list_append "PyList_Append" (PyObject *list, PyObject *item)
    void PyErr_Clear()
    # Without Cython's "except NULL": _text tests the result itself, which
    # spares a try block (and its exception-state saves) on every call.
    const char *utf8_of "PyUnicode_AsUTF8AndSize" (object s, Py_ssize_t *n)
    bint PyErr_ExceptionMatches(object exc)

cdef extern from *:
    """
    #ifdef Py_GIL_DISABLED
    #define PS_GIL_SERIALIZES 0
    #else
    #define PS_GIL_SERIALIZES 1
    #endif
    """
    # Whether calls that hold the GIL exclude one another (not so on a
    # free-threaded build).
    const int PS_GIL_SERIALIZES

#: Names and values of the C core's status codes, from the header itself.
RC_CODES = {
    "PS_OK": PS_OK,
    "PS_NOTFOUND": PS_NOTFOUND,
    "PS_CONFLICT": PS_CONFLICT,
    "PS_TOOBIG": PS_TOOBIG,
    "PS_CORRUPT": PS_CORRUPT,
    "PS_LOCKED": PS_LOCKED,
    "PS_BADVERSION": PS_BADVERSION,
    "PS_NOTSTORE": PS_NOTSTORE,
    "PS_READONLY": PS_READONLY,
    "PS_RANGE": PS_RANGE,
}

#: The sync modes of a file-based store, by name.
SYNC_MODES = {"interval": PS_SYNC_INTERVAL, "never": PS_SYNC_NEVER, "always": PS_SYNC_ALWAYS}
#: Hook points of a compaction, by name (testing aid).
COMPACT_HOOK_POINTS = {
    PS_HOOK_COMPACT_WRITTEN: "written",
    PS_HOOK_COMPACT_SYNCED: "synced",
    PS_HOOK_COMPACT_RENAMED: "renamed",
    PS_HOOK_COMPACT_DONE: "done",
}
#: One past the last status code (the header's sentinel).
RC_END = PS_RC_END

def strerror(int rc) -> str:
    """The C core's description of a return code."""
    return ps_strerror(rc).decode("utf-8", "replace")


def version() -> tuple:
    """(major, minor, patch) of the linked C library."""
    cdef int a, b, c
    ps_version(&a, &b, &c)
    return (a, b, c)


_major, _minor, _patch = version()
if (_major, _minor) != (PS_VERSION_MAJOR, PS_VERSION_MINOR):
    raise ImportError(
        f"pystate's C core is {_major}.{_minor}.{_patch}, but the binding was "
        f"compiled against {PS_VERSION_MAJOR}.{PS_VERSION_MINOR}")

# Code -> name, for the one error table (pystate.errors.RC_ERRORS).
cdef dict _RC_NAMES = {v: k for k, v in RC_CODES.items()}


cdef object _error(int rc, str what):
    return error_for_rc(rc, _RC_NAMES.get(rc), what, strerror(rc))


# ---- sinks: how values leave the store ------------------------------------

cdef void *_bytes_sink(void *ctx, size_t n) noexcept:
    # Called by the C store, with the GIL held (we never release it around
    # calls that take a sink). ctx is a PyObject* slot that receives a new
    # reference.
    cdef PyObject **slot = <PyObject **>ctx
    cdef PyObject *b = PyBytes_FromStringAndSize_raw(NULL, <Py_ssize_t>n)
    if b == NULL:
        PyErr_Clear()  # reported as ENOMEM by the store
        return NULL
    Py_XDECREF(slot[0])
    slot[0] = b
    return raw_bytes_data(b)


cdef void *_list_sink(void *ctx, size_t n) noexcept:
    # Like _bytes_sink, for calls that deliver several buffers: each new
    # bytes object is appended to the list at ctx.
    cdef PyObject *b = PyBytes_FromStringAndSize_raw(NULL, <Py_ssize_t>n)
    if b == NULL:
        PyErr_Clear()
        return NULL
    if raw_list_append(<PyObject *>ctx, b) < 0:
        PyErr_Clear()
        Py_XDECREF(b)
        return NULL
    Py_XDECREF(b)  # the list holds it now
    return raw_bytes_data(b)


# Bytes per array handed over by list(): decoding arrays of a few hundred
# values measured faster than one decode per value and than one decode of
# the whole scope (whose parse tree no longer fits in cache).
cdef size_t LIST_BATCH = 32 * 1024


cdef struct _Out:
    # A sink and where it puts one value a call may hand back: a bytes
    # object (calls made with the GIL), or a malloc'd buffer (calls made
    # without it).
    ps_sink sink
    PyObject *obj
    char *buf
    size_t len


cdef void *_malloc_sink(void *ctx, size_t n) noexcept nogil:
    cdef _Out *o = <_Out *>ctx
    free(o.buf)
    o.buf = <char *>malloc(n if n else 1)
    o.len = n
    return o.buf


cdef inline void _out_init(_Out *o) noexcept:
    o.obj = NULL
    o.buf = NULL
    o.len = 0
    o.sink.alloc = _bytes_sink
    o.sink.ctx = &o.obj


cdef inline void _out_init_nogil(_Out *o) noexcept:
    o.obj = NULL
    o.buf = NULL
    o.len = 0
    o.sink.alloc = _malloc_sink
    o.sink.ctx = o


cdef inline object _take(_Out *o):
    """Own the bytes a sink produced (None when it produced nothing)."""
    cdef object b
    if o.obj != NULL:
        b = <object>o.obj
        Py_XDECREF(o.obj)
        o.obj = NULL
        return b
    if o.buf != NULL:
        try:
            b = PyBytes_FromStringAndSize(o.buf, <Py_ssize_t>o.len)
        finally:
            free(o.buf)
            o.buf = NULL
        return b
    return None


cdef inline void memset_options(ps_options *o) noexcept:
    memset(o, 0, sizeof(ps_options))


cdef void _hook_trampoline(void *ctx, int point) noexcept with gil:
    # Testing aid only: C calls this with the store locked, so the hook
    # must not use the store, and no other thread may be writing.
    try:
        (<object>ctx)(COMPACT_HOOK_POINTS.get(point, point))
    except BaseException:
        pass


cdef inline str _message(ps_report *rep):
    return rep.message.decode("utf-8", "replace")


cdef inline object _fields(dict struct_as_dict):
    # _reports reads a C struct through a field getter; Cython turns a
    # struct into a dict of its fields.
    return struct_as_dict.__getitem__


def inspect(path, *, repair=False) -> dict:
    """Read every log of the file store at ``path`` as opening it would,
    changing nothing on disk, and say what opening would fix: ``ok``
    (nothing to fix), ``problem`` (damage that refuses to open without
    ``repair``, naming file and offset, or None), and the counts of
    :meth:`Store.stats`'s ``recovery`` (``torn_tails``, ``bytes_cut``,
    ``repaired`` (with ``repair``: logs it would salvage), ``records_lost``,
    ``logs_lost``, ``stray_files``) and ``detail`` (what and where the first
    of them is, or None). Takes the directory's lock, shared, while it
    reads.

    Raises:
        LockedError: another process has the store open for writing.
        NotAStoreError: the directory is not a pystate store.
        StoreOSError: the directory cannot be read.
    """
    cdef ps_options o
    cdef ps_report rep
    memset_options(&o)
    cdef bytes bpath = path_bytes(path)
    o.path = bpath
    o.repair = 1 if repair else 0
    cdef int rc
    with nogil:
        rc = ps_store_inspect(&o, &rep)
    if rc and rc != PS_CORRUPT:
        raise _reports.failure(_error(rc, f"inspect {path!r}"), _message(&rep))
    return _reports.inspection(_fields(rep), _message(&rep), failed=rc == PS_CORRUPT)


cdef inline const char *_text(object s, Py_ssize_t *n, str what) except NULL:
    """UTF-8 of a scope or key, borrowed from the str object (CPython caches
    it, and ASCII strings need no conversion at all)."""
    if type(s) is not str and not isinstance(s, str):
        raise bad_name(what, s)
    cdef const char *p = utf8_of(s, n)
    if p == NULL:
        if PyErr_ExceptionMatches(UnicodeEncodeError):
            PyErr_Clear()
            raise bad_name(what, s)
        return NULL  # another error (MemoryError), raised as it is
    return p


cdef inline int _check_names(object scope, object key, _Names *n) except -1:
    """_text of a scope and a key, into *n."""
    n.scope = _text(scope, &n.slen, "scope")
    n.key = _text(key, &n.klen, "key")
    return 0


cdef list _unpack_names(bytes data, size_t count):
    """The names ps_groups and ps_keys pack as [u32 length][UTF-8 bytes]."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef list names = []
    cdef size_t i
    cdef uint32_t n
    for i in range(count):
        n = _le32(p)
        names.append(PyUnicode_DecodeUTF8(<const char *>p + 4, n, NULL))
        p += 4 + n
    return names


cdef class Store:
    """The kv storage: JSON texts by (scope, key) on the C core, in memory or
    durable in a directory of per-scope append-only logs.

    It implements :class:`pystate.storage.Storage`: raw writes (``put``,
    ``put_if``, ``remove``) take and give JSON text, and do nothing else;
    the rules above them (value checks, triggers, the update loop) are
    :mod:`pystate.writes`', for every adapter. Use it through
    :class:`pystate.State`, which documents the options.

    >>> st = Store()
    >>> st.put("s", "k", b'{"n":1}') is None
    True
    >>> st.put("s", "k", b'{"n":2}'), st.get("s", "k")
    (b'{"n":1}', {'n': 2})
    """

    # Its fields are declared in _core.pxd.

    #: What this storage promises (pystate.storage.Storage): list() keeps
    #: insertion order; writes survive a crash when durable (a file store).
    ordered = True
    #: Calls never wait on another machine.
    local = True
    #: The write path runs update, by compare-and-set on put_if.
    applies_ops = False
    #: The adapter's name.
    name = "kv"

    def __cinit__(self, *args, **kwargs):
        self._st = NULL

    def __init__(self, path=None, *, sync="interval", save_interval_ms=5000, repair=False,
                 read_only=False, _compact_hook=None, _compact_min_dead=0,
                 _max_open_files=0):
        cdef dict fields = check_store_options(path, sync, save_interval_ms, repair, read_only,
                                               _compact_min_dead, _max_open_files)
        if self._st != NULL:
            return
        cdef ps_options o
        cdef ps_report rep
        cdef bytes bpath
        memset_options(&o)
        # In memory every call holds the GIL from start to end (only a file
        # store's calls let it go), so the store's own lock would only cost.
        o.serialized = PS_GIL_SERIALIZES
        if fields is not None:
            bpath = fields["path"]  # alive until ps_store_open copies it
            o.path = bpath
            o.sync = SYNC_MODES[fields["sync"]]
            o.sync_interval_ms = fields["sync_interval_ms"]
            o.repair, o.read_only = fields["repair"], fields["read_only"]
            o.compact_min_dead, o.max_open_files = fields["compact_min_dead"], fields["max_open_files"]
            if _compact_hook is not None:
                self._hook = _compact_hook
                o.hook = _hook_trampoline
                o.hook_ctx = <void *>self._hook
        cdef ps_store *st = NULL
        cdef int rc
        with nogil:
            rc = ps_store_open(&st, &o, &rep)
        if rc:
            raise _reports.failure(_error(rc, f"open {path!r}"), _message(&rep))
        self._st = st
        if path is not None:
            self.durable = True
            self.path = os.fspath(path)
            self.sync = sync
            self.read_only = read_only
            text = recovery_message(self.path, _reports.recovery(_fields(rep)),
                                    _message(&rep), read_only=read_only)
            if text:
                warnings.warn(text, RecoveryWarning, stacklevel=4)

    def __dealloc__(self):
        if self._st != NULL:
            ps_store_close(self._st)
            self._st = NULL

    cdef int _open(self) except -1:
        if self._st == NULL or self._closing:
            raise ClosedError("the store is closed")
        return 0

    cdef int _enter(self) except -1:
        # Before a GIL-free call: close() waits until every such call is out.
        if self._st == NULL or self._closing:
            raise ClosedError("the store is closed")
        self._busy += 1
        return 0

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._st == NULL

    def describe(self) -> str:
        """What the store is, for State's repr."""
        where = "in memory" if self.path is None else f"at {self.path!r}, sync={self.sync}"
        cdef ps_stats s
        if self._st == NULL or self._closing:
            return f"{where}, closed"
        ps_stats_get(self._st, &s)
        return f"{where}, {s.scopes} scopes, {s.keys} keys"

    def _after_fork_in_child(self):
        # The parent's other threads are gone, with the calls they were in.
        self._busy = 0

    def close(self) -> None:
        """Make every write durable (file-based), then free the store. Later
        calls raise ClosedError; closing twice is fine."""
        if self._st == NULL or self._closing:
            return
        self._closing = True
        while self._busy:  # writers still inside the C store
            with nogil:
                usleep(200)
        cdef ps_store *st = self._st
        cdef int rc
        self._st = NULL
        with nogil:
            rc = ps_store_close(st)
        if rc:
            raise _error(rc, "close (final sync)")

    def __enter__(self):
        self._open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- raw writes: with the GIL in memory, without it on disk ---------

    cpdef object put(self, object scope, object key, bytes data):
        """Store the JSON text ``data`` at (scope, key) as it is (the caller
        made it: :mod:`pystate.writes`); return the previous text or None."""
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef const char *k = _text(key, &kl, "key")
        cdef const char *v = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef _Out out
        cdef int existed = 0
        cdef int rc
        cdef ps_store *st
        if not self.durable:
            self._open()
            _out_init(&out)
            rc = ps_put(self._st, s, sl, k, kl, v, n, &out.sink, &existed)
        else:
            _out_init_nogil(&out)
            self._enter()
            st = self._st
            with nogil:
                rc = ps_put(st, s, sl, k, kl, v, n, &out.sink, &existed)
            self._busy -= 1
        old = _take(&out)
        if rc:
            raise _error(rc, "set")
        return old if existed else None

    cpdef bint put_if(self, object scope, object key, bytes data, bytes expect) except -1:
        """Compare-and-set: store ``data`` only if the key holds exactly the
        text ``expect`` (None: only if it does not exist). Returns whether
        it was stored."""
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef const char *k = _text(key, &kl, "key")
        cdef const char *v = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef const char *e = NULL
        cdef Py_ssize_t elen = 0
        cdef int rc
        cdef ps_store *st
        if expect is not None:
            e = PyBytes_AS_STRING(expect)
            elen = PyBytes_GET_SIZE(expect)
        if not self.durable:
            self._open()
            rc = ps_put_if(self._st, s, sl, k, kl, v, n, e, elen)
        else:
            self._enter()
            st = self._st
            with nogil:
                rc = ps_put_if(st, s, sl, k, kl, v, n, e, elen)
            self._busy -= 1
        if rc == PS_CONFLICT:
            return False
        if rc:
            raise _error(rc, "update")
        return True

    cpdef bint put_seen(self, uint64_t seen, bytes data) except -1:
        """put_if of the text a :meth:`get_seen` read, given its token:
        stores ``data`` when that read was the store's last call (nothing
        can have changed the key since). False, with nothing changed, when
        it was not: the key may still hold what was read, so the caller
        goes on to put_if.

        >>> st = Store()
        >>> _ = st.put("s", "k", b'1')
        >>> data, seen = st.get_seen("s", "k")
        >>> st.put_seen(seen, b'2'), st.put_seen(seen, b'3'), st.get("s", "k")
        (True, False, 2)
        """
        self._open()
        if self.durable or seen == 0:
            # What C would answer (a file store's reads give no token),
            # without waiting on a file store's lock while holding the GIL.
            return False
        cdef int rc = ps_put_seen(self._st, seen, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        if rc == PS_CONFLICT:
            return False
        if rc:
            raise _error(rc, "update")
        return True

    cpdef object remove(self, object scope, object key):
        """Remove (scope, key); return the removed JSON text, or None when
        there was none."""
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef const char *k = _text(key, &kl, "key")
        cdef _Out out
        cdef int rc
        cdef ps_store *st
        if not self.durable:
            self._open()
            _out_init(&out)
            rc = ps_del(self._st, s, sl, k, kl, &out.sink)
        else:
            _out_init_nogil(&out)
            self._enter()
            st = self._st
            with nogil:
                rc = ps_del(st, s, sl, k, kl, &out.sink)
            self._busy -= 1
        old = _take(&out)
        if rc == PS_NOTFOUND:
            return None
        if rc:
            raise _error(rc, "delete")
        return old

    # ---- reads ----------------------------------------------------------

    cdef int _prefetch(self, object scope, object key, _Names *n) except -1:
        """Make the checks get_seen makes, keeping the names' UTF-8 in *n
        for _read_seen, then start loading the first thing its lookup
        reads (``ps_prefetch``): work done before _read_seen then overlaps
        that cache miss. Reads and changes nothing."""
        _check_names(scope, key, n)
        self._open()
        ps_prefetch(self._st, n.scope, n.slen, n.key, n.klen)
        return 0

    cdef object _read_seen(self, const _Names *n, uint64_t *seen):
        cdef _Out out
        _out_init(&out)
        self._open()
        cdef int rc = ps_get_seen(self._st, n.scope, n.slen, n.key, n.klen, &out.sink, seen)
        data = _take(&out)
        if rc == PS_NOTFOUND:
            return None
        if rc:
            raise _error(rc, "update")
        return data

    cdef object _get_seen(self, object scope, object key, uint64_t *seen):
        cdef _Names n
        _check_names(scope, key, &n)
        return self._read_seen(&n, seen)

    def get_seen(self, scope, key):
        """(the JSON text at (scope, key) or None, a token for
        :meth:`put_seen`: 0 when there is none, for a missing key or a
        file store)."""
        cdef uint64_t seen = 0
        data = self._get_seen(scope, key, &seen)
        return data, seen

    def get(self, scope, key, default=None):
        """The value at (scope, key), or ``default`` when there is none.

        A stored JSON null is a value: it reads as None, not as ``default``.

        >>> st = State()
        >>> st.get("users", "nobody", "?")
        '?'
        """
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef const char *k = _text(key, &kl, "key")
        cdef _Out out
        _out_init(&out)
        self._open()
        cdef int rc = ps_get(self._st, s, sl, k, kl, &out.sink)
        data = _take(&out)
        if rc == PS_NOTFOUND:
            return default
        if rc:
            raise _error(rc, "get")
        return decode(data)

    def __contains__(self, item):
        """Whether a key exists: ``(scope, key) in st``. A stored null
        exists.

        >>> st = State()
        >>> _ = st.set("s", "k", None)
        >>> ("s", "k") in st, ("s", "other") in st
        (True, False)
        """
        if type(item) is not tuple or len(item) != 2:
            raise not_a_pair(item)
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(item[0], &sl, "scope")
        cdef const char *k = _text(item[1], &kl, "key")
        self._open()
        cdef int rc = ps_get(self._st, s, sl, k, kl, NULL)
        if rc and rc != PS_NOTFOUND:
            raise _error(rc, "in")
        return rc == 0

    def keys(self, scope):
        """The keys of ``scope``, in the order :meth:`list` gives the values
        ([] if none).

        >>> st = State()
        >>> _ = st.set("s", "b", 1); _ = st.set("s", "a", 2)
        >>> st.keys("s"), st.keys("none")
        (['b', 'a'], [])
        """
        cdef Py_ssize_t sl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef _Out out
        _out_init(&out)
        cdef size_t count = 0
        self._open()
        cdef int rc = ps_keys(self._st, s, sl, &out.sink, &count)
        data = _take(&out)
        if rc:
            raise _error(rc, "keys")
        return _unpack_names(data, count)

    def list(self, scope):
        """All values of ``scope`` in key insertion order ([] if none).

        >>> st = State()
        >>> _ = st.set("s", "a", 1); _ = st.set("s", "b", 2)
        >>> st.list("s")
        [1, 2]
        """
        cdef Py_ssize_t sl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef list arrays = []
        cdef ps_sink sink
        sink.alloc = _list_sink
        sink.ctx = <void *>arrays
        self._open()
        cdef int rc = ps_list(self._st, s, sl, LIST_BATCH, &sink)
        if rc:
            raise _error(rc, "list")
        if len(arrays) == 1:
            return decode(arrays[0])
        cdef list values = []
        for a in arrays:
            values.extend(decode(a))
        return values

    def list_groups(self):
        """Names of the scopes that hold at least one key, sorted.

        >>> st = State()
        >>> _ = st.set("b", "k", 1); _ = st.set("a", "k", 1)
        >>> st.list_groups()
        ['a', 'b']
        """
        cdef _Out out
        _out_init(&out)
        cdef size_t count = 0
        self._open()
        cdef int rc = ps_groups(self._st, &out.sink, &count)
        data = _take(&out)
        if rc:
            raise _error(rc, "list_groups")
        return _unpack_names(data, count)

    def _changes(self):
        # Other processes' changes since the last call, packed (pystate.h,
        # ps_events), and how many; the first call starts keeping them.
        cdef _Out out
        _out_init(&out)
        cdef size_t count = 0
        self._open()
        cdef int rc = ps_events(self._st, &out.sink, &count)
        data = _take(&out)
        if rc:
            raise _error(rc, "share_events")
        return data, count

    def items_page(self, scope, uint32_t pos=0, size_t limit=1000):
        """One page of ``scope``'s keys and raw JSON values, in key order:
        ``(pairs, next_pos)`` with ``pairs`` a list of ``(key, bytes)``;
        an empty list means the scope is exhausted. Pages are consistent
        one by one; a scope written between pages may show keys missed or
        repeated. :meth:`items` walks every page.

        >>> st = State()
        >>> _ = st.set("s", "a", {"n": 1})
        >>> st.items_page("s")
        ([('a', b'{"n":1}')], 1)
        """
        cdef Py_ssize_t sl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef _Out out
        _out_init(&out)
        cdef size_t count = 0, i
        cdef uint32_t kl, vl
        self._open()
        cdef int rc = ps_items(self._st, s, sl, &pos, limit, &out.sink, &count)
        data = _take(&out)
        if rc:
            raise _error(rc, "items")
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
        cdef list pairs = []
        for i in range(count):
            kl = _le32(p)
            key = PyUnicode_DecodeUTF8(<const char *>p + 4, kl, NULL)
            vl = _le32(p + 4 + kl)
            pairs.append((key, PyBytes_FromStringAndSize(<const char *>p + 8 + kl, vl)))
            p += 8 + kl + vl
        return pairs, pos

    def items(self, scope, size_t page=1000):
        """Iterate ``(key, value)`` over ``scope`` in key order, a page of
        ``page`` entries at a time, so a big scope is never all in memory.

        >>> st = State()
        >>> _ = st.set("s", "a", 1); _ = st.set("s", "b", [2])
        >>> list(st.items("s"))
        [('a', 1), ('b', [2])]
        """
        return paged_items(self.items_page, decode_object, scope, page)

    def stats(self) -> dict:
        """Counters: scopes, keys, key/value bytes, reclaimable memory
        (dead_bytes) and the memory the store holds (heap_bytes). A
        file-based store adds log_bytes, log_dead_bytes, compactions, what
        opening it found (``recovery``) and figures per scope
        (``per_scope``: keys, live_bytes, dead_bytes, file_bytes).

        >>> State().stats()["keys"]
        0
        """
        cdef ps_stats s
        cdef ps_report rep
        self._open()
        ps_stats_get(self._st, &s)
        if not self.durable:
            return _reports.stats(_fields(s))
        ps_recovery_get(self._st, &rep)
        cdef _Out out
        _out_init(&out)
        cdef size_t count = 0
        cdef int rc = ps_scope_stats(self._st, &out.sink, &count)
        data = _take(&out)
        if rc:
            raise _error(rc, "stats")
        return _reports.stats(_fields(s), path=self.path, sync=self.sync, recovery=_reports.recovery(_fields(rep)),
                              per_scope=_reports.per_scope(data, count))

    # ---- durability ------------------------------------------------------

    def flush(self) -> None:
        """Make every write so far durable now (fdatasync of every log
        written since its last sync), whatever the sync mode. In memory,
        does nothing.

        >>> State().flush()
        """
        cdef int rc
        self._enter()
        cdef ps_store *st = self._st
        if self.durable:
            with nogil:
                rc = ps_sync(st)
        else:
            rc = ps_sync(st)  # nothing slow, and in memory no call lets the GIL go
        self._busy -= 1
        if rc:
            raise _error(rc, "flush")

    def compact(self, scope=None) -> None:
        """Rewrite the log of ``scope`` (default: of every scope) to hold only
        live records: new file, fdatasync, rename over the old one, sync of
        the directory. Crash-safe at every step. In memory, does nothing.

        >>> State().compact()
        """
        cdef Py_ssize_t sl = 0
        cdef const char *s = NULL
        if scope is not None:
            s = _text(scope, &sl, "scope")
        cdef int rc
        self._enter()
        cdef ps_store *st = self._st
        if self.durable:
            with nogil:
                rc = ps_compact(st, s, sl)
        else:
            rc = ps_compact(st, s, sl)  # nothing slow, and in memory no call lets the GIL go
        self._busy -= 1
        if rc:
            raise _error(rc, "compact")

    def check(self) -> dict:
        """Read every log again and verify each record, and that replaying
        them gives exactly the keys and values in memory. Changes nothing.
        Returns ``{"ok": bool, "logs": n, "records": n, "problem": str | None}``.

        >>> State().check()["ok"]
        True
        """
        cdef ps_report rep
        cdef int rc
        self._enter()
        cdef ps_store *st = self._st
        if self.durable:
            with nogil:
                rc = ps_check(st, &rep)
        else:
            rc = ps_check(st, &rep)  # nothing slow, and in memory no call lets the GIL go
        self._busy -= 1
        if rc and rc != PS_CORRUPT:
            raise _error(rc, "check")
        return _reports.check(_fields(rep), _message(&rep), failed=rc == PS_CORRUPT)


cdef inline uint32_t _le32(const unsigned char *p) noexcept:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)
