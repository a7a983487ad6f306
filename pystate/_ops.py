# cython: language_level=3, boundscheck=False, wraparound=False
"""The update op engine: ``state::update``'s six ops.

Behaviour follows the iii engine's ``engine/src/update_ops.rs`` op for op
and error code for error code; the comments below name the places where
that behaviour is surprising, so nobody "fixes" them.

Ops run on decoded Python values (dict, list, str, int, float, bool, None)
rather than on JSON text: the store must hand back both the old and the new
value as Python objects anyway, so working on objects costs one decode and
one encode per update, where a text-level engine would need one encode of
the ops and two decodes.

One source, two builds: on CPython this file is compiled by Cython (the
types come from ``_ops.pxd``; the ``cython.compiled`` branches use the C
API where that pays), and on PyPy it is imported as plain Python. The code
avoids what the two builds would read differently: negative indexes
(``wraparound=False``) and out-of-range ones (``boundscheck=False``).

>>> from pystate._ops import apply
>>> apply({"n": 1, "tags": []}, False,
...       [{"type": "increment", "path": "n", "by": 2},
...        {"type": "append", "path": "tags", "value": "x"}])
({'n': 3, 'tags': ['x']}, [])
"""

try:
    import cython
except ImportError:  # plain Python, and Cython is not installed (PyPy)
    import types

    cython = types.SimpleNamespace(compiled=False, cclass=lambda cls: cls, freelist=lambda n: lambda cls: cls)

from pystate.errors import PayloadError

if cython.compiled:
    from cython.cimports.cpython.dict import PyDict_Next
    from cython.cimports.cpython.long import PyLong_AsLongLongAndOverflow
    from cython.cimports.cpython.ref import PyObject
    from cython.cimports.cpython.unicode import PyUnicode_AsUTF8AndSize, PyUnicode_Check
    from cython.cimports.libc.math import isfinite
    from cython.cimports.pystate._codec import to_json
else:
    from math import isfinite

    from pystate._codec import to_json

__all__ = ["DOC_URL", "apply", "apply_into", "apply_parsed", "parse_ops"]

MAX_PATH_DEPTH = 32
MAX_SEGMENT_BYTES = 256
MAX_VALUE_DEPTH = 16
MAX_VALUE_KEYS = 1024

K_SET, K_MERGE, K_INCREMENT, K_DECREMENT, K_APPEND, K_REMOVE = range(6)

DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"
_DOC_URL = DOC_URL
_PROTO = frozenset(("__proto__", "constructor", "prototype"))
_KINDS = {
    "set": K_SET, "merge": K_MERGE, "increment": K_INCREMENT,
    "decrement": K_DECREMENT, "append": K_APPEND, "remove": K_REMOVE,
}
_F_TYPE = "type"
_F_PATH = "path"
_F_VALUE = "value"
_F_BY = "by"
_S_SET = "set"
_S_INCREMENT = "increment"
_S_APPEND = "append"
_NAMES = ("set", "merge", "increment", "decrement", "append", "remove")  # by kind
_ROOT = ()
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64_MAX = (1 << 64) - 1
# Marks an absent field, where JSON null and "missing" must differ.
_MISSING = object()


def _error(index, code, message):
    return {"op_index": index, "code": code, "message": message, "doc_url": _DOC_URL}


def _type_name(v):
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


def _label(path):
    return "root" if not path else path


def _segments_label(path):
    # Bracketed, never dot-joined: a dot is an ordinary character in a key.
    if not path:
        return "root"
    if type(path) is str:
        return "[" + path + "]"
    return "[" + ", ".join(path) + "]"


# ---- request parsing: malformed input fails the whole call ---------------
#
# Field locations ("ops[2].by") are formatted only when there is an error to
# report: on the happy path formatting would cost more than the op itself.

def _describe(v):
    r = repr(v)
    if len(r) > 60:
        r = r[:57] + "..."
    return f"{r} ({type(v).__name__})"


def _at(i, field):
    return f"ops[{i}].{field}" if field else f"ops[{i}]"


def _need_str(v, i, field):
    if type(v) is str:
        return v
    if isinstance(v, str):
        return str.__str__(v)
    raise PayloadError(f"{_at(i, field)}: expected a string, got {_describe(v)}")


def _need_path(v, i, field):
    """A merge/append path, normalised: "" for the root (absent, null, "" or
    []), a str for one first-level field ("a" or ["a"]), else a tuple of
    segments. A one-element [""] stays a tuple so that it is reported as an
    empty segment, as in the engine."""
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


def _need_by(v, i, field):
    if v is _MISSING:
        raise PayloadError(f"{_at(i, field)}: missing field (an integer is required)")
    if type(v) is not int:
        if isinstance(v, int) and not isinstance(v, bool):
            v = int(v)
        else:
            raise PayloadError(
                f"{_at(i, field)}: expected an integer between {_I64_MIN} and {_I64_MAX}, "
                f"got {_describe(v)}")
    if cython.compiled:
        # The range test without creating or comparing int objects.
        overflow = 0
        PyLong_AsLongLongAndOverflow(v, cython.address(overflow))
        fits = overflow == 0
    else:
        fits = _I64_MIN <= v <= _I64_MAX
    if not fits:
        raise PayloadError(
            f"{_at(i, field)}: expected an integer between {_I64_MIN} and {_I64_MAX}, got {v}")
    return v


@cython.freelist(16)
@cython.cclass
class _Op:
    """One op as parse_ops() leaves it for apply_parsed(): its kind, its
    normalised path, its operand (a private JSON copy, or `by`), the error
    its path gives (None: the path can apply) and the next op (None after
    the last: a chain, which costs no container). The compiled module
    makes it a class of C fields (_ops.pxd)."""


def _kind_of(t, i):
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
    return k


def _parse(op, i, out):
    """Fill `out` from ops[i], given in the wire form
    {"type": ..., "path": ..., "value"/"by": ...} or as a documented one-key
    shorthand."""
    if type(op) is not dict:
        if not isinstance(op, dict):
            raise PayloadError(f"{_at(i, '')}: expected an object, got {_describe(op)}")
    # One pass over the (few) items instead of a lookup per field: keys are
    # nearly always the interned literals, so identity settles most of them.
    if cython.compiled:
        # The same pass on borrowed references (from `op`, which outlives
        # this call), handed on as they are: no reference counting per
        # item or per field.
        t_ref = path_ref = value_ref = by_ref = cython.cast(cython.pointer[PyObject], _MISSING)
        pos = 0
        while PyDict_Next(op, cython.address(pos), cython.address(k), cython.address(v_ref)):
            if k == cython.cast(cython.pointer[PyObject], _F_TYPE):
                t_ref = v_ref
            elif k == cython.cast(cython.pointer[PyObject], _F_PATH):
                path_ref = v_ref
            elif k == cython.cast(cython.pointer[PyObject], _F_VALUE):
                value_ref = v_ref
            elif k == cython.cast(cython.pointer[PyObject], _F_BY):
                by_ref = v_ref
            elif PyUnicode_Check(cython.cast(object, k)):
                key = cython.cast(object, k)
                if key == _F_TYPE:
                    t_ref = v_ref
                elif key == _F_PATH:
                    path_ref = v_ref
                elif key == _F_VALUE:
                    value_ref = v_ref
                elif key == _F_BY:
                    by_ref = v_ref
        return _parse_fields(op, i, out, cython.cast(object, t_ref), cython.cast(object, path_ref),
                             cython.cast(object, value_ref), cython.cast(object, by_ref))
    else:
        t = path = value = by = _MISSING
        for key, v in op.items():
            if key is _F_TYPE:
                t = v
            elif key is _F_PATH:
                path = v
            elif key is _F_VALUE:
                value = v
            elif key is _F_BY:
                by = v
            elif isinstance(key, str):
                if key == _F_TYPE:
                    t = v
                elif key == _F_PATH:
                    path = v
                elif key == _F_VALUE:
                    value = v
                elif key == _F_BY:
                    by = v
        return _parse_fields(op, i, out, t, path, value, by)


def _parse_fields(op, i, out, t, path, value, by):
    """_parse() given the fields found in `op`, _MISSING for an absent one
    (none of them is assigned to here: they may be borrowed references)."""
    if t is not _MISSING:
        kind = _kind_of(t, i)
        out.kind = kind
        if kind == K_SET:
            if path is _MISSING:
                raise PayloadError(f"{_at(i, 'path')}: missing field (a string is required)")
            out.path = _need_str(path, i, "path")
            # An absent value is JSON null, as is an explicit null.
            out.operand = None if value is _MISSING else to_json(value, i, "value")
        elif kind == K_MERGE or kind == K_APPEND:
            if value is _MISSING:
                raise PayloadError(f"{_at(i, 'value')}: missing field")
            out.path = _need_path(path, i, "path")
            out.operand = to_json(value, i, "value")
        else:
            if path is _MISSING:
                raise PayloadError(f"{_at(i, 'path')}: missing field (a string is required)")
            out.path = _need_str(path, i, "path")
            if kind == K_REMOVE:
                out.operand = None
            else:
                out.operand = _need_by(by, i, "by")
        return 0

    # Shorthand: exactly one key naming the op.
    if len(op) == 1:
        (name, arg), = op.items()
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
            field = arg.get("field", _MISSING)
            if field is _MISSING:
                raise PayloadError(f"{_at(i, name + '.field')}: missing field (a string is required)")
            out.kind = K_INCREMENT if name == "increment" else K_DECREMENT
            out.path = _need_str(field, i, name + ".field")
            out.operand = _need_by(arg.get("by", _MISSING), i, name + ".by")
            return 0
    raise PayloadError(
        f'{_at(i, "")}: expected {{"type": ...}} or a one-key shorthand '
        f'(set, merge, increment, decrement, remove), got keys {sorted(map(str, op))}')


# ---- validation that yields per-op errors -------------------------------

def _path_error(op, index, path):
    """The error of a normalised merge/append path (see _need_path), or
    None when it can apply."""
    if type(path) is str:
        return _field_error(op, index, path)
    segs = path
    if len(segs) > MAX_PATH_DEPTH:
        return _error(index, f"{op}.path.too_deep",
                      f"Path depth {len(segs)} exceeds maximum of {MAX_PATH_DEPTH}")
    for seg in segs:
        if not seg:
            return _error(index, f"{op}.path.empty_segment", "Path contains an empty segment")
        err = _segment_error(op, index, seg)
        if err is not None:
            return err
    return None


def _segment_error(op, index, seg):
    # An ASCII segment (nearly every one) is its own UTF-8: nothing to
    # convert, and no try block on the way.
    if cython.compiled:
        ascii = PyUnicode_IS_ASCII(seg)
    else:
        ascii = seg.isascii()
    nbytes = len(seg) if ascii else _utf8_size(index, seg)
    if nbytes > MAX_SEGMENT_BYTES:
        return _error(index, f"{op}.path.segment_too_long",
                      f"Path segment of {nbytes} bytes exceeds maximum of {MAX_SEGMENT_BYTES}")
    if (nbytes == 9 or nbytes == 11) and seg in _PROTO:
        return _error(index, f"{op}.path.proto_polluted",
                      f"Path segment '{seg}' is not allowed (prototype pollution).")
    return None


def _utf8_size(index, seg):
    """The length in UTF-8 of a path segment; PayloadError if it has none."""
    try:
        if cython.compiled:
            # Counts the bytes of the UTF-8 form, which CPython then keeps.
            PyUnicode_AsUTF8AndSize(seg, cython.address(nbytes))
        else:
            nbytes = len(seg.encode("utf-8"))
    except UnicodeEncodeError:
        raise PayloadError(f"ops[{index}].path: not valid Unicode text") from None
    return nbytes


def _field_error(op, index, path):
    # A string path is one first-level field, or the root when empty.
    if not path:
        return None
    return _segment_error(op, index, path)


def _depth(v):
    best = 0
    t = type(v)
    if t is dict:
        for x in v.values():
            d = _depth(x)
            if d > best:
                best = d
        return 1 + best
    if t is list:
        for x in v:
            d = _depth(x)
            if d > best:
                best = d
        return 1 + best
    return 0


def _valid_merge_value(index, value, errors):
    if type(value) is not dict:
        errors.append(_error(index, "merge.value.not_an_object",
                             "Merge value must be a JSON object"))
        return False
    obj = value
    if len(obj) > MAX_VALUE_KEYS:
        errors.append(_error(
            index, "merge.value.too_many_keys",
            f"Merge value has {len(obj)} top-level keys, exceeds maximum of {MAX_VALUE_KEYS}"))
        return False
    for k in obj:
        if k in _PROTO:
            errors.append(_error(
                index, "merge.value.proto_polluted",
                f'Merge value top-level key "{k}" is a prototype-pollution sink'))
            return False
    depth = _depth(obj)
    if depth > MAX_VALUE_DEPTH:
        errors.append(_error(
            index, "merge.value.too_deep",
            f"Merge value JSON nesting depth {depth} exceeds maximum of {MAX_VALUE_DEPTH}"))
        return False
    return True


# ---- arithmetic -------------------------------------------------------------

def _step(v, by, down):
    """v + by (or v - by) with the engine's number rules, or None when v is
    not a number or the result leaves the 64-bit range: integers stay
    integers (i64 first, then u64), floats stay floats and must stay
    finite, booleans are not numbers."""
    t = type(v)
    if t is int:
        if cython.compiled:
            # Both fit a C long long nearly always: try that first.
            overflow = 0
            a = PyLong_AsLongLongAndOverflow(v, cython.address(overflow))
            if overflow == 0:
                b = by
                if not (sub_overflow(a, b, cython.address(r)) if down
                        else add_overflow(a, b, cython.address(r))):
                    return r
        # Past i64: exact arithmetic, then the range a u64 can hold. Only a
        # non-negative start may land there, as in the engine.
        res = v - by if down else v + by
        if _I64_MIN <= res <= _I64_MAX or (v >= 0 and 0 <= res <= _U64_MAX):
            return res
        return None
    if t is float:
        # `by` as a double first, as Python's float arithmetic takes an int.
        x = v
        y = by
        f = x - y if down else x + y
        return f if isfinite(f) else None
    return None


# ---- the engine -------------------------------------------------------------

def _walk_or_create(root, path):
    """The dict at path (a field name or a tuple of them) under root,
    creating missing levels and replacing any non-object on the way by an
    empty object (RFC 7396 style)."""
    node = root
    if type(path) is str:
        child = node.get(path)
        if type(child) is not dict:
            child = {}
            node[path] = child
        return child
    for seg in path:
        child = node.get(seg)
        if type(child) is not dict:
            child = {}
            node[seg] = child
        node = child
    return node


def _initial_append(value):
    # A string starts a string (the concat tier); anything else an array.
    return value if type(value) is str else [value]


def _append_to(target, value, label, index, errors):
    """Target after appending value, or None when it cannot apply (the
    error is then in `errors`): no append leaves None behind."""
    t = type(target)
    if t is list:
        target.append(value)
        return target
    if t is str:
        if type(value) is str:
            return target + value
        errors.append(_error(
            index, "append.type_mismatch",
            f"Expected string append value at path '{_label(label)}', got {_type_name(value)}."))
        return None
    if target is None:
        return _initial_append(value)
    errors.append(_error(
        index, "append.type_mismatch",
        f"Cannot append at path '{_label(label)}': target is {_type_name(target)}, "
        "expected array, string, null, or missing field."))
    return None


def apply(current, missing, ops):
    """Apply ``ops`` in order and return ``(new_value, errors)``.

    ``current`` is the stored value, and is modified in place: pass a
    private copy. ``missing`` says the key does not exist (``current`` is
    then ignored and the value starts as ``{}``). A malformed request raises
    PayloadError (or InvalidValueError for a value that is not JSON) before
    the caller stores anything; a well-formed op that cannot apply is
    skipped and reported in ``errors``, and the other ops still run.
    """
    errors = []
    return apply_into(current, missing, ops, errors), errors


def apply_into(current, missing, ops, errors):
    """apply() for the bindings: the new value is returned, and one error
    per op that could not apply is appended to ``errors``."""
    return apply_parsed(current, missing, parse_ops(ops), errors)


def parse_ops(ops):
    """Check a request's ops and put them in the form apply_parsed() takes
    (None for no ops).

    Everything about an op that does not depend on the value is settled
    here, in op order, so a malformed request raises PayloadError (or
    InvalidValueError) naming the first bad op before anything is read.
    The parsed ops hold private copies of the values in ``ops`` and
    apply_parsed() puts those into the new value: parse again for every
    value the ops are applied to.

    >>> parse_ops([{"type": "nonsense"}])
    Traceback (most recent call last):
    ...
    pystate.errors.PayloadError: deserialization_error: ops[0].type: unknown op 'nonsense'; expected one of set, merge, increment, decrement, append, remove
    """
    if type(ops) is not list and type(ops) is not tuple:
        raise PayloadError(f"ops: expected an array of operations, got {_describe(ops)}")
    n = len(ops)
    first = last = None
    for i in range(n):
        op = _Op.__new__(_Op)
        _parse(ops[i], i, op)
        kind = op.kind
        if kind == K_MERGE or kind == K_APPEND:
            op.invalid = _path_error(_NAMES[kind], i, op.path)
        else:
            op.invalid = _field_error(_NAMES[kind], i, op.path)
        op.next = None
        if last is None:
            first = op
        else:
            last.next = op
        last = op
    return first


def apply_parsed(current, missing, parsed, errors):
    """apply_into() on ops from parse_ops()."""
    # The engine remembers whether the value is still the stand-in `{}` of
    # a missing key: a root increment, decrement or append then starts from
    # the operand instead of failing on an object.
    fresh = missing
    if missing:
        current = {}
    op = None
    i = -1
    while True:
        op = parsed if op is None else op.next
        if op is None:
            break
        i += 1
        if op.invalid is not None:
            errors.append(op.invalid)
            continue
        kind = op.kind
        arg_path = op.path
        operand = op.operand
        if kind == K_SET:
            path = arg_path
            if not path:
                current = operand
                fresh = False
            elif type(current) is dict:
                doc = current
                doc[path] = operand
                fresh = False
            else:
                errors.append(_error(
                    i, "set.target_not_object",
                    f"Cannot set at path '{path}': target is {_type_name(current)}, expected object."))

        elif kind == K_MERGE:
            if not _valid_merge_value(i, operand, errors):
                continue
            if not arg_path:
                # A root merge into a non-object is silently ignored, as in
                # the engine (it only logs a warning).
                if type(current) is dict:
                    doc = current
                    doc.update(operand)
                    fresh = False
            else:
                if type(current) is not dict:
                    current = {}
                _walk_or_create(current, arg_path).update(operand)
                fresh = False

        elif kind == K_INCREMENT or kind == K_DECREMENT:
            path = arg_path
            name = "increment" if kind == K_INCREMENT else "decrement"
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
                doc = current
                old = doc.get(path, _MISSING)
                if old is _MISSING:
                    # -by of i64's minimum is 2**63: fine as a u64.
                    doc[path] = -operand if down else operand
                else:
                    res = _step(old, operand, down)
                    if res is None:
                        errors.append(_error(
                            i, name + ".not_number",
                            f"Expected number at path '{path}', got {_type_name(old)}."))
                        continue
                    doc[path] = res
                fresh = False
            else:
                errors.append(_error(
                    i, name + ".target_not_object",
                    f"Cannot {name} at path '{path}': target is {_type_name(current)}, expected object."))

        elif kind == K_APPEND:
            # Order matters (as in the engine): validate the path (in
            # parse_ops), then require an object root, and only then
            # create intermediates.
            if not arg_path:
                if fresh:
                    current = None
                res = _append_to(current, operand, "root", i, errors)
                if res is not None:
                    current = res
                    fresh = False
            elif type(current) is not dict:
                errors.append(_error(
                    i, "append.target_not_object",
                    f"Cannot append at path '{_segments_label(arg_path)}': target is "
                    f"{_type_name(current)}, expected object."))
            else:
                if type(arg_path) is str:
                    nested = False
                    doc = current
                    leaf = arg_path
                else:
                    segs = arg_path
                    last = len(segs) - 1
                    nested = True
                    doc = _walk_or_create(current, segs[:last])
                    leaf = segs[last]
                old = doc.get(leaf, _MISSING)
                if old is _MISSING:
                    # A missing first-level field follows the value's kind
                    # (string concat tier); a missing nested leaf is always
                    # an array.
                    doc[leaf] = [operand] if nested else _initial_append(operand)
                else:
                    res = _append_to(old, operand, leaf, i, errors)
                    if res is not None and res is not old:  # a list grows in place
                        doc[leaf] = res
                # The engine clears the missing-key flag here even when the
                # append itself failed.
                fresh = False

        else:  # K_REMOVE
            path = arg_path
            if not path:
                current = None
                fresh = False
            elif type(current) is dict:
                doc = current
                doc.pop(path, None)
                fresh = False
            else:
                errors.append(_error(
                    i, "remove.target_not_object",
                    f"Cannot remove at path '{path}': target is {_type_name(current)}, expected object."))
    return current
