"""The JSON boundary of the cffi backend, in plain Python: the same rules as
the Cython codec (``pystate/_codec.pyx``), which the parity tests hold it to.

Values are encoded by orjson where it exists (CPython) and by the
standard ``json`` module where it does not (PyPy, which orjson does not
support). Both write compact JSON that decodes to the same values, and
refuse the same values with the same messages: anything that is not JSON,
NaN and the infinities, integers outside the 64-bit range, object keys
that are not strings, lone surrogates. (They spell some floats
differently: ``1e+16`` from json, ``1e16`` from orjson.)

>>> from pystate._cffi import codec
>>> codec.dumps({"a": [1, 2.5, None]})
b'{"a":[1,2.5,null]}'
>>> codec.loads(b'{"a":1}')
{'a': 1}
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import uuid
from typing import Any

from pystate.errors import InvalidValueError, wide_integer

__all__ = ["dumps", "loads", "loads_text", "json_copy", "encode", "encode_trusted", "decode", "to_json",
           "copy_containers"]

# orjson refuses to encode values nested deeper than this; so does the
# fallback, so both accept the same values.
MAX_DEPTH = 254
_I64_MIN = -(1 << 63)
_U64_MAX = (1 << 64) - 1

import json as _json

try:
    import orjson
except ImportError:  # PyPy
    orjson = None


# ---- the json-module encoder, orjson's twin (used where orjson is missing;
# the parity tests run it on CPython too, against orjson) ----------------

def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_encoder = _json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_decoder = _json.JSONDecoder(parse_constant=_refuse_constant)


def _plain(v: Any, depth: int) -> Any:
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
        return float(v) if math.isfinite(v) else None
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


def json_dumps(value: Any) -> bytes:
    """orjson.dumps, with the json module (same values, same refusals)."""
    try:
        return _encoder.encode(_plain(value, 0)).encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: not UTF-8, so not JSON text (orjson's rule).
        raise TypeError("str is not valid UTF-8: surrogates not allowed") from None


def json_loads(data: Any) -> Any:
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


def _has_nonfinite(v: Any, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False  # the encoder already refused anything this deep
    if isinstance(v, float):
        return not math.isfinite(v)
    if isinstance(v, dict):
        return any(_has_nonfinite(x, depth + 1) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(_has_nonfinite(x, depth + 1) for x in v)
    if isinstance(v, enum.Enum):
        return _has_nonfinite(v.value, depth + 1)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return any(_has_nonfinite(getattr(v, f.name), depth + 1) for f in dataclasses.fields(v))
    return False


def encode(value: Any) -> bytes:
    """JSON text of ``value``; InvalidValueError when it is not JSON."""
    try:
        data = _dumps(value)
    except TypeError as e:  # orjson.JSONEncodeError is a TypeError
        raise InvalidValueError(f"value is not JSON: {e}") from None
    # The encoders write NaN and the infinities as null: only when a null
    # is in the text can one have been a float, so the common case costs
    # one scan of the text and no walk over the value.
    if b"null" in data and _has_nonfinite(value, 0):
        raise InvalidValueError("value contains NaN or an infinity, which JSON cannot represent")
    return data


def encode_trusted(value: Any) -> bytes:
    """JSON text of a value built only from JSON parts (decoded values and
    the output of to_json), which cannot hold NaN or foreign types."""
    try:
        return _dumps(value)
    except TypeError as e:
        raise InvalidValueError(f"value is not JSON: {e}") from None


decode = _loads


def _where(index: int, field: str) -> str:
    return field if index < 0 else f"ops[{index}].{field}"


def _check_int(v: int, index: int, field: str) -> int:
    if not _I64_MIN <= v <= _U64_MAX:
        raise InvalidValueError(
            f"{_where(index, field)}: integer {v} is outside the 64-bit range JSON values can hold")
    return v


def to_json(v: Any, index: int, field: str) -> Any:
    """A private copy of ``v`` made of plain JSON types only (dict with str
    keys, list, str, int, float, bool, None), refusing what JSON cannot
    hold; ``index`` and ``field`` name the value in error messages
    (``ops[i].field``, or just ``field`` when index < 0). See _codec.pyx."""
    t = type(v)
    if t is str or v is None or t is bool:
        return v
    if t is int:
        return _check_int(v, index, field)
    return _to_json(v, index, field, 0)


def _to_json(v: Any, index: int, field: str, depth: int) -> Any:
    t = type(v)
    if t is str or v is None or t is bool:
        return v
    if t is int:
        return _check_int(v, index, field)
    if t is float:
        if not math.isfinite(v):
            raise InvalidValueError(
                f"{_where(index, field)}: NaN and infinities cannot be represented in JSON")
        return v
    if depth >= MAX_DEPTH:
        raise InvalidValueError(f"{_where(index, field)}: value nests deeper than {MAX_DEPTH} levels")
    if t is dict:
        d = {}
        for k, x in v.items():
            if type(k) is not str:
                if not isinstance(k, str):
                    raise InvalidValueError(
                        f"{_where(index, field)}: object keys must be strings, got {type(k).__name__}")
                k = str.__str__(k)
            d[k] = _to_json(x, index, field, depth + 1)
        return d
    if t is list or t is tuple:
        return [_to_json(x, index, field, depth + 1) for x in v]
    # Subclasses and natively encoded types (datetime, UUID, enum,
    # dataclass...): the encoder defines their JSON; read that back.
    try:
        return _loads(encode(v))
    except InvalidValueError as e:
        raise InvalidValueError(f"{_where(index, field)}: {e.message}") from None


def copy_containers(v: Any) -> Any:
    """A copy of a decoded JSON value sharing no dict or list with it
    (strings and numbers are immutable and are shared)."""
    t = type(v)
    if t is dict:
        d = v.copy()
        for k, x in d.items():
            tx = type(x)
            if tx is dict or tx is list:
                d[k] = copy_containers(x)
        return d
    if t is list:
        out = v[:]
        for i, x in enumerate(out):
            tx = type(x)
            if tx is dict or tx is list:
                out[i] = copy_containers(x)
        return out
    return v


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact JSON; InvalidValueError if it is not JSON."""
    return encode(value)


def loads(data: Any) -> Any:
    """Decode JSON text (bytes, bytearray, memoryview or str)."""
    return _loads(data)


def loads_text(data: Any) -> Any:
    """Decode JSON text from outside (a command line, a file, a frame) by
    the API's rules: as loads, and an integer beyond the 64-bit range raises
    InvalidValueError instead of turning into a float (see _codec.pyx)."""
    from pystate._cffi._native import ffi, lib

    value = _loads(data)
    text = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    buf = text if isinstance(text, bytes) else ffi.from_buffer(text)
    found = ffi.new("size_t[2]")
    if lib.ps_json_check_ints(buf, len(text), found, found + 1) != lib.PS_OK:
        at, n = found[0], found[1]
        raise wide_integer(bytes(text[at:at + n]), at) from None
    return value


def json_copy(value: Any, where: str = "value") -> Any:
    """A plain-JSON private copy of ``value`` (see to_json)."""
    return to_json(value, -1, where)
