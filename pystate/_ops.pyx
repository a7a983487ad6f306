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
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Check
from cpython.dict cimport PyDict_Next
from cpython.ref cimport PyObject
cimport cython

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
cdef str _F_TYPE = "type"
cdef str _F_PATH = "path"
cdef str _F_VALUE = "value"
cdef str _F_BY = "by"
cdef str _S_SET = "set"
cdef str _S_INCREMENT = "increment"
cdef str _S_APPEND = "append"
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


cdef str _segments_label(object path):
    # Bracketed, never dot-joined: a dot is an ordinary character in a key.
    if not path:
        return "root"
    if type(path) is str:
        return "[" + <str>path + "]"
    return "[" + ", ".join(path) + "]"


# ---- request parsing: malformed input fails the whole call ---------------
#
# Field locations ("ops[2].by") are formatted only when there is an error to
# report: on the happy path formatting would cost more than the op itself.

cdef str _describe(object v):
    r = repr(v)
    if len(r) > 60:
        r = r[:57] + "..."
    return f"{r} ({type(v).__name__})"


cdef inline str _at(Py_ssize_t i, str field):
    return f"ops[{i}].{field}" if field else f"ops[{i}]"


cdef str _need_str(object v, Py_ssize_t i, str field):
    if type(v) is str:
        return <str>v
    if isinstance(v, str):
        return str.__str__(v)
    raise PayloadError(f"{_at(i, field)}: expected a string, got {_describe(v)}")


cdef object _need_path(object v, Py_ssize_t i, str field):
    """A merge/append path, normalised: "" for the root (absent, null, "" or
    []), a str for one first-level field ("a" or ["a"]), else a tuple of
    segments. A one-element [""] stays a tuple so that it is reported as an
    empty segment, as in the engine."""
    cdef list segs
    cdef Py_ssize_t j
    if v is _MISSING or v is None:
        return ""
    if type(v) is str:
        return v
    if isinstance(v, str):
        return _need_str(v, i, field)
    if type(v) is list or type(v) is tuple:
        segs = []
        for j, seg in enumerate(v):
            if type(seg) is not str:
                seg = _need_str(seg, i, f"{field}[{j}]")
            segs.append(seg)
        if not segs:
            return ""
        if len(segs) == 1 and segs[0]:
            return segs[0]
        return tuple(segs)
    raise PayloadError(
        f"{_at(i, field)}: expected a string, an array of strings or null, got {_describe(v)}")


cdef object _need_by(object v, Py_ssize_t i, str field):
    cdef int overflow = 0
    if v is _MISSING:
        raise PayloadError(f"{_at(i, field)}: missing field (an integer is required)")
    if type(v) is not int:
        if isinstance(v, int) and not isinstance(v, bool):
            v = int(v)
        else:
            raise PayloadError(
                f"{_at(i, field)}: expected an integer between {_I64_MIN} and {_I64_MAX}, "
                f"got {_describe(v)}")
    PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow:
        raise PayloadError(
            f"{_at(i, field)}: expected an integer between {_I64_MIN} and {_I64_MAX}, got {v}")
    return v


@cython.no_gc
@cython.final
cdef class _Op:
    """One parsed op. apply() reuses a single instance for all ops of a
    call, which saves an allocation per op."""
    cdef int kind
    cdef object path     # str for set/increment/decrement/remove, tuple of segments otherwise
    cdef object operand  # the value (private JSON copy) or `by`


cdef int _kind_of(object t, Py_ssize_t i) except -1:
    # Identity first: op names usually arrive as interned literals.
    if t is _S_INCREMENT:
        return K_INCREMENT
    if t is _S_APPEND:
        return K_APPEND
    if t is _S_SET:
        return K_SET
    k = _KINDS.get(t) if type(t) is str else None
    if k is None:
        name = _need_str(t, i, "type")  # a str subclass becomes a str
        k = _KINDS.get(name)
    if k is None:
        raise PayloadError(
            f"{_at(i, 'type')}: unknown op {name!r}; expected one of "
            "set, merge, increment, decrement, append, remove")
    return <int>k


cdef int _parse(object op, Py_ssize_t i, _Op out) except -1:
    """Fill `out` from ops[i], given in the wire form
    {"type": ..., "path": ..., "value"/"by": ...} or as a documented one-key
    shorthand."""
    cdef dict d
    cdef int kind
    cdef PyObject *k
    cdef PyObject *v
    cdef PyObject *t_ref = NULL
    cdef PyObject *path_ref = NULL
    cdef PyObject *value_ref = NULL
    cdef PyObject *by_ref = NULL
    cdef Py_ssize_t pos = 0
    if type(op) is not dict:
        if not isinstance(op, dict):
            raise PayloadError(f"{_at(i, '')}: expected an object, got {_describe(op)}")
    d = <dict>op
    # One pass over the (few) items instead of a lookup per field: keys are
    # nearly always the interned literals, so identity settles most of them.
    # The references are borrowed from `d`, which outlives this call.
    while PyDict_Next(d, &pos, &k, &v):
        if k == <PyObject *>_F_TYPE:
            t_ref = v
        elif k == <PyObject *>_F_PATH:
            path_ref = v
        elif k == <PyObject *>_F_VALUE:
            value_ref = v
        elif k == <PyObject *>_F_BY:
            by_ref = v
        elif PyUnicode_Check(<object>k):
            key = <object>k
            if key == _F_TYPE:
                t_ref = v
            elif key == _F_PATH:
                path_ref = v
            elif key == _F_VALUE:
                value_ref = v
            elif key == _F_BY:
                by_ref = v
    if t_ref != NULL:
        kind = _kind_of(<object>t_ref, i)
        out.kind = kind
        if kind == K_SET:
            if path_ref == NULL:
                raise PayloadError(f"{_at(i, 'path')}: missing field (a string is required)")
            out.path = _need_str(<object>path_ref, i, "path")
            # An absent value is JSON null, as is an explicit null.
            out.operand = None if value_ref == NULL else to_json(<object>value_ref, i, "value")
        elif kind == K_MERGE or kind == K_APPEND:
            if value_ref == NULL:
                raise PayloadError(f"{_at(i, 'value')}: missing field")
            out.path = _need_path(_MISSING if path_ref == NULL else <object>path_ref, i, "path")
            out.operand = to_json(<object>value_ref, i, "value")
        else:
            if path_ref == NULL:
                raise PayloadError(f"{_at(i, 'path')}: missing field (a string is required)")
            out.path = _need_str(<object>path_ref, i, "path")
            if kind == K_REMOVE:
                out.operand = None
            else:
                out.operand = _need_by(_MISSING if by_ref == NULL else <object>by_ref, i, "by")
        return 0

    # Shorthand: exactly one key naming the op.
    if len(d) == 1:
        (name, arg), = d.items()
        if name == "set":
            out.kind, out.path, out.operand = K_SET, "", to_json(arg, i, "set")
            return 0
        if name == "merge":
            out.kind, out.path, out.operand = K_MERGE, _ROOT, to_json(arg, i, "merge")
            return 0
        if name == "remove":
            out.kind, out.path, out.operand = K_REMOVE, _need_str(arg, i, "remove"), None
            return 0
        if name == "increment" or name == "decrement":
            if not isinstance(arg, dict):
                raise PayloadError(
                    f'{_at(i, name)}: expected {{"field": string, "by": integer}}, '
                    f"got {_describe(arg)}")
            field = (<dict>arg).get("field", _MISSING)
            if field is _MISSING:
                raise PayloadError(f"{_at(i, name + '.field')}: missing field (a string is required)")
            out.kind = K_INCREMENT if name == "increment" else K_DECREMENT
            out.path = _need_str(field, i, name + ".field")
            out.operand = _need_by((<dict>arg).get("by", _MISSING), i, name + ".by")
            return 0
    raise PayloadError(
        f'{_at(i, "")}: expected {{"type": ...}} or a one-key shorthand '
        f'(set, merge, increment, decrement, remove), got keys {sorted(map(str, d))}')


# ---- validation that yields per-op errors -------------------------------

cdef bint _valid_path(str op, Py_ssize_t index, object path, list errors) except -1:
    """Check a normalised merge/append path (see _need_path)."""
    cdef str seg
    if type(path) is str:
        return _valid_field(op, index, <str>path, errors)
    cdef tuple segs = <tuple>path
    if len(segs) > MAX_PATH_DEPTH:
        errors.append(_error(index, f"{op}.path.too_deep",
                             f"Path depth {len(segs)} exceeds maximum of {MAX_PATH_DEPTH}"))
        return False
    for seg in segs:
        if not seg:
            errors.append(_error(index, f"{op}.path.empty_segment",
                                 "Path contains an empty segment"))
            return False
        if not _valid_segment(op, index, seg, errors):
            return False
    return True


cdef bint _valid_segment(str op, Py_ssize_t index, str seg, list errors) except -1:
    cdef Py_ssize_t nbytes
    try:
        PyUnicode_AsUTF8AndSize(seg, &nbytes)
    except UnicodeEncodeError:
        raise PayloadError(f"ops[{index}].path: not valid Unicode text") from None
    if nbytes > MAX_SEGMENT_BYTES:
        errors.append(_error(
            index, f"{op}.path.segment_too_long",
            f"Path segment of {nbytes} bytes exceeds maximum of {MAX_SEGMENT_BYTES}"))
        return False
    if (nbytes == 9 or nbytes == 11) and seg in _PROTO:
        errors.append(_error(
            index, f"{op}.path.proto_polluted",
            f"Path segment '{seg}' is not allowed (prototype pollution)."))
        return False
    return True


cdef inline bint _valid_field(str op, Py_ssize_t index, str path, list errors) except -1:
    # A string path is one first-level field, or the root when empty.
    if not path:
        return True
    return _valid_segment(op, index, path, errors)


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

cdef dict _walk_or_create(dict root, object path):
    """The dict at path (a field name or a tuple of them) under root,
    creating missing levels and replacing any non-object on the way by an
    empty object (RFC 7396 style)."""
    cdef dict node = root
    if type(path) is str:
        child = node.get(path)
        if type(child) is not dict:
            child = {}
            node[path] = child
        return <dict>child
    for seg in <tuple>path:
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


def apply(current, missing, ops):
    """Apply ``ops`` in order and return ``(new_value, errors)``.

    ``current`` is the stored value, and is modified in place: pass a
    private copy. ``missing`` says the key does not exist (``current`` is
    then ignored and the value starts as ``{}``). A malformed request raises
    PayloadError (or InvalidValueError for a value that is not JSON) before
    the caller stores anything; a well-formed op that cannot apply is
    skipped and reported in ``errors``, and the other ops still run.
    """
    cdef list errors = []
    return apply_into(current, missing, ops, errors), errors


cdef object apply_into(object current, bint missing, object ops, list errors):
    """apply() for compiled callers: the new value is returned, and one
    error per op that could not apply is appended to ``errors``."""
    cdef Py_ssize_t i, n
    cdef int kind
    cdef bint ok
    cdef tuple segs
    cdef str path
    cdef dict target
    cdef Py_ssize_t last
    cdef bint down, nested
    cdef str name
    # The engine remembers whether the value is still the stand-in `{}` of
    # a missing key: a root increment, decrement or append then starts from
    # the operand instead of failing on an object.
    cdef bint fresh = missing
    if missing:
        current = {}
    if type(ops) is not list and type(ops) is not tuple:
        raise PayloadError(f"ops: expected an array of operations, got {_describe(ops)}")
    n = len(ops)
    cdef _Op op = _Op.__new__(_Op)
    for i in range(n):
        _parse(ops[i], i, op)
        kind = op.kind
        arg_path = op.path
        operand = op.operand
        if kind == K_SET:
            path = <str>arg_path
            if not _valid_field("set", i, path, errors):
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
            if not _valid_path("merge", i, arg_path, errors):
                continue
            if not _valid_merge_value(i, operand, errors):
                continue
            if not arg_path:
                # A root merge into a non-object is silently ignored, as in
                # the engine (it only logs a warning).
                if type(current) is dict:
                    (<dict>current).update(<dict>operand)
                    fresh = False
            else:
                if type(current) is not dict:
                    current = {}
                _walk_or_create(<dict>current, arg_path).update(<dict>operand)
                fresh = False

        elif kind == K_INCREMENT or kind == K_DECREMENT:
            path = <str>arg_path
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
            # Order matters (as in the engine): validate the path, then
            # require an object root, and only then create intermediates.
            if not _valid_path("append", i, arg_path, errors):
                continue
            if not arg_path:
                if fresh:
                    current = None
                current = _append_to(current, operand, "root", i, errors, &ok)
                if ok:
                    fresh = False
            elif type(current) is not dict:
                errors.append(_error(
                    i, "append.target_not_object",
                    f"Cannot append at path '{_segments_label(arg_path)}': target is "
                    f"{_type_name(current)}, expected object."))
            else:
                if type(arg_path) is str:
                    nested = False
                    target = <dict>current
                    leaf = arg_path
                else:
                    segs = <tuple>arg_path
                    last = len(segs) - 1
                    nested = True
                    target = _walk_or_create(<dict>current, segs[:last])
                    leaf = segs[last]
                old = target.get(leaf, _MISSING)
                if old is _MISSING:
                    # A missing first-level field follows the value's kind
                    # (string concat tier); a missing nested leaf is always
                    # an array.
                    target[leaf] = [operand] if nested else _initial_append(operand)
                else:
                    res = _append_to(old, operand, leaf, i, errors, &ok)
                    if ok and res is not old:  # a list grows in place
                        target[leaf] = res
                # The engine clears the missing-key flag here even when the
                # append itself failed.
                fresh = False

        else:  # K_REMOVE
            path = <str>arg_path
            if not _valid_field("remove", i, path, errors):
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
    return current
