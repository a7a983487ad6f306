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
from cpython.dict cimport PyDict_Copy
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.ref cimport Py_INCREF, Py_DECREF

from pystate.errors import InvalidValueError

cdef extern from "<string.h>" nogil:
    # GNU extension; CMake compiles every module with _GNU_SOURCE.
    void *memmem(const void *haystack, size_t hlen, const void *needle, size_t nlen)

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
    # memmem over the text and no walk over the value.
    if memmem(PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data), b"null", 4) != NULL:
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


cdef object _check_int(object v, str where):
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
            f"{where}: integer {v} is outside the 64-bit range JSON values can hold")
    return v


cdef object to_json(object v, str where):
    """A private copy of ``v`` made of plain JSON types only (dict with str
    keys, list, str, int, float, bool, None), refusing what JSON cannot hold.

    Update ops insert values into stored documents: copying them means the
    caller's objects never alias the result, and normalising them (tuple ->
    list, str subclass -> str, datetime -> its JSON string) means the value
    returned is the value a later read gives back.
    """
    return _to_json(v, where, 0)


cdef object _to_json(object v, str where, int depth):
    cdef type t = type(v)
    cdef dict d
    cdef list out
    if t is str or v is None or t is bool:
        return v
    if t is int:
        return _check_int(v, where)
    if t is float:
        if not isfinite(<double>v):
            raise InvalidValueError(
                f"{where}: NaN and infinities cannot be represented in JSON")
        return v
    if depth >= MAX_DEPTH:
        raise InvalidValueError(f"{where}: value nests deeper than {MAX_DEPTH} levels")
    if t is dict:
        d = {}
        for k, x in (<dict>v).items():
            if type(k) is not str:
                if not isinstance(k, str):
                    raise InvalidValueError(
                        f"{where}: object keys must be strings, got {type(k).__name__}")
                k = str.__str__(k)
            d[k] = _to_json(x, where, depth + 1)
        return d
    if t is list or t is tuple:
        out = []
        for x in v:
            out.append(_to_json(x, where, depth + 1))
        return out
    # Subclasses and types orjson encodes natively (datetime, UUID, enum,
    # dataclass...): let orjson define their JSON, then read that back.
    return _loads(encode(v))


cdef object copy_containers(object v):
    """A copy of a decoded JSON value sharing no dict or list with it
    (strings and numbers are immutable and are shared)."""
    cdef type t = type(v)
    cdef dict d
    cdef list l
    cdef Py_ssize_t i, n
    if t is dict:
        d = PyDict_Copy(v)
        for k, x in (<dict>v).items():
            if type(x) is dict or type(x) is list:
                d[k] = copy_containers(x)
        return d
    if t is list:
        n = PyList_GET_SIZE(v)
        l = list(v)
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


def json_copy(value, where: str = "value"):
    """A plain-JSON private copy of ``value`` (see to_json)."""
    return to_json(value, where)
