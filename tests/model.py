"""A plain-Python model of iii-state, written from the engine's behaviour
independently of pystate's implementation. The Hypothesis state machine
(test_model.py) runs the same random calls against both and compares.

It is slow and simple on purpose: deep copies everywhere, no tricks.
"""

from __future__ import annotations

import copy

I64_MIN, I64_MAX, U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
PROTO = {"__proto__", "constructor", "prototype"}
ABSENT = object()


class Malformed(Exception):
    """The request itself is bad: the real store must raise PayloadError."""


def type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def depth(v):
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def add(n, by):
    """n + by under the engine's rules, or None."""
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        return None
    if isinstance(n, float):
        r = n + float(by)
        return r if r not in (float("inf"), float("-inf")) and r == r else None
    r = n + by
    if I64_MIN <= n <= I64_MAX and I64_MIN <= r <= I64_MAX:
        return r
    if n >= 0 and 0 <= r <= U64_MAX:
        return r
    return None


def normalise(op):
    """(kind, path, operand) from a wire-form or shorthand op; raises
    Malformed like the real parser would."""
    if not isinstance(op, dict):
        raise Malformed("op not an object")
    if "type" in op:
        kind = op["type"]
        if kind not in ("set", "merge", "increment", "decrement", "append", "remove"):
            raise Malformed("unknown type")
        path = op.get("path", ABSENT)
        if kind in ("merge", "append"):
            if "value" not in op:
                raise Malformed("missing value")
            if path is ABSENT or path is None:
                segs = []
            elif isinstance(path, str):
                segs = [path] if path else []
            elif isinstance(path, list) and all(isinstance(s, str) for s in path):
                segs = list(path)
            else:
                raise Malformed("bad path")
            return kind, segs, op["value"]
        if not isinstance(path, str):
            raise Malformed("path must be a string")
        if kind == "set":
            return kind, path, op.get("value")
        if kind == "remove":
            return kind, path, None
        by = op.get("by", ABSENT)
        if isinstance(by, bool) or not isinstance(by, int) or not I64_MIN <= by <= I64_MAX:
            raise Malformed("bad by")
        return kind, path, by
    if len(op) != 1:
        raise Malformed("not a shorthand")
    (kind, arg), = op.items()
    if kind == "set":
        return "set", "", arg
    if kind == "merge":
        return "merge", [], arg
    if kind == "remove":
        if not isinstance(arg, str):
            raise Malformed("remove field")
        return "remove", arg, None
    if kind in ("increment", "decrement"):
        if not isinstance(arg, dict) or not isinstance(arg.get("field"), str):
            raise Malformed("shorthand field")
        by = arg.get("by", ABSENT)
        if isinstance(by, bool) or not isinstance(by, int) or not I64_MIN <= by <= I64_MAX:
            raise Malformed("bad by")
        return kind, arg["field"], by
    raise Malformed("unknown shorthand")


def path_error(kind, segs):
    """The code of the first path problem, or None."""
    if len(segs) > 32:
        return f"{kind}.path.too_deep"
    for s in segs:
        if s == "":
            return f"{kind}.path.empty_segment"
        if len(s.encode()) > 256:
            return f"{kind}.path.segment_too_long"
        if s in PROTO:
            return f"{kind}.path.proto_polluted"
    return None


def apply_ops(old, ops):
    """Returns (new_value, [(op_index, code)]); raises Malformed."""
    if not isinstance(ops, list):
        raise Malformed("ops not a list")
    parsed = [normalise(o) for o in ops]  # the whole request is checked first
    missing = old is ABSENT
    cur = {} if missing else copy.deepcopy(old)
    errs = []
    for i, (kind, path, arg) in enumerate(parsed):
        arg = copy.deepcopy(arg)
        segs = path if isinstance(path, list) else ([path] if path else [])
        code = path_error(kind, segs)
        if code:
            errs.append((i, code))
            continue
        if kind == "set":
            if not segs:
                cur, missing = arg, False
            elif isinstance(cur, dict):
                cur[path] = arg
                missing = False
            else:
                errs.append((i, "set.target_not_object"))
        elif kind == "remove":
            if not segs:
                cur, missing = None, False
            elif isinstance(cur, dict):
                cur.pop(path, None)
                missing = False
            else:
                errs.append((i, "remove.target_not_object"))
        elif kind in ("increment", "decrement"):
            by = arg if kind == "increment" else -arg
            if not segs:
                if missing:
                    cur, missing = by, False
                    continue
                r = add(cur, arg) if kind == "increment" else sub(cur, arg)
                if r is None:
                    errs.append((i, f"{kind}.not_number"))
                    continue
                cur, missing = r, False
            elif isinstance(cur, dict):
                if path not in cur:
                    cur[path] = by
                else:
                    r = add(cur[path], arg) if kind == "increment" else sub(cur[path], arg)
                    if r is None:
                        errs.append((i, f"{kind}.not_number"))
                        continue
                    cur[path] = r
                missing = False
            else:
                errs.append((i, f"{kind}.target_not_object"))
        elif kind == "merge":
            if not isinstance(arg, dict):
                errs.append((i, "merge.value.not_an_object"))
                continue
            if len(arg) > 1024:
                errs.append((i, "merge.value.too_many_keys"))
                continue
            if any(k in PROTO for k in arg):
                errs.append((i, "merge.value.proto_polluted"))
                continue
            if depth(arg) > 16:
                errs.append((i, "merge.value.too_deep"))
                continue
            if not segs:
                if isinstance(cur, dict):
                    cur.update(arg)
                    missing = False
                continue
            if not isinstance(cur, dict):
                cur = {}
            node = cur
            for s in segs:
                if not isinstance(node.get(s), dict):
                    node[s] = {}
                node = node[s]
            node.update(arg)
            missing = False
        else:  # append
            if not segs:
                if missing:
                    cur = None
                r = append_value(cur, arg)
                if r is ABSENT:
                    errs.append((i, "append.type_mismatch"))
                else:
                    cur, missing = r, False
                continue
            if not isinstance(cur, dict):
                errs.append((i, "append.target_not_object"))
                continue
            node = cur
            for s in segs[:-1]:
                if not isinstance(node.get(s), dict):
                    node[s] = {}
                node = node[s]
            leaf = segs[-1]
            if leaf not in node:
                node[leaf] = arg if (len(segs) == 1 and isinstance(arg, str)) else [arg]
            else:
                r = append_value(node[leaf], arg)
                if r is ABSENT:
                    errs.append((i, "append.type_mismatch"))
                else:
                    node[leaf] = r
            missing = False
    return cur, errs


def sub(n, by):
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        return None
    if isinstance(n, float):
        r = n - float(by)
        return r if r not in (float("inf"), float("-inf")) and r == r else None
    r = n - by
    if I64_MIN <= n <= I64_MAX and I64_MIN <= r <= I64_MAX:
        return r
    if n >= 0 and 0 <= r <= U64_MAX:
        return r
    return None


def append_value(target, v):
    if isinstance(target, list):
        return target + [v]
    if isinstance(target, str):
        return target + v if isinstance(v, str) else ABSENT
    if target is None:
        return v if isinstance(v, str) else [v]
    return ABSENT


class ModelStore:
    def __init__(self):
        self.scopes: dict[str, dict[str, object]] = {}

    def set(self, scope, key, value):
        t = self.scopes.setdefault(scope, {})
        old = t.get(key, ABSENT)
        t[key] = copy.deepcopy(value)
        return None if old is ABSENT else old

    def get(self, scope, key, default=None):
        t = self.scopes.get(scope, {})
        return copy.deepcopy(t[key]) if key in t else default

    def delete(self, scope, key):
        t = self.scopes.get(scope)
        if t is None or key not in t:
            return None
        old = t.pop(key)
        if not t:
            del self.scopes[scope]
        return old

    def update(self, scope, key, ops):
        old = self.scopes.get(scope, {}).get(key, ABSENT)
        new, errs = apply_ops(old, ops)
        self.scopes.setdefault(scope, {})[key] = new
        return (None if old is ABSENT else old), copy.deepcopy(new), errs

    def list(self, scope):
        return copy.deepcopy(list(self.scopes.get(scope, {}).values()))

    def list_groups(self):
        return sorted(self.scopes)
