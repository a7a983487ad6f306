# The C face of pystate/_core.pyx's Store: its fields, and the raw writes
# and read the compiled write path (pystate/writes.py) calls directly,
# without a Python call per write. Other callers use them by name.
cimport cython
from libc.stdint cimport uint64_t
from pystate._cdefs cimport ps_store

# A scope's and a key's UTF-8, borrowed from their str objects: valid while
# those live (CPython keeps the UTF-8 with the string).
ctypedef struct _Names:
    const char *scope
    Py_ssize_t slen
    const char *key
    Py_ssize_t klen

@cython.final
cdef class Store:
    cdef ps_store *_st
    cdef bint _closing
    cdef int _busy                    # threads inside a GIL-free call
    cdef readonly object path         # the store directory, or None
    cdef readonly str sync            # the sync mode, or None in memory
    cdef readonly bint read_only      # opened read_only: writes raise ReadOnlyError
    cdef object _hook                 # testing aid, kept alive for C
    cdef object __weakref__           # a feed refers to its store weakly
    # A file store: its writes survive a crash, and release the GIL.
    cdef readonly bint durable

    cdef int _open(self) except -1
    cdef int _enter(self) except -1
    # Each returns a new reference to a bytes object of its own, or None.
    cpdef object put(self, object scope, object key, bytes data)
    cpdef bint put_if(self, object scope, object key, bytes data, bytes expect) except -1
    cpdef object remove(self, object scope, object key)
    # The JSON text at (scope, key) or None, and in *seen (NULL: not
    # wanted) the read's token for put_seen (ps_get_seen).
    cdef object _get_seen(self, object scope, object key, uint64_t *seen)
    # _get_seen of names _prefetch checked.
    cdef object _read_seen(self, const _Names *n, uint64_t *seen)
    cpdef bint put_seen(self, uint64_t seen, bytes data) except -1
    cdef int _prefetch(self, object scope, object key, _Names *n) except -1
