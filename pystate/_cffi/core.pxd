# The C types of pystate/_cffi/core.py when Cython compiles it (CPython):
# the helpers every call goes through, as C functions rather than Python
# calls. PyPy imports the .py as it is.
cimport cython

@cython.locals(ident="unsigned long")
cdef tuple _thread_buffer()
@cython.locals(m=tuple)
cdef tuple _names(object scope, object key, bint keep=*)
cdef object _take(object buf)
cdef Py_ssize_t _INLINE, _DATA_AT
@cython.locals(n=Py_ssize_t)
cdef object _read(object g, bytes s, bytes k, str what, tuple t)
