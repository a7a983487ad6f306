# The types of pystate/writes.py when Cython compiles it (CPython): the
# write path's state as C fields, its helpers as C functions.
cimport cython
from libc.stdint cimport uint64_t
from pystate._core cimport Store as KvStore, _Names

@cython.freelist(8)  # one per update, usually dropped at once
cdef class UpdateResult:
    cdef object _old
    cdef object _new
    cdef list _errors

@cython.locals(r=UpdateResult)
cdef UpdateResult _result(object old, object new, list errors)

cdef class Writes:
    cdef readonly object storage
    cdef readonly object max_value_bytes
    cdef Py_ssize_t _limit
    cdef bint _sealed
    cdef object _emit
    cdef object _admit
    cdef object _pending
    cdef Py_ssize_t _bound
    cdef bint _all
    cdef set _scopes
    cdef set _keys
    cdef dict _pairs
    cdef list _stripes
    cdef readonly list _turns  # (readable: tests check no turn is left held)
    cdef object _put
    cdef object _put_if
    cdef object _remove
    cdef object _get_seen
    cdef object _put_seen
    cdef bint _native
    cdef KvStore _kv                  # the Cython binding's Store, called in C; else None

    cpdef bint _watched(self, object scope, object key) except -1
    cdef object _enter(self, object scope, object key)
    @cython.locals(kv=KvStore, errors=list, seen=uint64_t, names=_Names)
    cdef UpdateResult _update(self, object scope, object key, object ops, bint watched)
