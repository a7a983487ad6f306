# The C types of pystate/_codec.py, which Cython compiles in pure-Python
# mode, and its C entry points for the other compiled modules: _core.pyx
# and _ops.py cimport the cpdef functions, which Python code (the cffi
# binding) calls by name as well.
cimport cython
from cpython.ref cimport PyObject

cdef extern from "_decode.h":
    # New reference; NotImplemented when orjson must decide (pystate/_decode.c).
    object ps_json_decode(const char *text, Py_ssize_t n)

cdef int MAX_DEPTH
cdef object _I64_MIN, _U64_MAX, _dumps, _loads

# The JSON boundary: every encode and decode in pystate goes through here.
@cython.locals(data=bytes)
cpdef bytes encode(object value)
cpdef bytes encode_trusted(object value)
@cython.locals(value=object)
cpdef object decode(object data)
cpdef object to_json(object v, Py_ssize_t index, str field)
@cython.locals(t=type, d=dict, out=list, pos=Py_ssize_t, key="PyObject *", val="PyObject *",
               n=Py_ssize_t, i=Py_ssize_t)
cpdef object copy_containers(object v)

cdef bint _finite(double x) noexcept
@cython.locals(p="const char *", end="const char *")
cdef bint _has_null(bytes data)
@cython.locals(t=type)
cdef bint _has_nonfinite(object v, int depth) except -1
cdef str _where(Py_ssize_t index, str field)
@cython.locals(overflow=int, fits=bint)
cdef object _check_int(object v, Py_ssize_t index, str field)
@cython.locals(t=type, src=dict, d=dict, out=list)
cdef object _to_json(object v, Py_ssize_t index, str field, int depth)
@cython.locals(p="const char *", n=Py_ssize_t, at=size_t, width=size_t)
cdef int _refuse_wide_integers(object data) except -1
