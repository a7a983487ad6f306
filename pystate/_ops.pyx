# cython: language_level=3, boundscheck=False, wraparound=False
"""The update op engine: ``state::update``'s six ops, compiled.

Behaviour follows the iii engine's ``engine/src/update_ops.rs`` op for op
and error code for error code; the comments below name the places where
that behaviour is surprising, so nobody "fixes" them.

Ops run on decoded Python values (dict, list, str, int, float, bool, None)
rather than on JSON text: the store must hand back both the old and the new
value as Python objects anyway, so working on objects costs one decode and
one encode per update, where a text-level engine would need one encode of
the ops and two decodes.

>>> from pystate._ops import apply
>>> apply({"n": 1, "tags": []}, False,
...       [{"type": "increment", "path": "n", "by": 2},
...        {"type": "append", "path": "tags", "value": "x"}])
({'n': 3, 'tags': ['x']}, [])
"""
from libc.math cimport isfinite
from cpython.long cimport PyLong_AsLongLongAndOverflow
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from pystate._codec cimport to_json
from pystate.errors import PayloadError

cdef extern from *:
    bint add_overflow "__builtin_add_overflow" (long long a, long long b, long long *r)
    bint sub_overflow "__builtin_sub_overflow" (long long a, long long b, long long *r)

cdef enum:
    MAX_PATH_DEPTH = 32
    MAX_SEGMENT_BYTES = 256
    MAX_VALUE_DEPTH = 16
    MAX_VALUE_KEYS = 1024

cdef enum Kind:
    K_SET
    K_MERGE
    K_INCREMENT
    K_DECREMENT
    K_APPEND
    K_REMOVE

DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"
cdef str _DOC_URL = DOC_URL
cdef frozenset _PROTO = frozenset(("__proto__", "constructor", "prototype"))
cdef dict _KINDS = {
    "set": K_SET, "merge": K_MERGE, "increment": K_INCREMENT,
    "decrement": K_DECREMENT, "append": K_APPEND, "remove": K_REMOVE,
}
cdef tuple _NAMES = ("set", "merge", "increment", "decrement", "append", "remove")
cdef tuple _ROOT = ()
cdef object _I64_MIN = -(1 << 63)
cdef object _I64_MAX = (1 << 63) - 1
cdef object _U64_MAX = (1 << 64) - 1
# Marks an absent field, where JSON null and "missing" must differ.
cdef object _MISSING = object()


cdef inline dict _error(Py_ssize_t index, str code, str message):
    return {"op_index": index, "code": code, "message": message, "doc_url": _DOC_URL}


cdef str _type_name(object v):
    cdef type t = type(v)
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


cdef inline str _label(str path):
    return "root" if not path else path


cdef str _segments_label(tuple segs):
    # Bracketed, never dot-joined: a dot is an ordinary character in a key.
    return "root" if not segs else "[" + ", ".join(segs) + "]"


# ---- request parsing: malformed input fails the whole call ---------------

cdef str _describe(object v):
    r = repr(v)
    if len(r) > 60:
        r = r[:57] + "..."
    return f"{r} ({type(v).__name__})"


cdef str _need_str(object v, str where):
    if type(v) is str:
        return <str>v
    if isinstance(v, str):
        return str.__str__(v)
    raise PayloadError(f"{where}: expected a string, got {_describe(v)}")


cdef tuple _need_path(object v, str where):
    """merge/append path: absent or null (root), a string (one field, or the
    root when empty), or an array of strings (nested)."""
    cdef list segs
    if v is _MISSING or v is None:
        return _ROOT
    if type(v) is str or isinstance(v, str):
        s = _need_str(v, where)
        return _ROOT if not s else (s,)
    if type(v) is list or type(v) is tuple:
        segs = []
        for i, seg in enumerate(v):
            segs.append(_need_str(seg, f"{where}[{i}]"))
        return tuple(segs)
    raise PayloadError(
        f"{where}: expected a string, an array of strings or null, got {_describe(v)}")


cdef object _need_by(object v, str where):
    cdef int overflow = 0
    if v is _MISSING:
        raise PayloadError(f"{where}: missing field (an integer is required)")
    if type(v) is not int:
        raise PayloadError(
            f"{where}: expected an integer between {_I64_MIN} and {_I64_MAX}, got {_describe(v)}")
    PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow:
        raise PayloadError(
            f"{where}: expected an integer between {_I64_MIN} and {_I64_MAX}, got {v}")
    return v


cdef tuple _parse(object op, Py_ssize_t i):
    """(kind, path, operand) of ops[i], from the wire form
    {"type": ..., "path": ..., "value"/"by": ...} or a documented one-key
    shorthand. path is a str for set/increment/decrement/remove and a tuple
    of segments for merge/append."""
    cdef str where = f"ops[{i}]"
    cdef dict d
    if not isinstance(op, dict):
        raise PayloadError(f"{where}: expected an object, got {_describe(op)}")
    d = <dict>op
    t = d.get("type", _MISSING)
    if t is not _MISSING:
        name = _need_str(t, where + ".type")
        kind = _KINDS.get(name)
        if kind is None:
            raise PayloadError(
                f"{where}.type: unknown op {name!r}; expected one of "
                "set, merge, increment, decrement, append, remove")
        path = d.get("path", _MISSING)
        if kind == K_SET:
            if path is _MISSING:
                raise PayloadError(f"{where}.path: missing field (a string is required)")
            value = d.get("value")  # absent or null: JSON null
            return (K_SET, _need_str(path, where + ".path"), to_json(value, where + ".value"))
        if kind == K_MERGE or kind == K_APPEND:
            value = d.get("value", _MISSING)
            if value is _MISSING:
                raise PayloadError(f"{where}.value: missing field")
            return (kind, _need_path(path, where + ".path"), to_json(value, where + ".value"))
        if path is _MISSING:
            raise PayloadError(f"{where}.path: missing field (a string is required)")
        if kind == K_REMOVE:
            return (K_REMOVE, _need_str(path, where + ".path"), None)
        return (kind, _need_str(path, where + ".path"),
                _need_by(d.get("by", _MISSING), where + ".by"))

    # Shorthand: exactly one key naming the op.
    if len(d) == 1:
        (name, arg), = d.items()
        if name == "set":
            return (K_SET, "", to_json(arg, where + ".set"))
        if name == "merge":
            return (K_MERGE, _ROOT, to_json(arg, where + ".merge"))
        if name == "remove":
            return (K_REMOVE, _need_str(arg, where + ".remove"), None)
        if name == "increment" or name == "decrement":
            w = f"{where}.{name}"
            if not isinstance(arg, dict):
                raise PayloadError(
                    f'{w}: expected {{"field": string, "by": integer}}, got {_describe(arg)}')
            field = (<dict>arg).get("field", _MISSING)
            if field is _MISSING:
                raise PayloadError(f"{w}.field: missing field (a string is required)")
            return (K_INCREMENT if name == "increment" else K_DECREMENT,
                    _need_str(field, w + ".field"),
                    _need_by((<dict>arg).get("by", _MISSING), w + ".by"))
    raise PayloadError(
        f'{where}: expected {{"type": ...}} or a one-key shorthand '
        f'(set, merge, increment, decrement, remove), got keys {sorted(map(str, d))}')


# ---- validation that yields per-op errors -------------------------------

cdef bint _valid_path(str op, Py_ssize_t index, tuple segs, list errors) except -1:
    cdef Py_ssize_t nbytes
    cdef str seg
    if len(segs) > MAX_PATH_DEPTH:
        errors.append(_error(index, f"{op}.path.too_deep",
                             f"Path depth {len(segs)} exceeds maximum of {MAX_PATH_DEPTH}"))
        return False
    for seg in segs:
        if not seg:
            errors.append(_error(index, f"{op}.path.empty_segment",
                                 "Path contains an empty segment"))
            return False
        try:
            PyUnicode_AsUTF8AndSize(seg, &nbytes)
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


cdef inline tuple _field_segments(str path):
    return _ROOT if not path else (path,)


cdef Py_ssize_t _depth(object v):
    cdef Py_ssize_t best = 0, d
    cdef type t = type(v)
    if t is dict:
        for x in (<dict>v).values():
            d = _depth(x)
            if d > best:
                best = d
        return 1 + best
    if t is list:
        for x in <list>v:
            d = _depth(x)
            if d > best:
                best = d
        return 1 + best
    return 0


cdef bint _valid_merge_value(Py_ssize_t index, object value, list errors) except -1:
    if type(value) is not dict:
        errors.append(_error(index, "merge.value.not_an_object",
                             "Merge value must be a JSON object"))
        return False
    if len(<dict>value) > MAX_VALUE_KEYS:
        errors.append(_error(
            index, "merge.value.too_many_keys",
            f"Merge value has {len(<dict>value)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}"))
        return False
    for k in <dict>value:
        if k in _PROTO:
            errors.append(_error(
                index, "merge.value.proto_polluted",
                f'Merge value top-level key "{k}" is a prototype-pollution sink'))
            return False
    cdef Py_ssize_t depth = _depth(value)
    if depth > MAX_VALUE_DEPTH:
        errors.append(_error(
            index, "merge.value.too_deep",
            f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}"))
        return False
    return True


# ---- arithmetic -------------------------------------------------------------

cdef object _step(object v, object by, bint down):
    """v + by (or v - by) with the engine's number rules, or None when v is
    not a number or the result leaves the 64-bit range: integers stay
    integers (i64 first, then u64), floats stay floats and must stay
    finite, booleans are not numbers."""
    cdef type t = type(v)
    cdef long long a, b, r
    cdef int overflow = 0
    cdef double f
    if t is int:
        a = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow == 0:
            b = <long long>by
            if not (sub_overflow(a, b, &r) if down else add_overflow(a, b, &r)):
                return r
        # Past i64: exact arithmetic, then the range a u64 can hold. Only a
        # non-negative start may land there, as in the engine.
        res = v - by if down else v + by
        if _I64_MIN <= res <= _I64_MAX or (v >= 0 and 0 <= res <= _U64_MAX):
            return res
        return None
    if t is float:
        f = <double>v - <double>by if down else <double>v + <double>by
        return f if isfinite(f) else None
    return None


# ---- the engine -------------------------------------------------------------

cdef dict _walk_or_create(dict root, tuple segs):
    """The dict at segs under root, creating missing levels and replacing
    any non-object on the way by an empty object (RFC 7396 style)."""
    cdef dict node = root
    for seg in segs:
        child = node.get(seg)
        if type(child) is not dict:
            child = {}
            node[seg] = child
        node = <dict>child
    return node


cdef object _initial_append(object value):
    # A string starts a string (the concat tier); anything else an array.
    return value if type(value) is str else [value]


cdef object _append_to(object target, object value, str label, Py_ssize_t index,
                       list errors, bint *ok):
    """Target after appending value, with ok[0] telling success."""
    cdef type t = type(target)
    ok[0] = True
    if t is list:
        (<list>target).append(value)
        return target
    if t is str:
        if type(value) is str:
            return <str>target + <str>value
        errors.append(_error(
            index, "append.type_mismatch",
            f"Expected string append value at path '{_label(label)}', got {_type_name(value)}."))
        ok[0] = False
        return target
    if target is None:
        return _initial_append(value)
    errors.append(_error(
        index, "append.type_mismatch",
        f"Cannot append at path '{_label(label)}': target is {_type_name(target)}, "
        "expected array, string, null, or missing field."))
    ok[0] = False
    return target


cpdef tuple apply(object current, bint missing, object ops):
    """Apply ``ops`` in order and return ``(new_value, errors)``.

    ``current`` is the stored value, and is modified in place: pass a
    private copy. ``missing`` says the key does not exist (``current`` is
    then ignored and the value starts as ``{}``). A malformed request raises
    PayloadError (or InvalidValueError for a value that is not JSON) before
    the caller stores anything; a well-formed op that cannot apply is
    skipped and reported in ``errors``, and the other ops still run.
    """
    cdef list errors = []
    cdef Py_ssize_t i, n
    cdef int kind
    cdef bint ok
    cdef tuple segs
    cdef str path
    cdef dict target
    cdef Py_ssize_t last
    # The engine remembers whether the value is still the stand-in `{}` of
    # a missing key: a root increment, decrement or append then starts from
    # the operand instead of failing on an object.
    cdef bint fresh = missing
    if missing:
        current = {}
    if type(ops) is not list and type(ops) is not tuple:
        raise PayloadError(f"ops: expected an array of operations, got {_describe(ops)}")
    n = len(ops)
    for i in range(n):
        kind, arg_path, operand = _parse(ops[i], i)
        if kind == K_SET:
            path = <str>arg_path
            if not _valid_path("set", i, _field_segments(path), errors):
                continue
            if not path:
                current = operand
                fresh = False
            elif type(current) is dict:
                (<dict>current)[path] = operand
                fresh = False
            else:
                errors.append(_error(
                    i, "set.target_not_object",
                    f"Cannot set at path '{path}': target is {_type_name(current)}, expected object."))

        elif kind == K_MERGE:
            segs = <tuple>arg_path
            if not _valid_path("merge", i, segs, errors):
                continue
            if not _valid_merge_value(i, operand, errors):
                continue
            if not segs:
                # A root merge into a non-object is silently ignored, as in
                # the engine (it only logs a warning).
                if type(current) is dict:
                    (<dict>current).update(<dict>operand)
                    fresh = False
            else:
                if type(current) is not dict:
                    current = {}
                _walk_or_create(<dict>current, segs).update(<dict>operand)
                fresh = False

        elif kind == K_INCREMENT or kind == K_DECREMENT:
            path = <str>arg_path
            name = "increment" if kind == K_INCREMENT else "decrement"
            if not _valid_path(name, i, _field_segments(path), errors):
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
                old = (<dict>current).get(path, _MISSING)
                if old is _MISSING:
                    # -by of i64's minimum is 2**63: fine as a u64.
                    (<dict>current)[path] = -operand if down else operand
                else:
                    res = _step(old, operand, down)
                    if res is None:
                        errors.append(_error(
                            i, name + ".not_number",
                            f"Expected number at path '{path}', got {_type_name(old)}."))
                        continue
                    (<dict>current)[path] = res
                fresh = False
            else:
                errors.append(_error(
                    i, name + ".target_not_object",
                    f"Cannot {name} at path '{path}': target is {_type_name(current)}, expected object."))

        elif kind == K_APPEND:
            segs = <tuple>arg_path
            # Order matters (as in the engine): validate the path, then
            # require an object root, and only then create intermediates.
            if not _valid_path("append", i, segs, errors):
                continue
            if not segs:
                if fresh:
                    current = None
                current = _append_to(current, operand, "root", i, errors, &ok)
                if ok:
                    fresh = False
            elif type(current) is not dict:
                errors.append(_error(
                    i, "append.target_not_object",
                    f"Cannot append at path '{_segments_label(segs)}': target is "
                    f"{_type_name(current)}, expected object."))
            else:
                last = len(segs) - 1
                if last == 0:
                    target = <dict>current
                else:
                    target = _walk_or_create(<dict>current, segs[:last])
                leaf = segs[last]
                old = target.get(leaf, _MISSING)
                if old is _MISSING:
                    # A missing first-level field follows the value's kind
                    # (string concat tier); a missing nested leaf is always
                    # an array.
                    target[leaf] = _initial_append(operand) if last == 0 else [operand]
                else:
                    res = _append_to(old, operand, leaf, i, errors, &ok)
                    if ok:
                        target[leaf] = res
                # The engine clears the missing-key flag here even when the
                # append itself failed.
                fresh = False

        else:  # K_REMOVE
            path = <str>arg_path
            if not _valid_path("remove", i, _field_segments(path), errors):
                continue
            if not path:
                current = None
                fresh = False
            elif type(current) is dict:
                (<dict>current).pop(path, None)
                fresh = False
            else:
                errors.append(_error(
                    i, "remove.target_not_object",
                    f"Cannot remove at path '{path}': target is {_type_name(current)}, expected object."))
    return current, errors
