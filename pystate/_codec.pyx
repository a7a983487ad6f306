# cython: language_level=3, boundscheck=False, wraparound=False
"""The one place where pystate turns values into JSON text and back (orjson).

Stored values are JSON, and only JSON: anything orjson cannot encode is
refused, and so are NaN and the infinities, which JSON cannot write
(orjson would silently write them as ``null``, losing data). Refusal
raises :class:`pystate.InvalidValueError` before anything is stored.

>>> from pystate import _codec
>>> _codec.dumps({"a": [1, 2.5, None]})
b'{"a":[1,2.5,null]}'
>>> _codec.loads(b'{"a":1}')
{'a': 1}
"""
import dataclasses
import enum

import orjson

from libc.math cimport isfinite
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Copy, PyDict_Next
from cpython.ref cimport PyObject
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_GetSlice
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.ref cimport Py_INCREF, Py_DECREF
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from pystate._cdefs cimport PS_OK, ps_json_check_ints
from pystate.errors import InvalidValueError, wide_integer

cdef extern from "<string.h>" nogil:
    const void *memchr(const void *s, int c, size_t n)
    int memcmp(const void *a, const void *b, size_t n)


cdef inline bint _has_null(bytes data):
    # memchr is vectorised; glibc's general memmem is several times slower
    # on short texts like ours.
    cdef const char *p = PyBytes_AS_STRING(data)
    cdef const char *end = p + PyBytes_GET_SIZE(data)
    while True:
        p = <const char *>memchr(p, b'n', end - p)
        if p == NULL or end - p < 4:
            return False
        if memcmp(p, b"null", 4) == 0:
            return True
        p += 1

cdef object _dumps = orjson.dumps
cdef object _loads = orjson.loads

# orjson refuses to encode values nested deeper than this.
cdef enum:
    MAX_DEPTH = 254


cdef bytes encode(object value):
    """JSON text of ``value``; InvalidValueError when it is not JSON."""
    cdef bytes data
    try:
        data = _dumps(value)
    except TypeError as e:  # orjson.JSONEncodeError is a TypeError
        raise InvalidValueError(f"value is not JSON: {e}") from None
    # orjson writes NaN and the infinities as null. Only when a null is in
    # the output can one have been a float, so the common case costs one
    # scan of the text and no walk over the value.
    if _has_null(data):
        if _has_nonfinite(value, 0):
            raise InvalidValueError(
                "value contains NaN or an infinity, which JSON cannot represent")
    return data


cdef bytes encode_trusted(object value):
    """JSON text of a value built only from JSON parts (decoded values and
    the output of to_json), which cannot hold NaN or foreign types."""
    try:
        return _dumps(value)
    except TypeError as e:
        raise InvalidValueError(f"value is not JSON: {e}") from None


cdef object decode(object data):
    return _loads(data)


cdef bint _has_nonfinite(object v, int depth) except -1:
    cdef type t = type(v)
    if depth > MAX_DEPTH:
        return False  # orjson already refused anything this deep
    if t is float or isinstance(v, float):
        return not isfinite(<double>v)
    if t is dict or isinstance(v, dict):
        for x in (<dict>v).values():
            if _has_nonfinite(x, depth + 1):
                return True
        return False
    if t is list or t is tuple or isinstance(v, (list, tuple)):
        for x in v:
            if _has_nonfinite(x, depth + 1):
                return True
        return False
    if isinstance(v, enum.Enum):
        return _has_nonfinite(v.value, depth + 1)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        for f in dataclasses.fields(v):
            if _has_nonfinite(getattr(v, f.name), depth + 1):
                return True
    return False


cdef str _where(Py_ssize_t index, str field):
    # Built only when there is an error to report: formatting costs more
    # than the check itself.
    return field if index < 0 else f"ops[{index}].{field}"


cdef object _check_int(object v, Py_ssize_t index, str field):
    cdef int overflow = 0
    PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow > 0:
        try:
            PyLong_AsUnsignedLongLong(v)
        except OverflowError:
            overflow = 2
        else:
            overflow = 0
    if overflow:
        raise InvalidValueError(
            f"{_where(index, field)}: integer {v} is outside the 64-bit range "
            "JSON values can hold")
    return v


cdef object to_json(object v, Py_ssize_t index, str field):
    """A private copy of ``v`` made of plain JSON types only (dict with str
    keys, list, str, int, float, bool, None), refusing what JSON cannot hold.
    ``index`` and ``field`` name the value in error messages (``ops[i].field``,
    or just ``field`` when index < 0).

    Update ops insert values into stored documents: copying them means the
    caller's objects never alias the result, and normalising them (tuple ->
    list, str subclass -> str, datetime -> its JSON string) means the value
    returned is the value a later read gives back.
    """
    cdef type t = type(v)
    # Scalars first: most operands are one.
    if t is str or v is None or t is bool:
        return v
    if t is int:
        return _check_int(v, index, field)
    return _to_json(v, index, field, 0)


cdef object _to_json(object v, Py_ssize_t index, str field, int depth):
    cdef type t = type(v)
    cdef dict d
    cdef list out
    if t is str or v is None or t is bool:
        return v
    if t is int:
        return _check_int(v, index, field)
    if t is float:
        if not isfinite(<double>v):
            raise InvalidValueError(
                f"{_where(index, field)}: NaN and infinities cannot be represented in JSON")
        return v
    if depth >= MAX_DEPTH:
        raise InvalidValueError(
            f"{_where(index, field)}: value nests deeper than {MAX_DEPTH} levels")
    if t is dict:
        d = {}
        for k, x in (<dict>v).items():
            if type(k) is not str:
                if not isinstance(k, str):
                    raise InvalidValueError(
                        f"{_where(index, field)}: object keys must be strings, "
                        f"got {type(k).__name__}")
                k = str.__str__(k)
            d[k] = _to_json(x, index, field, depth + 1)
        return d
    if t is list or t is tuple:
        out = []
        for x in v:
            out.append(_to_json(x, index, field, depth + 1))
        return out
    # Subclasses and types orjson encodes natively (datetime, UUID, enum,
    # dataclass...): let orjson define their JSON, then read that back.
    try:
        return _loads(encode(v))
    except InvalidValueError as e:
        raise InvalidValueError(f"{_where(index, field)}: {e.message}") from None


cdef object copy_containers(object v):
    """A copy of a decoded JSON value sharing no dict or list with it
    (strings and numbers are immutable and are shared)."""
    cdef type t = type(v)
    cdef dict d
    cdef list l
    cdef Py_ssize_t i, n
    cdef PyObject *key
    cdef PyObject *val
    cdef Py_ssize_t pos = 0
    if t is dict:
        d = PyDict_Copy(v)
        while PyDict_Next(v, &pos, &key, &val):
            if type(<object>val) is dict or type(<object>val) is list:
                d[<object>key] = copy_containers(<object>val)
        return d
    if t is list:
        n = PyList_GET_SIZE(v)
        l = PyList_GetSlice(v, 0, n)
        for i in range(n):
            x = <object>PyList_GET_ITEM(l, i)
            if type(x) is dict or type(x) is list:
                l[i] = copy_containers(x)
        return l
    return v


def dumps(value) -> bytes:
    """Encode ``value`` as compact JSON; InvalidValueError if it is not JSON."""
    return encode(value)


def loads(data):
    """Decode JSON text (bytes, bytearray, memoryview or str)."""
    return _loads(data)


def loads_text(data):
    """Decode JSON text from outside (a command line, a file, a frame) by
    the API's rules: as loads, and an integer beyond the 64-bit range raises
    InvalidValueError instead of turning into a float.

    >>> loads_text(b'[1, 18446744073709551615]')
    [1, 18446744073709551615]
    """
    cdef const char *p
    cdef Py_ssize_t n
    cdef size_t at = 0, width = 0
    value = _loads(data)
    if type(data) is str:
        # The UTF-8 form CPython caches: no copy for the common ASCII text.
        p = PyUnicode_AsUTF8AndSize(data, &n)
    else:
        if type(data) is not bytes:
            data = bytes(data)
        p = PyBytes_AS_STRING(data)
        n = PyBytes_GET_SIZE(data)
    if ps_json_check_ints(p, <size_t>n, &at, &width) != PS_OK:
        raise wide_integer(p[at:at + width], at) from None
    return value


def json_copy(value, where: str = "value"):
    """A plain-JSON private copy of ``value`` (see to_json)."""
    return to_json(value, -1, where)
