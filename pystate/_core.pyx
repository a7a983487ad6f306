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
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from cpython.object cimport PyObject_Hash
from cpython.pythread cimport (
    PyThread_type_lock, PyThread_allocate_lock, PyThread_free_lock,
    PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK, NOWAIT_LOCK,
)

from pystate._cdefs cimport *
from pystate._codec cimport encode, encode_trusted, decode, copy_containers
from pystate._ops cimport apply_into

import os
import warnings

from pystate._options import check_store_options, path_bytes

from pystate.errors import (
    ClosedError,
    PayloadError,
    RecoveryWarning,
    ValueTooLargeError,
    error_for_rc,
    recovery_message,
)

cdef extern from "<unistd.h>" nogil:
    int usleep(unsigned int usec)

cdef extern from "Python.h":
    PyObject *PyBytes_FromStringAndSize_raw "PyBytes_FromStringAndSize" (const char *v, Py_ssize_t n)
    char *raw_bytes_data "PyBytes_AS_STRING" (PyObject *o)
    int raw_list_append "PyList_Append" (PyObject *list, PyObject *item)
    void PyErr_Clear()

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

# The event types of the engine's state triggers.
cdef str EV_CREATED = "state:created"
cdef str EV_UPDATED = "state:updated"
cdef str EV_DELETED = "state:deleted"

# Watched writes of one (scope, key) hold one of these locks from the write
# until their event is queued, so events reach the queue in write order even
# when the GIL is released around a file write. Striped, so writers of
# different keys rarely wait for each other.
cdef enum:
    N_STRIPES = 64


cdef inline void _lock(PyThread_type_lock lk) noexcept:
    if PyThread_acquire_lock(lk, NOWAIT_LOCK):
        return
    with nogil:  # the holder may need the GIL to finish
        PyThread_acquire_lock(lk, WAIT_LOCK)


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


# Tests set this to run code between an update's read and its write, to
# prove that a concurrent writer makes the update start over.
cdef object _race_hook = None


def _set_race_hook(hook) -> None:
    """Testing aid: call ``hook()`` inside every update, after the read and
    before the compare-and-set. None removes it."""
    global _race_hook
    _race_hook = hook


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


def _with_message(err, message):
    err.message = message
    err.args = (message,)
    return err


cdef void _hook_trampoline(void *ctx, int point) noexcept with gil:
    # Testing aid only: C calls this with the store locked, so the hook
    # must not use the store, and no other thread may be writing.
    try:
        (<object>ctx)(COMPACT_HOOK_POINTS.get(point, point))
    except BaseException:
        pass


cdef dict _report_dict(ps_report *r):
    return {
        "logs": r.logs,
        "records": r.records,
        "torn_tails": r.torn_tails,
        "bytes_cut": r.bytes_cut,
        "repaired": r.repaired,
        "records_lost": r.records_lost,
        "logs_lost": r.logs_lost,
        "stray_files": r.stray_files,
    }


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
        err = error_for_rc(rc, RC_CODES, f"inspect {path!r}")
        msg = rep.message.decode("utf-8", "replace")
        if msg:
            _with_message(err, msg)
        raise err
    out = _report_dict(&rep)
    msg = rep.message.decode("utf-8", "replace")
    out["problem"] = msg if rc else None
    out["detail"] = msg or None
    out["ok"] = rc == PS_OK and not (rep.torn_tails or rep.repaired or rep.stray_files)
    return out


cdef inline const char *_text(object s, Py_ssize_t *n, str what) except NULL:
    """UTF-8 of a scope or key, borrowed from the str object (CPython caches
    it, and ASCII strings need no conversion at all)."""
    if type(s) is not str and not isinstance(s, str):
        raise PayloadError(f"{what}: expected a string, got {type(s).__name__}")
    try:
        return PyUnicode_AsUTF8AndSize(s, n)
    except UnicodeEncodeError:
        raise PayloadError(
            f"{what}: not valid Unicode text (it contains a lone surrogate)") from None


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


cdef class UpdateResult:
    """What ``update`` returns: the value before and after, and the errors
    of the ops that could not apply (empty when all applied).

    Unpacks like a tuple: ``old, new, errors = st.update(...)``.
    ``old_value`` and ``new_value`` share no dict or list.
    """

    cdef readonly object old_value
    cdef readonly object new_value
    cdef readonly list errors

    def __init__(self, old_value=None, new_value=None, errors=None):
        self.old_value = old_value
        self.new_value = new_value
        self.errors = [] if errors is None else list(errors)

    def to_response(self) -> dict:
        """The engine's ``state::update`` response: ``errors`` only when
        there are any."""
        r = {"old_value": self.old_value, "new_value": self.new_value}
        if self.errors:
            r["errors"] = self.errors
        return r

    def __iter__(self):
        return iter((self.old_value, self.new_value, self.errors))

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return (self.old_value, self.new_value, self.errors)[i]

    def __eq__(self, other):
        if isinstance(other, UpdateResult):
            other = tuple(other)
        if isinstance(other, tuple):
            return (self.old_value, self.new_value, self.errors) == other
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return (f"UpdateResult(old_value={self.old_value!r}, "
                f"new_value={self.new_value!r}, errors={self.errors!r})")


cdef class Store:
    """A store of JSON values by (scope, key), on the C core: in memory, or
    durable in a directory of per-scope append-only logs.

    Use it through :class:`pystate.State`, which adds the engine-shaped
    ``trigger`` API and documents the options; this class holds the fast
    paths.
    """

    cdef ps_store *_st
    cdef Py_ssize_t _max_value_bytes  # -1: no limit
    cdef bint _durable                # file-based: writes release the GIL
    cdef bint _closing
    cdef bint _sealed                 # _seal() was called: writes raise ClosedError
    cdef int _busy                    # threads inside a GIL-free call
    cdef readonly object path         # the store directory, or None
    cdef readonly str sync            # the sync mode, or None in memory
    cdef readonly bint read_only      # opened read_only: writes raise ReadOnlyError
    cdef object _hook                 # testing aid, kept alive for C
    # The trigger gate (see _set_watch): _emit is None while no trigger can
    # match, so an unwatched write pays one pointer comparison.
    cdef object _emit
    cdef object _admit
    cdef object _pending
    cdef Py_ssize_t _bound
    cdef bint _watch_all
    cdef set _watch_scopes
    cdef set _watch_keys
    cdef dict _watch_pairs
    cdef PyThread_type_lock _stripes[N_STRIPES]

    def __cinit__(self, *args, **kwargs):
        self._st = NULL
        self._max_value_bytes = -1
        cdef int i
        for i in range(N_STRIPES):
            self._stripes[i] = PyThread_allocate_lock()
            if self._stripes[i] == NULL:
                raise MemoryError("cannot allocate the store's locks")

    def __init__(self, path=None, *, sync="interval", save_interval_ms=5000, repair=False,
                 read_only=False, max_value_bytes=None, _compact_hook=None, _compact_min_dead=0,
                 _max_open_files=0):
        cdef bytes bpath = check_store_options(path, sync, save_interval_ms, repair, read_only,
                                               max_value_bytes)
        if max_value_bytes is not None:
            self._max_value_bytes = max_value_bytes
        if self._st != NULL:
            return
        cdef ps_options o
        cdef ps_report rep
        memset_options(&o)
        if bpath is not None:
            o.path = bpath
            o.sync = SYNC_MODES[sync]
            o.sync_interval_ms = save_interval_ms
            o.repair = 1 if repair else 0
            o.read_only = 1 if read_only else 0
            o.compact_min_dead = _compact_min_dead
            o.max_open_files = _max_open_files
            if _compact_hook is not None:
                self._hook = _compact_hook
                o.hook = _hook_trampoline
                o.hook_ctx = <void *>self._hook
        cdef ps_store *st = NULL
        cdef int rc
        with nogil:
            rc = ps_store_open(&st, &o, &rep)
        if rc:
            err = error_for_rc(rc, RC_CODES, f"open {path!r}")
            msg = rep.message.decode("utf-8", "replace")
            if msg:  # the C core's report says what and where (file, offset)
                _with_message(err, msg)
            raise err
        self._st = st
        if path is not None:
            self._durable = True
            self.path = os.fspath(path)
            self.sync = sync
            self.read_only = read_only
            text = recovery_message(self.path, _report_dict(&rep),
                                    rep.message.decode("utf-8", "replace"), read_only=read_only)
            if text:
                warnings.warn(text, RecoveryWarning, stacklevel=3)

    def __dealloc__(self):
        if self._st != NULL:
            ps_store_close(self._st)
            self._st = NULL
        cdef int i
        for i in range(N_STRIPES):
            if self._stripes[i] != NULL:
                PyThread_free_lock(self._stripes[i])
                self._stripes[i] = NULL

    # ---- the trigger gate ------------------------------------------------

    def _set_watch(self, emit, admit=None, pending=None, Py_ssize_t bound=0,
                   bint watch_all=False, set scopes=None, set keys=None, dict pairs=None):
        """Install (or, with ``emit=None``, remove) the trigger gate.

        A write to (scope, key) is watched when ``watch_all`` is true, or
        ``scope`` is in ``scopes``, or ``key`` is in ``keys``, or ``key`` is
        in ``pairs[scope]``; the containers are kept by reference, so their
        owner updates them in place. A watched
        write first calls ``admit()`` if ``len(pending) >= bound`` (back
        pressure, before anything changes), then writes, then calls
        ``emit(event_type, scope, key, old_json, new_json)`` (JSON texts as
        exact-size bytes, None for no value) before any later write of the
        same key can emit. ``emit`` must not raise.
        """
        self._emit = None  # off while the rest changes
        self._admit = admit
        self._pending = pending
        self._bound = bound
        self._watch_all = watch_all
        self._watch_scopes = scopes if scopes is not None else set()
        self._watch_keys = keys if keys is not None else set()
        self._watch_pairs = pairs if pairs is not None else {}
        self._emit = emit

    cdef inline bint _watched(self, scope, key) except -1:
        if self._watch_all or scope in self._watch_scopes or key in self._watch_keys:
            return True
        if self._watch_pairs:
            keys = self._watch_pairs.get(scope)
            return keys is not None and key in <set>keys
        return False

    cdef PyThread_type_lock _stripe_for(self, scope, key) except NULL:
        cdef Py_hash_t h = PyObject_Hash(scope) * 1000003 ^ PyObject_Hash(key)
        return self._stripes[<size_t>h % N_STRIPES]

    cdef inline int _wait_admission(self) except -1:
        if self._admit is not None and len(self._pending) >= self._bound:
            self._admit()
        return 0

    cdef inline int _open(self) except -1:
        if self._st == NULL or self._closing:
            raise ClosedError("the store is closed")
        return 0

    cdef inline int _writable(self) except -1:
        if self._sealed:
            raise ClosedError("the store is closed")
        return 0

    cdef inline int _enter(self) except -1:
        # Before a GIL-free call: close() waits until every such call is out.
        if self._st == NULL or self._closing:
            raise ClosedError("the store is closed")
        self._busy += 1
        return 0

    @property
    def max_value_bytes(self):
        """Largest JSON text ``set`` accepts, in bytes (None: no limit)."""
        return None if self._max_value_bytes < 0 else self._max_value_bytes

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._st == NULL

    def _seal(self) -> None:
        """Refuse writes from now on (ClosedError), and return once every
        watched write already past that check has queued its event: the
        first step of State.close(), so that draining the queue drains
        everything. Reads go on until close()."""
        cdef int i
        self._sealed = True
        # A watched write holds its stripe from the check to its emit.
        for i in range(N_STRIPES):
            _lock(self._stripes[i])
            PyThread_release_lock(self._stripes[i])

    def _after_fork_in_child(self):
        # The parent's other threads are gone, with the stripes they held
        # and the calls they were in: fresh locks (the old ones, perhaps
        # held forever, are left as they are), nobody inside.
        cdef int i
        cdef PyThread_type_lock lk
        for i in range(N_STRIPES):
            lk = PyThread_allocate_lock()
            if lk == NULL:
                raise MemoryError("cannot allocate the store's locks")
            self._stripes[i] = lk
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
            raise error_for_rc(rc, RC_CODES, "close (final sync)")

    def __enter__(self):
        self._open()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- writes: with the GIL in memory, without it on disk -------------

    cdef int _put(self, const char *s, Py_ssize_t sl, const char *k, Py_ssize_t kl,
                  const char *v, Py_ssize_t n, _Out *out, int *existed) except? -32768:
        cdef ps_store *st
        cdef int rc
        self._writable()
        if not self._durable:
            self._open()
            return ps_put(self._st, s, sl, k, kl, v, n, &out.sink, existed)
        _out_init_nogil(out)
        self._enter()
        st = self._st
        with nogil:
            rc = ps_put(st, s, sl, k, kl, v, n, &out.sink, existed)
        self._busy -= 1
        return rc

    cdef int _put_if(self, const char *s, Py_ssize_t sl, const char *k, Py_ssize_t kl,
                     const char *v, Py_ssize_t n, const char *e,
                     Py_ssize_t elen) except? -32768:
        cdef ps_store *st
        cdef int rc
        self._writable()
        if not self._durable:
            self._open()
            return ps_put_if(self._st, s, sl, k, kl, v, n, e, elen)
        self._enter()
        st = self._st
        with nogil:
            rc = ps_put_if(st, s, sl, k, kl, v, n, e, elen)
        self._busy -= 1
        return rc

    cdef int _del(self, const char *s, Py_ssize_t sl, const char *k, Py_ssize_t kl,
                  _Out *out) except? -32768:
        cdef ps_store *st
        cdef int rc
        self._writable()
        if not self._durable:
            self._open()
            return ps_del(self._st, s, sl, k, kl, &out.sink)
        _out_init_nogil(out)
        self._enter()
        st = self._st
        with nogil:
            rc = ps_del(st, s, sl, k, kl, &out.sink)
        self._busy -= 1
        return rc

    # ---- the six functions ----------------------------------------------

    def set(self, scope, key, value):
        """Store ``value`` at (scope, key); return the previous value or None.

        >>> st = State()
        >>> st.set("users", "u1", {"name": "Ada"}) is None
        True
        >>> st.set("users", "u1", {"name": "Grace"})
        {'name': 'Ada'}
        """
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef const char *k = _text(key, &kl, "key")
        cdef bytes data = encode(value)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if self._max_value_bytes >= 0 and n > self._max_value_bytes:
            raise ValueTooLargeError(
                f"value of {n} bytes exceeds the configured max_value_bytes "
                f"limit of {self._max_value_bytes}")
        if self._emit is not None and self._watched(scope, key):
            return self._set_watched(scope, key, s, sl, k, kl, data)
        cdef _Out out
        _out_init(&out)
        cdef int existed = 0
        # (checks again that the store is open: encode() may run user code)
        cdef int rc = self._put(s, sl, k, kl, PyBytes_AS_STRING(data), n, &out, &existed)
        old = _take(&out)
        if rc:
            raise error_for_rc(rc, RC_CODES, "set")
        return decode(old) if existed else None

    cdef object _set_watched(self, scope, key, const char *s, Py_ssize_t sl,
                             const char *k, Py_ssize_t kl, bytes data):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef _Out out
        cdef int existed = 0
        cdef int rc
        self._wait_admission()
        cdef PyThread_type_lock lk = self._stripe_for(scope, key)
        _lock(lk)
        try:
            _out_init(&out)
            rc = self._put(s, sl, k, kl, PyBytes_AS_STRING(data), n, &out, &existed)
            old = _take(&out)
            if rc:
                raise error_for_rc(rc, RC_CODES, "set")
            if self._emit is not None:
                # An exact-size copy: orjson's own result keeps a 4 KiB block.
                self._emit(EV_UPDATED if existed else EV_CREATED, scope, key,
                           old if existed else None,
                           PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), n))
        finally:
            PyThread_release_lock(lk)
        return decode(old) if existed else None

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
            raise error_for_rc(rc, RC_CODES, "get")
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
            raise PayloadError(f"in: expected a (scope, key) pair, got {type(item).__name__}")
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(item[0], &sl, "scope")
        cdef const char *k = _text(item[1], &kl, "key")
        self._open()
        cdef int rc = ps_get(self._st, s, sl, k, kl, NULL)
        if rc and rc != PS_NOTFOUND:
            raise error_for_rc(rc, RC_CODES, "in")
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
            raise error_for_rc(rc, RC_CODES, "keys")
        return _unpack_names(data, count)

    def delete(self, scope, key):
        """Remove (scope, key); return the removed value or None.

        >>> st = State()
        >>> _ = st.set("s", "k", [1])
        >>> st.delete("s", "k"), st.delete("s", "k")
        ([1], None)
        """
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef const char *k = _text(key, &kl, "key")
        cdef _Out out
        cdef int rc
        cdef PyThread_type_lock lk = NULL
        if self._emit is not None and self._watched(scope, key):
            self._wait_admission()
            lk = self._stripe_for(scope, key)
            _lock(lk)
        try:
            _out_init(&out)
            rc = self._del(s, sl, k, kl, &out)
            old = _take(&out)
            if rc and rc != PS_NOTFOUND:
                raise error_for_rc(rc, RC_CODES, "delete")
            if lk != NULL and self._emit is not None:
                # As the engine does, deleting a missing key is an event too.
                self._emit(EV_DELETED, scope, key, old if rc == PS_OK else None, None)
        finally:
            if lk != NULL:
                PyThread_release_lock(lk)
        return decode(old) if rc == PS_OK else None

    def update(self, scope, key, ops):
        """Apply ``ops`` to the value at (scope, key) atomically.

        Returns an :class:`UpdateResult`. Ops that cannot apply are skipped
        and reported in ``errors``; the rest still apply, and the result is
        stored even when every op failed. A missing key starts as ``{}``.

        >>> st = State()
        >>> st.update("c", "hits", [{"type": "increment", "path": "n", "by": 1}])
        UpdateResult(old_value=None, new_value={'n': 1}, errors=[])
        """
        cdef Py_ssize_t sl, kl
        cdef const char *s = _text(scope, &sl, "scope")
        cdef const char *k = _text(key, &kl, "key")
        cdef PyThread_type_lock lk
        if self._emit is not None and self._watched(scope, key):
            self._wait_admission()
            lk = self._stripe_for(scope, key)
            _lock(lk)
            try:
                return self._update(scope, key, s, sl, k, kl, ops, True)
            finally:
                PyThread_release_lock(lk)
        return self._update(scope, key, s, sl, k, kl, ops, False)

    cdef UpdateResult _update(self, scope, key, const char *s, Py_ssize_t sl,
                              const char *k, Py_ssize_t kl, ops, bint watched):
        cdef _Out out
        _out_init(&out)
        cdef int rc
        cdef bytes new_data
        cdef const char *expect
        cdef Py_ssize_t elen
        cdef UpdateResult result
        cdef list errors
        while True:
            errors = []
            self._open()
            rc = ps_get(self._st, s, sl, k, kl, &out.sink)
            old_data = _take(&out)
            if rc == PS_NOTFOUND:
                old = None
                new = apply_into(None, True, ops, errors)
                expect = NULL
                elen = 0
            elif rc:
                raise error_for_rc(rc, RC_CODES, "update")
            else:
                old = decode(old_data)
                new = apply_into(copy_containers(old), False, ops, errors)
                expect = PyBytes_AS_STRING(old_data)
                elen = PyBytes_GET_SIZE(old_data)
            new_data = encode_trusted(new)
            if _race_hook is not None:
                _race_hook()
            # Compare-and-set against the bytes we read: if another thread
            # wrote this key meanwhile, start over from its value instead of
            # overwriting it. No lock is held while the ops run.
            rc = self._put_if(s, sl, k, kl, PyBytes_AS_STRING(new_data),
                              PyBytes_GET_SIZE(new_data), expect, elen)
            if rc == PS_CONFLICT:
                continue
            if rc:
                raise error_for_rc(rc, RC_CODES, "update")
            if watched and self._emit is not None:
                self._emit(EV_CREATED if expect == NULL else EV_UPDATED, scope, key,
                           old_data if expect != NULL else None,
                           PyBytes_FromStringAndSize(PyBytes_AS_STRING(new_data),
                                                     PyBytes_GET_SIZE(new_data)))
            result = UpdateResult.__new__(UpdateResult)
            result.old_value = old
            result.new_value = new
            result.errors = errors
            return result

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
            raise error_for_rc(rc, RC_CODES, "list")
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
            raise error_for_rc(rc, RC_CODES, "list_groups")
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
            raise error_for_rc(rc, RC_CODES, "share_events")
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
            raise error_for_rc(rc, RC_CODES, "items")
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
        pos = 0
        while True:
            pairs, pos = self.items_page(scope, pos, page)
            if not pairs:
                return
            for key, raw in pairs:
                yield key, decode(raw)

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
        out = {
            "scopes": s.scopes,
            "keys": s.keys,
            "key_bytes": s.key_bytes,
            "value_bytes": s.value_bytes,
            "dead_bytes": s.dead_bytes,
            "heap_bytes": s.heap_bytes,
        }
        if not self._durable:
            return out
        ps_recovery_get(self._st, &rep)
        out.update(
            path=self.path,
            sync=self.sync,
            log_bytes=s.log_bytes,
            log_dead_bytes=s.log_dead_bytes,
            compactions=s.compactions,
            sync_errors=s.sync_errors,
            recovery=_report_dict(&rep),
            per_scope=self._per_scope(),
        )
        return out

    cdef dict _per_scope(self):
        cdef _Out out
        _out_init(&out)
        cdef size_t count = 0, i
        cdef uint32_t n
        cdef int rc = ps_scope_stats(self._st, &out.sink, &count)
        data = _take(&out)
        if rc:
            raise error_for_rc(rc, RC_CODES, "stats")
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
        cdef dict per = {}
        for i in range(count):
            n = _le32(p)
            name = PyUnicode_DecodeUTF8(<const char *>p + 4, n, NULL)
            p += 4 + n
            per[name] = {"keys": _le64(p), "live_bytes": _le64(p + 8),
                         "dead_bytes": _le64(p + 16), "file_bytes": _le64(p + 24)}
            p += 32
        return per

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
        with nogil:
            rc = ps_sync(st)
        self._busy -= 1
        if rc:
            raise error_for_rc(rc, RC_CODES, "flush")

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
        with nogil:
            rc = ps_compact(st, s, sl)
        self._busy -= 1
        if rc:
            raise error_for_rc(rc, RC_CODES, "compact")

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
        with nogil:
            rc = ps_check(st, &rep)
        self._busy -= 1
        if rc and rc != PS_CORRUPT:
            raise error_for_rc(rc, RC_CODES, "check")
        return {
            "ok": rc == PS_OK,
            "logs": rep.logs,
            "records": rep.records,
            "problem": rep.message.decode("utf-8", "replace") if rc else None,
        }


cdef inline uint32_t _le32(const unsigned char *p) noexcept:
    return p[0] | (<uint32_t>p[1] << 8) | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24)


cdef inline uint64_t _le64(const unsigned char *p) noexcept:
    return _le32(p) | (<uint64_t>_le32(p + 4) << 32)
