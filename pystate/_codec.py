# cython: language_level=3, boundscheck=False, wraparound=False
"""The one place where pystate turns values into JSON text and back.

Stored values are JSON, and only JSON: anything that is not JSON is
refused, and so are NaN and the infinities, which JSON cannot write (orjson
would silently write them as ``null``, losing data), integers outside the
64-bit range, object keys that are not strings and lone surrogates. Refusal
raises :class:`pystate.InvalidValueError` before anything is stored.

One source, two builds: on CPython this file is compiled by Cython (the
types come from ``_codec.pxd``; the ``cython.compiled`` branches use the C
API where it pays), and on PyPy it is imported as plain Python. Values are
encoded by orjson where it exists (CPython) and by the standard ``json``
module where it does not (PyPy); both write compact JSON that decodes to the
same values and refuse the same values with the same messages. (They spell
some floats differently: ``1e+16`` from json, ``1e16`` from orjson.)

>>> from pystate import _codec
>>> _codec.dumps({"a": [1, 2.5, None]})
b'{"a":[1,2.5,null]}'
>>> _codec.loads(b'{"a":1}')
{'a': 1}
"""

import dataclasses
import datetime
import enum
import json as _json
import uuid

try:
    import cython
except ImportError:  # plain Python, and Cython is not installed (PyPy)
    import types

    cython = types.SimpleNamespace(compiled=False)

from pystate.errors import InvalidValueError, wide_integer

if cython.compiled:
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_GET_SIZE
    from cython.cimports.cpython.dict import PyDict_Copy, PyDict_Next
    from cython.cimports.cpython.list import PyList_GET_ITEM, PyList_GET_SIZE, PyList_GetSlice
    from cython.cimports.cpython.long import PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
    from cython.cimports.cpython.unicode import PyUnicode_AsUTF8AndSize
    from cython.cimports.libc.math import isfinite
    from cython.cimports.libc.string import memchr, memcmp
    from cython.cimports.pystate._cdefs import PS_OK, ps_json_check_ints
else:
    from math import isfinite

try:
    import orjson
except ImportError:  # PyPy: orjson has no build for it
    orjson = None

__all__ = ["dumps", "loads", "loads_text", "json_copy", "encode", "encode_trusted", "decode", "to_json",
           "copy_containers"]

# orjson refuses to encode values nested deeper than this; so does the
# json-module encoder, so both accept the same values.
MAX_DEPTH = 254
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1


# ---- the json-module encoder, orjson's twin (used where orjson is missing;
# the tests run it on CPython too, against orjson) ------------------------

def _finite(x):
    # Typed double (_codec.pxd): C's isfinite is generic, and would take a
    # long double given one, which costs more.
    return isfinite(x)


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


_encoder = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_decoder = _json.JSONDecoder(parse_constant=_refuse_constant)


def _plain(v, depth):
    """``v`` as the json module's types, as orjson would encode it: NaN and
    the infinities as null (encode() then refuses them), native types
    (datetime, UUID, enum, dataclass) by orjson's rules; a TypeError with
    orjson's message for anything orjson refuses."""
    if v is None or v is True or v is False or type(v) is str:
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        if not _I64_MIN <= v <= _U64_MAX:
            raise TypeError("Integer exceeds 64-bit range")
        return int(v)
    if isinstance(v, float):
        return float(v) if _finite(v) else None
    if isinstance(v, str):
        return str.__str__(v)
    if depth >= MAX_DEPTH:
        raise TypeError("Recursion limit reached")
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            if type(k) is not str:  # orjson refuses str subclasses as keys too
                raise TypeError("Dict key must be str")
            out[k] = _plain(x, depth + 1)
        return out
    if isinstance(v, (list, tuple)):
        return [_plain(x, depth + 1) for x in v]
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, enum.Enum):
        return _plain(v.value, depth + 1)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name), depth + 1) for f in dataclasses.fields(v)}
    raise TypeError(f"Type is not JSON serializable: {type(v).__name__}")


def json_dumps(value):
    """orjson.dumps, with the json module (same values, same refusals)."""
    try:
        return _encoder.encode(_plain(value, 0)).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: not UTF-8, so not JSON text (orjson's rule).
        raise TypeError("str is not valid UTF-8: surrogates not allowed") from None


def json_loads(data):
    """orjson.loads, with the json module."""
    if not isinstance(data, str):
        data = bytes(data).decode("utf-8")
    # Plain json.loads is the fast path (PyPy's decoder is fast only without
    # options); the strict decoder, which refuses NaN and the infinities as
    # orjson does, runs only on a text that may hold one.
    value = _json.loads(data)
    if "NaN" in data or "Infinity" in data:
        _decoder.decode(data)
    return value


_dumps = json_dumps if orjson is None else orjson.dumps
_loads = json_loads if orjson is None else orjson.loads


# ---- encoding -----------------------------------------------------------------

def _has_null(data):
    if cython.compiled:
        # memchr is vectorised; glibc's general memmem is several times
        # slower on short texts like ours.
        p = PyBytes_AS_STRING(data)
        end = p + PyBytes_GET_SIZE(data)
        while True:
            p = cython.cast(cython.p_const_char, memchr(p, ord("n"), end - p))
            if p == cython.NULL or end - p < 4:
                return False
            if memcmp(p, b"null", 4) == 0:
                return True
            p += 1
    else:
        return b"null" in data


def _has_nonfinite(v, depth):
    t = type(v)
    if depth > MAX_DEPTH:
        return False  # the encoder already refused anything this deep
    if t is float or isinstance(v, float):
        return not _finite(v)
    if t is dict or isinstance(v, dict):
        for x in v.values():
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


def encode(value):
    """JSON text of ``value``; InvalidValueError when it is not JSON."""
    try:
        data = _dumps(value)
    except TypeError as e:  # orjson.JSONEncodeError is a TypeError
        raise InvalidValueError(f"value is not JSON: {e}") from None
    # The encoders write NaN and the infinities as null: only when a null
    # is in the text can one have been a float, so the common case costs
    # one scan of the text and no walk over the value.
    if _has_null(data):
        if _has_nonfinite(value, 0):
            raise InvalidValueError(
                "value contains NaN or an infinity, which JSON cannot represent")
    return data


def encode_trusted(value):
    """JSON text of a value built only from JSON parts (decoded values and
    the output of to_json), which cannot hold NaN or foreign types."""
    try:
        return _dumps(value)
    except TypeError as e:
        raise InvalidValueError(f"value is not JSON: {e}") from None


def decode(data):
    """The value of JSON text (bytes, bytearray, memoryview or str)."""
    if cython.compiled:
        # Stored texts come as bytes; pystate/_decode.c takes the common
        # ones, in one pass, and leaves the rest to orjson.
        if type(data) is bytes:
            value = ps_json_decode(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            if value is not NotImplemented:
                return value
    return _loads(data)


def _fast_decode(data):
    """Testing aid: what pystate/_decode.c makes of ``data`` (bytes): its
    value, or NotImplemented where it leaves the text to orjson (always,
    uncompiled)."""
    if type(data) is not bytes:
        raise TypeError("_fast_decode takes bytes")
    if cython.compiled:
        return ps_json_decode(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    return NotImplemented


# ---- private JSON copies of values from outside --------------------------------

def _where(index, field):
    # Built only when there is an error to report: formatting costs more
    # than the check itself.
    return field if index < 0 else f"ops[{index}].{field}"


def _check_int(v, index, field):
    if cython.compiled:
        # The range test without creating or comparing int objects.
        overflow = 0
        PyLong_AsLongLongAndOverflow(v, cython.address(overflow))
        if overflow > 0:
            try:
                PyLong_AsUnsignedLongLong(v)
            except OverflowError:
                pass
            else:
                overflow = 0
        fits = overflow == 0
    else:
        fits = _I64_MIN <= v <= _U64_MAX
    if not fits:
        raise InvalidValueError(
            f"{_where(index, field)}: integer {v} is outside the 64-bit range "
            "JSON values can hold")
    return v


def to_json(v, index, field):
    """A private copy of ``v`` made of plain JSON types only (dict with str
    keys, list, str, int, float, bool, None), refusing what JSON cannot hold.
    ``index`` and ``field`` name the value in error messages (``ops[i].field``,
    or just ``field`` when index < 0).

    Update ops insert values into stored documents: copying them means the
    caller's objects never alias the result, and normalising them (tuple ->
    list, str subclass -> str, datetime -> its JSON string) means the value
    returned is the value a later read gives back.
    """
    t = type(v)
    # Scalars first: most operands are one.
    if t is str or v is None or t is bool:
        return v
    if t is int:
        return _check_int(v, index, field)
    return _to_json(v, index, field, 0)


def _to_json(v, index, field, depth):
    t = type(v)
    if t is str or v is None or t is bool:
        return v
    if t is int:
        return _check_int(v, index, field)
    if t is float:
        if not _finite(v):
            raise InvalidValueError(
                f"{_where(index, field)}: NaN and infinities cannot be represented in JSON")
        return v
    if depth >= MAX_DEPTH:
        raise InvalidValueError(
            f"{_where(index, field)}: value nests deeper than {MAX_DEPTH} levels")
    if t is dict:
        src = v  # typed (_codec.pxd): the compiled loop walks the dict itself
        d = {}
        for k, x in src.items():
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
    # Subclasses and natively encoded types (datetime, UUID, enum,
    # dataclass...): the encoder defines their JSON; read that back.
    try:
        return _loads(encode(v))
    except InvalidValueError as e:
        raise InvalidValueError(f"{_where(index, field)}: {e.message}") from None


def copy_containers(v):
    """A copy of a decoded JSON value sharing no dict or list with it
    (strings and numbers are immutable and are shared)."""
    t = type(v)
    if t is dict:
        if cython.compiled:
            # Every update copies the stored value: copy the dict whole,
            # then walk the original on borrowed references for the
            # containers to copy in turn.
            d = PyDict_Copy(v)
            pos = 0
            while PyDict_Next(v, cython.address(pos), cython.address(key), cython.address(val)):
                if type(cython.cast(object, val)) is dict or type(cython.cast(object, val)) is list:
                    d[cython.cast(object, key)] = copy_containers(cython.cast(object, val))
        else:
            d = v.copy()
            for k, x in v.items():
                if type(x) is dict or type(x) is list:
                    d[k] = copy_containers(x)
        return d
    if t is list:
        if cython.compiled:
            n = PyList_GET_SIZE(v)
            out = PyList_GetSlice(v, 0, n)
            for i in range(n):
                x = cython.cast(object, PyList_GET_ITEM(out, i))
                if type(x) is dict or type(x) is list:
                    out[i] = copy_containers(x)
        else:
            out = v[:]
            for i, x in enumerate(out):
                if type(x) is dict or type(x) is list:
                    out[i] = copy_containers(x)
        return out
    return v


# ---- the Python API -------------------------------------------------------------

def dumps(value):
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
    value = _loads(data)
    _refuse_wide_integers(data)
    return value


def _refuse_wide_integers(data):
    # The C core's scanner finds the integers too wide for 64 bits, which
    # the decoders turn into floats without a word.
    if cython.compiled:
        at = 0
        width = 0
        if type(data) is str:
            # The UTF-8 form CPython caches: no copy for the common ASCII text.
            p = PyUnicode_AsUTF8AndSize(data, cython.address(n))
        else:
            if type(data) is not bytes:
                data = bytes(data)
            p = PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        if ps_json_check_ints(p, n, cython.address(at), cython.address(width)) != PS_OK:
            raise wide_integer(p[at:at + width], at) from None
    else:
        from pystate._cffi._native import ffi, lib

        text = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        buf = text if isinstance(text, bytes) else ffi.from_buffer(text)
        found = ffi.new("size_t[2]")
        if lib.ps_json_check_ints(buf, len(text), found, found + 1) != lib.PS_OK:
            at, n = found[0], found[1]
            raise wide_integer(bytes(text[at:at + n]), at) from None


def json_copy(value, where: str = "value"):
    """A plain-JSON private copy of ``value`` (see to_json)."""
    return to_json(value, -1, where)
