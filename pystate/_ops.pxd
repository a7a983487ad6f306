# The C types of pystate/_ops.py, which Cython compiles in pure-Python
# mode, and its C entry points (cpdef: the write path, pystate/writes.py,
# calls parse_ops and apply_parsed directly; apply_into is both in one).
cimport cython
from cpython.ref cimport PyObject

cdef extern from *:
    bint add_overflow "__builtin_add_overflow" (long long a, long long b, long long *r)
    bint sub_overflow "__builtin_sub_overflow" (long long a, long long b, long long *r)
    bint PyUnicode_IS_ASCII(object s)

cdef Py_ssize_t MAX_PATH_DEPTH, MAX_SEGMENT_BYTES, MAX_VALUE_DEPTH, MAX_VALUE_KEYS
cdef int K_SET, K_MERGE, K_INCREMENT, K_DECREMENT, K_APPEND, K_REMOVE
cdef str _DOC_URL, _F_TYPE, _F_PATH, _F_VALUE, _F_BY, _S_SET, _S_INCREMENT, _S_APPEND
cdef frozenset _PROTO
cdef dict _KINDS
cdef tuple _ROOT, _NAMES
cdef object _I64_MIN, _I64_MAX, _U64_MAX, _MISSING

@cython.final
@cython.no_gc
@cython.freelist(16)  # every update makes one per op and drops them
cdef class _Op:
    cdef int kind
    cdef object path     # str for set/increment/decrement/remove, tuple of segments otherwise
    cdef object operand  # the value (private JSON copy) or `by`
    cdef object invalid  # the error dict of a path that cannot apply, or None
    cdef _Op next        # the next op of the request, or None

cpdef object apply_into(object current, bint missing, object ops, list errors)
@cython.locals(first=_Op, last=_Op, n=Py_ssize_t, i=Py_ssize_t, op=_Op, kind=int)
cpdef _Op parse_ops(object ops)
@cython.locals(fresh=bint, i=Py_ssize_t, op=_Op, kind=int,
               path=str, name=str, down=bint, nested=bint, doc=dict, segs=tuple, last=Py_ssize_t)
cpdef object apply_parsed(object current, bint missing, _Op parsed, list errors)

cdef dict _error(Py_ssize_t index, str code, str message)
@cython.locals(t=type)
cdef str _type_name(object v)
cdef str _label(str path)
cdef str _segments_label(object path)
cdef str _describe(object v)
cdef str _at(Py_ssize_t i, str field)
cdef str _need_str(object v, Py_ssize_t i, str field)
@cython.locals(segs=list, j=Py_ssize_t)
cdef object _need_path(object v, Py_ssize_t i, str field)
@cython.locals(overflow=int, fits=bint)
cdef object _need_by(object v, Py_ssize_t i, str field)
cdef int _kind_of(object t, Py_ssize_t i) except -1
@cython.locals(pos=Py_ssize_t, k="PyObject *", v_ref="PyObject *", t_ref="PyObject *",
               path_ref="PyObject *", value_ref="PyObject *", by_ref="PyObject *")
cdef int _parse(object op, Py_ssize_t i, _Op out) except -1
@cython.locals(kind=int)
cdef int _parse_fields(object op, Py_ssize_t i, _Op out, object t, object path, object value,
                       object by) except -1
@cython.locals(segs=tuple, seg=str)
cdef object _path_error(str op, Py_ssize_t index, object path)
@cython.locals(nbytes=Py_ssize_t, ascii=bint)
cdef object _segment_error(str op, Py_ssize_t index, str seg)
@cython.locals(nbytes=Py_ssize_t)
cdef Py_ssize_t _utf8_size(Py_ssize_t index, str seg) except -1
cdef object _field_error(str op, Py_ssize_t index, str path)
@cython.locals(best=Py_ssize_t, d=Py_ssize_t, t=type)
cdef Py_ssize_t _depth(object v) except -1
@cython.locals(obj=dict, depth=Py_ssize_t)
cdef bint _valid_merge_value(Py_ssize_t index, object value, list errors) except -1
@cython.locals(t=type, a="long long", b="long long", r="long long", overflow=int,
               x=double, y=double, f=double)
cdef object _step(object v, object by, bint down)
@cython.locals(node=dict)
cdef dict _walk_or_create(dict root, object path)
cdef object _initial_append(object value)
@cython.locals(t=type)
cdef object _append_to(object target, object value, str label, Py_ssize_t index, list errors)
