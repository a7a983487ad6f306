"""State against the plain-Python model (model.py) over random calls.

Values are compared as orjson text, so a difference in type (1 vs 1.0 vs
True) or in object member order is a failure, not an accident of ==.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as hs
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import pystate
from model import ABSENT, Malformed, ModelStore

I64_MIN, I64_MAX, U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def canon(v):
    return orjson.dumps(v)


names = hs.one_of(
    hs.sampled_from(["", "a", "b", "users", "a.b", "é", "😀", "x" * 300, "\x00", "K", "k"]),
    hs.text(max_size=12),
)
keys_ = hs.sampled_from(["k1", "k2", "", "é", "a.b", "__proto__", "n", "tags", "x" * 257])
good_fields = hs.sampled_from(["n", "tags", "s", "o", "a.b", "é", "e"])
bad_fields = hs.sampled_from(["", "__proto__", "constructor", "prototype", "x" * 257])
fields = hs.one_of(good_fields, good_fields, good_fields, bad_fields)

ints = hs.one_of(
    hs.integers(I64_MIN, U64_MAX),
    hs.sampled_from([I64_MIN, I64_MIN + 1, -1, 0, 1, I64_MAX - 1, I64_MAX, I64_MAX + 1, U64_MAX - 1, U64_MAX]),
)
scalars = hs.one_of(
    hs.none(),
    hs.booleans(),
    ints,
    hs.floats(allow_nan=False, allow_infinity=False),
    hs.text(max_size=20),
)
json_values = hs.recursive(
    scalars,
    lambda children: hs.one_of(
        hs.lists(children, max_size=4),
        hs.dictionaries(hs.one_of(fields, hs.text(max_size=6)), children, max_size=4),
    ),
    max_leaves=12,
)
bys = hs.one_of(hs.integers(I64_MIN, I64_MAX), hs.sampled_from([I64_MIN, I64_MAX, 0, 1, -1]))
seg_paths = hs.one_of(
    hs.none(),
    fields,
    hs.lists(good_fields, min_size=2, max_size=3),
    hs.lists(fields, max_size=4),
    hs.just([f"d{i}" for i in range(33)]),
)


def deep(n):
    v = {}
    for _ in range(n):
        v = {"d": v}
    return v


merge_values = hs.one_of(
    hs.dictionaries(hs.one_of(fields, hs.text(max_size=4)), json_values, max_size=4),
    json_values,
    hs.sampled_from([deep(15), deep(16), {"__proto__": 1}]),
)

wire_ops = hs.one_of(
    hs.builds(lambda p, v: {"type": "set", "path": p, "value": v}, fields, json_values),
    hs.builds(lambda p, v: {"type": "merge", "path": p, "value": v}, seg_paths, merge_values),
    hs.builds(lambda k, p, b: {"type": k, "path": p, "by": b}, hs.sampled_from(["increment", "decrement"]), fields, bys),
    hs.builds(lambda p, v: {"type": "append", "path": p, "value": v}, seg_paths, json_values),
    hs.builds(lambda p: {"type": "remove", "path": p}, fields),
)
short_ops = hs.one_of(
    hs.builds(lambda v: {"set": v}, json_values),
    hs.builds(lambda v: {"merge": v}, merge_values),
    hs.builds(lambda k, f, b: {k: {"field": f, "by": b}}, hs.sampled_from(["increment", "decrement"]), fields, bys),
    hs.builds(lambda f: {"remove": f}, fields),
)
bad_ops = hs.sampled_from(
    [
        {"type": "nope", "path": "a"},
        {"type": "increment", "path": "a", "by": 1.5},
        {"type": "set", "value": 1},
        {"append": 1},
        "not an op",
        {"type": "merge", "path": 7, "value": {}},
    ]
)
op_lists = hs.lists(hs.one_of(wire_ops, wire_ops, short_ops), max_size=6)


def nested(depth):
    v = "leaf"
    for i in range(depth):
        v = [v] if i % 2 else {"n": v}
    return v


# Values the store must refuse: beyond 64-bit integers, NaN, infinities.
not_json = hs.one_of(
    hs.integers(min_value=U64_MAX + 1),
    hs.integers(max_value=I64_MIN - 1),
    hs.sampled_from([float("nan"), float("inf"), -float("inf")]),
).map(lambda bad: {"ok": 1, "bad": [bad]})


class StateMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.real = pystate.State()
        self.model = ModelStore()

    def teardown(self):
        self.real.close()

    @rule(scope=names, key=keys_, value=json_values)
    def set(self, scope, key, value):
        assert canon(self.real.set(scope, key, value)) == canon(self.model.set(scope, key, value))

    @rule(scope=names, key=keys_, depth=hs.integers(20, 250))
    def set_deep(self, scope, key, depth):
        value = nested(depth)
        assert canon(self.real.set(scope, key, value)) == canon(self.model.set(scope, key, value))

    @rule(scope=names, key=keys_, value=not_json)
    def set_refused(self, scope, key, value):
        with pytest.raises(pystate.InvalidValueError):
            self.real.set(scope, key, value)
        with pytest.raises(pystate.InvalidValueError):
            self.real.update(scope, key, [{"type": "set", "path": "x", "value": value}])

    @rule(scope=names, key=keys_)
    def get(self, scope, key):
        missing = object()
        real, model = self.real.get(scope, key, missing), self.model.get(scope, key, missing)
        assert (real is missing) == (model is missing)
        if real is not missing:
            assert canon(real) == canon(model)

    @rule(scope=names, key=keys_)
    def delete(self, scope, key):
        assert canon(self.real.delete(scope, key)) == canon(self.model.delete(scope, key))

    @rule(scope=names, key=keys_, ops=op_lists)
    def update(self, scope, key, ops):
        old, new, errs = self.model.update(scope, key, ops)
        r = self.real.update(scope, key, ops)
        assert canon(r.old_value) == canon(old)
        assert canon(r.new_value) == canon(new)
        assert [(e["op_index"], e["code"]) for e in r.errors] == errs

    @rule(scope=names, key=keys_, ops=op_lists, bad=bad_ops, at=hs.integers(0, 6))
    def malformed_update(self, scope, key, ops, bad, at):
        ops = ops[:at] + [bad] + ops[at:]
        with pytest.raises(Malformed):
            self.model.update(scope, key, ops)
        with pytest.raises(pystate.PayloadError):
            self.real.update(scope, key, ops)

    @rule(scope=names)
    def list(self, scope):
        assert canon(self.real.list(scope)) == canon(self.model.list(scope))

    @invariant()
    def groups_match(self):
        assert self.real.list_groups() == self.model.list_groups()

    @invariant()
    def key_count_matches(self):
        assert self.real.stats()["keys"] == sum(len(t) for t in self.model.scopes.values())


StateMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestStateAgainstModel = StateMachine.TestCase


def test_model_flags_absent_correctly():
    # The model itself must distinguish a stored null from a missing key.
    m = ModelStore()
    m.set("s", "k", None)
    assert m.get("s", "k", ABSENT) is None
    assert m.get("s", "zz", ABSENT) is ABSENT


# ---- the same, on a file-based store, with crashes and damage -------------------------

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402

import logfmt  # noqa: E402


def replay(records):
    """A scope's contents from its log records, replayed independently."""
    t = {}
    for r in records:
        key = r.key.decode()
        if r.kind == logfmt.PUT:
            t[key] = orjson.loads(r.value)
        else:
            t.pop(key, None)
    return t


class DurableStateMachine(StateMachine):
    """Adds closing and reopening, crashes (the files as a killed process
    leaves them: every acknowledged write reached the OS), torn tails and
    compaction. After a record is torn off, the model takes the scope's
    contents from an independent replay of the log's remaining records
    (logfmt)."""

    def __init__(self):
        RuleBasedStateMachine.__init__(self)
        self.dirs = [tempfile.mkdtemp(prefix="pystate-model-")]
        self.real = self._open(self.dirs[-1])
        self.model = ModelStore()

    def _open(self, path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pystate.RecoveryWarning)
            return pystate.State(path, sync="never", _compact_min_dead=2048)

    def teardown(self):
        self.real.close()
        if self._other_st is not None:
            self._other_st.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    # A second opener of the same directory: to the C core a process like
    # any other (its own lock description, mapping and tables), made in
    # this one so that a step can take it. Its writes go into the model;
    # every later step of the first store must see them.
    _other_st = None

    def _other(self):
        o = self._other_st
        if o is None or o.path != self.dirs[-1]:
            if o is not None:
                o.close()
            o = self._other_st = self._open(self.dirs[-1])
        return o

    @rule(scope=names, key=keys_, value=json_values)
    def another_process_sets(self, scope, key, value):
        assert canon(self._other().set(scope, key, value)) == canon(self.model.set(scope, key, value))

    @rule(scope=names, key=keys_)
    def another_process_deletes(self, scope, key):
        assert canon(self._other().delete(scope, key)) == canon(self.model.delete(scope, key))

    @rule(scope=names, key=keys_, ops=op_lists)
    def another_process_updates(self, scope, key, ops):
        old, new, errs = self.model.update(scope, key, ops)
        r = self._other().update(scope, key, ops)
        assert canon(r.old_value) == canon(old) and canon(r.new_value) == canon(new)

    @rule()
    def another_process_compacts(self):
        self._other().compact()

    def _crash_copy(self):
        """A copy of the directory as it is now, and the store reopened on it."""
        src = self.dirs[-1]
        dst = tempfile.mkdtemp(prefix="pystate-model-")
        for name in os.listdir(src):
            if name.endswith(".log") or name == "PYSTATE":  # the logs and the store's marker
                shutil.copy(os.path.join(src, name), dst)
        self.real.close()
        if self._other_st is not None:
            self._other_st.close()
            self._other_st = None
        self.dirs.append(dst)
        return dst

    @rule()
    def reopen(self):
        self.real.close()
        self.real = self._open(self.dirs[-1])

    @rule()
    def compact(self):
        self.real.compact()

    @rule()
    def crash(self):
        self.real = self._open(self._crash_copy())

    @rule(data=hs.data(), tail=hs.sampled_from([b"\x00" * 64, b"\xff" * 3, bytes(range(40))]))
    def crash_with_garbage_tail(self, data, tail):
        dst = self._crash_copy()
        logs = sorted(logfmt.logs(dst).values())
        if logs:
            with open(data.draw(hs.sampled_from(logs)), "ab") as f:
                f.write(tail)
        self.real = self._open(dst)
        if logs:
            # Zeros past the log's end are free space; anything else is torn.
            torn = 1 if any(tail) else 0
            assert self.real.stats()["recovery"]["torn_tails"] == torn

    @rule(data=hs.data())
    def crash_inside_the_last_record(self, data):
        dst = self._crash_copy()
        logs = logfmt.logs(dst)
        if logs:
            name = data.draw(hs.sampled_from(sorted(logs)))
            raw = open(logs[name], "rb").read()
            _, recs, end = logfmt.parse(raw)
            if recs:
                last = recs[-1]
                cut = data.draw(hs.integers(last.offset, last.offset + last.size - 1))
                with open(logs[name], "wb") as f:
                    f.write(raw[:cut])
                # The scope is what its other records say it is.
                scope = name.decode()
                t = replay(recs[:-1])
                if t:
                    self.model.scopes[scope] = t
                else:
                    self.model.scopes.pop(scope, None)
        self.real = self._open(dst)

    @invariant()
    def logs_check_out(self):
        assert self.real.check()["ok"]


DurableStateMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestDurableStateAgainstModel = DurableStateMachine.TestCase
