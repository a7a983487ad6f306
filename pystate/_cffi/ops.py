"""The update op engine of the cffi backend, in plain Python: the same ops,
error codes and messages as the compiled engine (``pystate/_ops.pyx``),
which the parity tests hold it to. Behaviour follows the iii engine's
``engine/src/update_ops.rs``; ``_ops.pyx`` explains each surprising rule.

>>> from pystate._cffi.ops import apply
>>> apply({"n": 1, "tags": []}, False,
...       [{"type": "increment", "path": "n", "by": 2},
...        {"type": "append", "path": "tags", "value": "x"}])
({'n': 3, 'tags': ['x']}, [])
"""

from __future__ import annotations

import math
from typing import Any

from pystate._cffi.codec import to_json
from pystate.errors import PayloadError

__all__ = ["DOC_URL", "apply", "apply_into"]

MAX_PATH_DEPTH = 32
MAX_SEGMENT_BYTES = 256
MAX_VALUE_DEPTH = 16
MAX_VALUE_KEYS = 1024

K_SET, K_MERGE, K_INCREMENT, K_DECREMENT, K_APPEND, K_REMOVE = range(6)

DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"
_PROTO = frozenset(("__proto__", "constructor", "prototype"))
_KINDS = {
    "set": K_SET, "merge": K_MERGE, "increment": K_INCREMENT,
    "decrement": K_DECREMENT, "append": K_APPEND, "remove": K_REMOVE,
}
_ROOT: tuple = ()
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1
# Marks an absent field, where JSON null and "missing" must differ.
_MISSING: Any = object()


def _error(index: int, code: str, message: str) -> dict:
    return {"op_index": index, "code": code, "message": message, "doc_url": DOC_URL}


def _type_name(v: Any) -> str:
    t = type(v)
    if v is None:
        return "null"
    if t is bool:
        return "boolean"
    if t is int or t is float:
        return "number"
    if t is str:
        return "string"
    if t is list:
        return "array"
    return "object"


def _label(path: str) -> str:
    return path or "root"


def _segments_label(path: Any) -> str:
    # Bracketed, never dot-joined: a dot is an ordinary character in a key.
    if not path:
        return "root"
    if type(path) is str:
        return "[" + path + "]"
    return "[" + ", ".join(path) + "]"


# ---- request parsing: malformed input fails the whole call ---------------

def _describe(v: Any) -> str:
    r = repr(v)
    if len(r) > 60:
        r = r[:57] + "..."
    return f"{r} ({type(v).__name__})"


def _at(i: int, field: str) -> str:
    return f"ops[{i}].{field}" if field else f"ops[{i}]"


def _need_str(v: Any, i: int, field: str) -> str:
    if type(v) is str:
        return v
    if isinstance(v, str):
        return str.__str__(v)
    raise PayloadError(f"{_at(i, field)}: expected a string, got {_describe(v)}")


def _need_path(v: Any, i: int, field: str) -> Any:
    """A merge/append path, normalised: "" for the root, a str for one
    first-level field, else a tuple of segments (see _ops.pyx)."""
    if v is _MISSING or v is None:
        return ""
    if type(v) is str:
        return v
    if isinstance(v, str):
        return _need_str(v, i, field)
    if type(v) is list or type(v) is tuple:
        segs = [seg if type(seg) is str else _need_str(seg, i, f"{field}[{j}]")
                for j, seg in enumerate(v)]
        if not segs:
            return ""
        if len(segs) == 1 and segs[0]:
            return segs[0]
        return tuple(segs)
    raise PayloadError(
        f"{_at(i, field)}: expected a string, an array of strings or null, got {_describe(v)}")


def _need_by(v: Any, i: int, field: str) -> int:
    if v is _MISSING:
        raise PayloadError(f"{_at(i, field)}: missing field (an integer is required)")
    if type(v) is not int:
        if isinstance(v, int) and not isinstance(v, bool):
            v = int(v)
        else:
            raise PayloadError(
                f"{_at(i, field)}: expected an integer between {_I64_MIN} and {_I64_MAX}, "
                f"got {_describe(v)}")
    if not _I64_MIN <= v <= _I64_MAX:
        raise PayloadError(
            f"{_at(i, field)}: expected an integer between {_I64_MIN} and {_I64_MAX}, got {v}")
    return v


def _kind_of(t: Any, i: int) -> int:
    k = _KINDS.get(t) if type(t) is str else None
    if k is None:
        name = _need_str(t, i, "type")  # a str subclass becomes a str
        k = _KINDS.get(name)
        if k is None:
            raise PayloadError(
                f"{_at(i, 'type')}: unknown op {name!r}; expected one of "
                "set, merge, increment, decrement, append, remove")
    return k


def _parse(op: Any, i: int) -> tuple:
    """(kind, path, operand) of ops[i], given in the wire form
    {"type": ..., "path": ..., "value"/"by": ...} or as a one-key shorthand."""
    if not isinstance(op, dict):
        raise PayloadError(f"{_at(i, '')}: expected an object, got {_describe(op)}")
    t = op.get("type", _MISSING)
    if t is not _MISSING:
        kind = _kind_of(t, i)
        path = op.get("path", _MISSING)
        if kind == K_SET:
            if path is _MISSING:
                raise PayloadError(f"{_at(i, 'path')}: missing field (a string is required)")
            value = op.get("value", _MISSING)
            # An absent value is JSON null, as is an explicit null.
            return (kind, _need_str(path, i, "path"),
                    None if value is _MISSING else to_json(value, i, "value"))
        if kind == K_MERGE or kind == K_APPEND:
            value = op.get("value", _MISSING)
            if value is _MISSING:
                raise PayloadError(f"{_at(i, 'value')}: missing field")
            return kind, _need_path(path, i, "path"), to_json(value, i, "value")
        if path is _MISSING:
            raise PayloadError(f"{_at(i, 'path')}: missing field (a string is required)")
        path = _need_str(path, i, "path")
        if kind == K_REMOVE:
            return kind, path, None
        return kind, path, _need_by(op.get("by", _MISSING), i, "by")

    # Shorthand: exactly one key naming the op.
    if len(op) == 1:
        (name, arg), = op.items()
        if name == "set":
            return K_SET, "", to_json(arg, i, "set")
        if name == "merge":
            return K_MERGE, _ROOT, to_json(arg, i, "merge")
        if name == "remove":
            return K_REMOVE, _need_str(arg, i, "remove"), None
        if name == "increment" or name == "decrement":
            if not isinstance(arg, dict):
                raise PayloadError(
                    f'{_at(i, name)}: expected {{"field": string, "by": integer}}, '
                    f"got {_describe(arg)}")
            field = arg.get("field", _MISSING)
            if field is _MISSING:
                raise PayloadError(f"{_at(i, name + '.field')}: missing field (a string is required)")
            return (K_INCREMENT if name == "increment" else K_DECREMENT,
                    _need_str(field, i, name + ".field"),
                    _need_by(arg.get("by", _MISSING), i, name + ".by"))
    raise PayloadError(
        f'{_at(i, "")}: expected {{"type": ...}} or a one-key shorthand '
        f'(set, merge, increment, decrement, remove), got keys {sorted(map(str, op))}')


# ---- validation that yields per-op errors -------------------------------

def _valid_path(op: str, index: int, path: Any, errors: list) -> bool:
    if type(path) is str:
        return _valid_field(op, index, path, errors)
    if len(path) > MAX_PATH_DEPTH:
        errors.append(_error(index, f"{op}.path.too_deep",
                             f"Path depth {len(path)} exceeds maximum of {MAX_PATH_DEPTH}"))
        return False
    for seg in path:
        if not seg:
            errors.append(_error(index, f"{op}.path.empty_segment", "Path contains an empty segment"))
            return False
        if not _valid_segment(op, index, seg, errors):
            return False
    return True


def _valid_segment(op: str, index: int, seg: str, errors: list) -> bool:
    if len(seg) * 4 > MAX_SEGMENT_BYTES or not seg.isascii():
        try:
            nbytes = len(seg.encode("utf-8"))
        except UnicodeEncodeError:
            raise PayloadError(f"ops[{index}].path: not valid Unicode text") from None
        if nbytes > MAX_SEGMENT_BYTES:
            errors.append(_error(
                index, f"{op}.path.segment_too_long",
                f"Path segment of {nbytes} bytes exceeds maximum of {MAX_SEGMENT_BYTES}"))
            return False
    if seg in _PROTO:
        errors.append(_error(
            index, f"{op}.path.proto_polluted",
            f"Path segment '{seg}' is not allowed (prototype pollution)."))
        return False
    return True


def _valid_field(op: str, index: int, path: str, errors: list) -> bool:
    # A string path is one first-level field, or the root when empty.
    return not path or _valid_segment(op, index, path, errors)


def _depth(v: Any) -> int:
    t = type(v)
    if t is dict:
        return 1 + max(map(_depth, v.values()), default=0)
    if t is list:
        return 1 + max(map(_depth, v), default=0)
    return 0


def _valid_merge_value(index: int, value: Any, errors: list) -> bool:
    if type(value) is not dict:
        errors.append(_error(index, "merge.value.not_an_object", "Merge value must be a JSON object"))
        return False
    if len(value) > MAX_VALUE_KEYS:
        errors.append(_error(
            index, "merge.value.too_many_keys",
            f"Merge value has {len(value)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}"))
        return False
    for k in value:
        if k in _PROTO:
            errors.append(_error(
                index, "merge.value.proto_polluted",
                f'Merge value top-level key "{k}" is a prototype-pollution sink'))
            return False
    depth = _depth(value)
    if depth > MAX_VALUE_DEPTH:
        errors.append(_error(
            index, "merge.value.too_deep",
            f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}"))
        return False
    return True


# ---- arithmetic -------------------------------------------------------------

def _step(v: Any, by: int, down: bool) -> Any:
    """v + by (or v - by) with the engine's number rules, or None when v is
    not a number or the result leaves the 64-bit range (see _ops.pyx)."""
    t = type(v)
    if t is int:
        res = v - by if down else v + by
        if _I64_MIN <= res <= _I64_MAX or (v >= 0 and 0 <= res <= _U64_MAX):
            return res
        return None
    if t is float:
        f = v - by if down else v + by
        return f if math.isfinite(f) else None
    return None


# ---- the engine -------------------------------------------------------------

def _walk_or_create(root: dict, path: Any) -> dict:
    """The dict at path under root, creating missing levels and replacing
    any non-object on the way by an empty object (RFC 7396 style)."""
    node = root
    for seg in ((path,) if type(path) is str else path):
        child = node.get(seg)
        if type(child) is not dict:
            child = {}
            node[seg] = child
        node = child
    return node


def _initial_append(value: Any) -> Any:
    # A string starts a string (the concat tier); anything else an array.
    return value if type(value) is str else [value]


def _append_to(target: Any, value: Any, label: str, index: int, errors: list) -> tuple:
    """(target after appending value, whether it applied)."""
    t = type(target)
    if t is list:
        target.append(value)
        return target, True
    if t is str:
        if type(value) is str:
            return target + value, True
        errors.append(_error(
            index, "append.type_mismatch",
            f"Expected string append value at path '{_label(label)}', got {_type_name(value)}."))
        return target, False
    if target is None:
        return _initial_append(value), True
    errors.append(_error(
        index, "append.type_mismatch",
        f"Cannot append at path '{_label(label)}': target is {_type_name(target)}, "
        "expected array, string, null, or missing field."))
    return target, False


def apply(current: Any, missing: bool, ops: Any) -> tuple:
    """Apply ``ops`` in order and return ``(new_value, errors)``.

    ``current`` is modified in place: pass a private copy. ``missing`` says
    the key does not exist (the value then starts as ``{}``). A malformed
    request raises PayloadError (or InvalidValueError) before anything is
    stored; a well-formed op that cannot apply is reported in ``errors``.
    """
    errors: list = []
    return apply_into(current, missing, ops, errors), errors


def apply_into(current: Any, missing: bool, ops: Any, errors: list) -> Any:
    """apply() for the binding: returns the new value and appends one error
    per op that could not apply to ``errors``."""
    # Whether the value is still the stand-in {} of a missing key: a root
    # increment, decrement or append then starts from the operand.
    fresh = bool(missing)
    if missing:
        current = {}
    if type(ops) is not list and type(ops) is not tuple:
        raise PayloadError(f"ops: expected an array of operations, got {_describe(ops)}")
    for i, raw in enumerate(ops):
        kind, path, operand = _parse(raw, i)
        if kind == K_SET:
            if not _valid_field("set", i, path, errors):
                continue
            if not path:
                current = operand
                fresh = False
            elif type(current) is dict:
                current[path] = operand
                fresh = False
            else:
                errors.append(_error(
                    i, "set.target_not_object",
                    f"Cannot set at path '{path}': target is {_type_name(current)}, expected object."))

        elif kind == K_MERGE:
            if not _valid_path("merge", i, path, errors) or not _valid_merge_value(i, operand, errors):
                continue
            if not path:
                # A root merge into a non-object is silently ignored.
                if type(current) is dict:
                    current.update(operand)
                    fresh = False
            else:
                if type(current) is not dict:
                    current = {}
                _walk_or_create(current, path).update(operand)
                fresh = False

        elif kind == K_INCREMENT or kind == K_DECREMENT:
            name = "increment" if kind == K_INCREMENT else "decrement"
            if not _valid_field(name, i, path, errors):
                continue
            down = kind == K_DECREMENT
            if not path:
                if fresh:
                    current = -operand if down else operand
                else:
                    res = _step(current, operand, down)
                    if res is None:
                        errors.append(_error(
                            i, name + ".not_number",
                            f"Expected number at path 'root', got {_type_name(current)}."))
                        continue
                    current = res
                fresh = False
            elif type(current) is dict:
                old = current.get(path, _MISSING)
                if old is _MISSING:
                    current[path] = -operand if down else operand
                else:
                    res = _step(old, operand, down)
                    if res is None:
                        errors.append(_error(
                            i, name + ".not_number",
                            f"Expected number at path '{path}', got {_type_name(old)}."))
                        continue
                    current[path] = res
                fresh = False
            else:
                errors.append(_error(
                    i, name + ".target_not_object",
                    f"Cannot {name} at path '{path}': target is {_type_name(current)}, expected object."))

        elif kind == K_APPEND:
            # Validate the path, then require an object root, and only then
            # create intermediates (the engine's order).
            if not _valid_path("append", i, path, errors):
                continue
            if not path:
                if fresh:
                    current = None
                current, ok = _append_to(current, operand, "root", i, errors)
                if ok:
                    fresh = False
            elif type(current) is not dict:
                errors.append(_error(
                    i, "append.target_not_object",
                    f"Cannot append at path '{_segments_label(path)}': target is "
                    f"{_type_name(current)}, expected object."))
            else:
                if type(path) is str:
                    nested, target, leaf = False, current, path
                else:
                    nested, target, leaf = True, _walk_or_create(current, path[:-1]), path[-1]
                old = target.get(leaf, _MISSING)
                if old is _MISSING:
                    # A missing first-level field follows the value's kind;
                    # a missing nested leaf is always an array.
                    target[leaf] = [operand] if nested else _initial_append(operand)
                else:
                    res, ok = _append_to(old, operand, leaf, i, errors)
                    if ok and res is not old:  # a list grows in place
                        target[leaf] = res
                # The engine clears the missing-key flag even when the
                # append itself failed.
                fresh = False

        else:  # K_REMOVE
            if not _valid_field("remove", i, path, errors):
                continue
            if not path:
                current = None
                fresh = False
            elif type(current) is dict:
                current.pop(path, None)
                fresh = False
            else:
                errors.append(_error(
                    i, "remove.target_not_object",
                    f"Cannot remove at path '{path}': target is {_type_name(current)}, expected object."))
    return current
