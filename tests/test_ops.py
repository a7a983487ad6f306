"""state::update op semantics, checked against the iii engine's behaviour
(engine/src/update_ops.rs): every op, every error code, the quirks."""

from __future__ import annotations

import pytest

import pystate
from conftest import MISSING

I64_MIN, I64_MAX, U64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
DOC_URL = "https://iii.dev/docs/workers/iii-state#error-codes"

# Part of the shared adapter contract (see tests/conftest.py).
CONTRACT = True


def op(kind, path=MISSING, **kw):
    d = {"type": kind}
    if path is not MISSING:
        d["path"] = path
    d.update(kw)
    return d


# ---- set ------------------------------------------------------------------


def test_set_writes_a_first_level_field(run_ops):
    assert run_ops({"a": 1}, [op("set", "b", value={"x": [1]})]) == ({"a": 1, "b": {"x": [1]}}, [])


def test_set_with_empty_path_replaces_the_root(run_ops):
    assert run_ops({"a": 1}, [op("set", "", value=[1, 2])]) == ([1, 2], [])


@pytest.mark.adapters("kv-memory", "kv-file", "redis")  # the wire protocol reads a stored null as missing
@pytest.mark.parametrize("ops", [[op("set", "")], [op("set", "", value=None)]])
def test_set_without_value_writes_null(run_ops, ops):
    assert run_ops({"": "empty-field", "keep": True}, ops) == (None, [])


def test_set_field_on_a_non_object_is_an_error(run_ops, codes):
    new, errors = run_ops([1], [op("set", "a", value=1)])
    assert new == [1]
    assert errors == [
        {
            "op_index": 0,
            "code": "set.target_not_object",
            "message": "Cannot set at path 'a': target is array, expected object.",
            "doc_url": DOC_URL,
        }
    ]


def test_dotted_path_is_one_field(run_ops):
    new, _ = run_ops({"user": {"name": "A"}}, [op("set", "user.name", value="B")])
    assert new == {"user": {"name": "A"}, "user.name": "B"}


# ---- merge ----------------------------------------------------------------


def test_root_merge_is_shallow(run_ops):
    new, _ = run_ops({"a": {"x": 1}, "b": 2}, [op("merge", value={"a": {"y": 2}, "c": 3})])
    assert new == {"a": {"y": 2}, "b": 2, "c": 3}


@pytest.mark.parametrize("path", [MISSING, None, "", []])
def test_root_merge_path_forms_are_equivalent(run_ops, path):
    assert run_ops({"a": 1}, [op("merge", path, value={"b": 2})]) == ({"a": 1, "b": 2}, [])


def test_root_merge_into_a_non_object_is_a_silent_no_op(run_ops):
    assert run_ops("leaf", [op("merge", value={"a": 1})]) == ("leaf", [])


def test_merge_into_existing_first_level_object(run_ops):
    new, _ = run_ops({"s1": {"ts1": "a"}}, [op("merge", "s1", value={"ts2": "b"})])
    assert new == {"s1": {"ts1": "a", "ts2": "b"}}


def test_merge_string_path_equals_one_segment_array(run_ops, st):
    a = run_ops({}, [op("merge", "foo", value={"x": 1})])
    b = run_ops({}, [op("merge", ["foo"], value={"x": 1})])
    assert a == b == ({"foo": {"x": 1}}, [])


def test_merge_nested_path_creates_missing_levels(run_ops):
    new, _ = run_ops({}, [op("merge", ["a", "b", "c"], value={"x": 1})])
    assert new == {"a": {"b": {"c": {"x": 1}}}}


def test_merge_nested_path_replaces_non_object_intermediates(run_ops):
    new, _ = run_ops({"sessions": {"abc": "garbage"}}, [op("merge", ["sessions", "abc"], value={"author": "a"})])
    assert new == {"sessions": {"abc": {"author": "a"}}}


def test_merge_at_path_replaces_a_non_object_root(run_ops):
    assert run_ops(5, [op("merge", "a", value={"x": 1})]) == ({"a": {"x": 1}}, [])


def test_merge_at_nested_target_is_shallow(run_ops):
    old = {"sessions": {"abc": {"author": "old", "topic": "kept"}}}
    new, _ = run_ops(old, [op("merge", ["sessions", "abc"], value={"author": "new"})])
    assert new == {"sessions": {"abc": {"author": "new", "topic": "kept"}}}


def test_merge_segment_with_dot_is_literal(run_ops):
    new, _ = run_ops({"a": {"b": {"kept": True}}}, [op("merge", ["a.b"], value={"x": 1})])
    assert new == {"a": {"b": {"kept": True}}, "a.b": {"x": 1}}


@pytest.mark.parametrize("value", ["str", 1, None, [1], True])
def test_merge_value_must_be_an_object(run_ops, value):
    new, errors = run_ops({"a": 1}, [op("merge", "foo", value=value)])
    assert new == {"a": 1}
    assert [(e["code"], e["message"]) for e in errors] == [
        ("merge.value.not_an_object", "Merge value must be a JSON object")
    ]


def test_merge_path_depth_limit_is_32(run_ops, codes):
    ok = [f"k{i}" for i in range(32)]
    assert run_ops({}, [op("merge", ok, value={"x": 1})])[1] == []
    new, errors = run_ops({}, [op("merge", ok + ["k32"], value={"x": 1})])
    assert codes(errors) == ["merge.path.too_deep"]
    assert errors[0]["message"] == "Path depth 33 exceeds maximum of 32"
    assert new == {}


def test_merge_segment_limit_is_256_utf8_bytes(run_ops, codes):
    assert run_ops({}, [op("merge", ["é" * 128], value={"x": 1})])[1] == []
    _, errors = run_ops({}, [op("merge", ["é" * 128 + "a"], value={"x": 1})])
    assert codes(errors) == ["merge.path.segment_too_long"]
    assert errors[0]["message"] == "Path segment of 257 bytes exceeds maximum of 256"


def test_merge_empty_segment_is_an_error(run_ops, codes):
    _, errors = run_ops({}, [op("merge", ["a", ""], value={"x": 1})])
    assert codes(errors) == ["merge.path.empty_segment"]
    _, errors = run_ops({}, [op("merge", [""], value={"x": 1})])
    assert codes(errors) == ["merge.path.empty_segment"]


@pytest.mark.parametrize("sink", ["__proto__", "constructor", "prototype"])
def test_merge_rejects_prototype_pollution(run_ops, codes, sink):
    new, errors = run_ops({}, [op("merge", ["a", sink], value={"x": 1})])
    assert (new, codes(errors)) == ({}, ["merge.path.proto_polluted"])
    assert errors[0]["message"] == f"Path segment '{sink}' is not allowed (prototype pollution)."
    new, errors = run_ops({}, [op("merge", "foo", value={sink: {"polluted": True}})])
    assert (new, codes(errors)) == ({}, ["merge.value.proto_polluted"])
    assert errors[0]["message"] == f'Merge value top-level key "{sink}" is a prototype-pollution sink'


def test_merge_value_depth_limit_is_16(run_ops, codes):
    def nested(depth):
        v = {}
        for _ in range(depth - 1):
            v = {"n": v}
        return v

    assert run_ops({}, [op("merge", "f", value=nested(16))])[1] == []
    new, errors = run_ops({}, [op("merge", "f", value=nested(17))])
    assert (new, codes(errors)) == ({}, ["merge.value.too_deep"])
    assert errors[0]["message"] == "Merge value JSON nesting depth 17 exceeds maximum of 16"
    # arrays count as levels too
    assert codes(run_ops({}, [op("merge", value={"a": [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]})])[1]) == [
        "merge.value.too_deep"
    ]


def test_merge_value_key_limit_is_1024(run_ops, codes):
    assert run_ops({}, [op("merge", value={str(i): i for i in range(1024)})])[1] == []
    _, errors = run_ops({}, [op("merge", value={str(i): i for i in range(1025)})])
    assert codes(errors) == ["merge.value.too_many_keys"]
    assert errors[0]["message"] == "Merge value has 1025 top-level keys, exceeds maximum of 1024"


# ---- increment / decrement --------------------------------------------------


def test_increment_and_decrement_existing_and_missing_fields(run_ops):
    new, errors = run_ops(
        {"count": 10},
        [op("increment", "count", by=5), op("decrement", "count", by=3), op("increment", "m1", by=3), op("decrement", "m2", by=3)],
    )
    assert (new, errors) == ({"count": 12, "m1": 3, "m2": -3}, [])


@pytest.mark.parametrize(
    "field, type_name", [("s", "string"), ("n", "null"), ("b", "boolean"), ("o", "object"), ("a", "array")]
)
@pytest.mark.parametrize("kind", ["increment", "decrement"])
def test_numeric_ops_reject_non_numbers(run_ops, kind, field, type_name):
    old = {"s": "x", "n": None, "b": True, "o": {}, "a": []}
    new, errors = run_ops(old, [op(kind, field, by=1)])
    assert new == old
    assert errors == [
        {
            "op_index": 0,
            "code": f"{kind}.not_number",
            "message": f"Expected number at path '{field}', got {type_name}.",
            "doc_url": DOC_URL,
        }
    ]


def test_numeric_op_by_zero_still_checks_the_type(run_ops, codes):
    new, errors = run_ops({"bad": "v", "count": 2}, [op("increment", "bad", by=0), op("decrement", "count", by=0)])
    assert new == {"bad": "v", "count": 2}
    assert codes(errors) == ["increment.not_number"]


def test_floats_stay_floats(run_ops):
    new, _ = run_ops({"x": 1.5, "y": 2.0}, [op("increment", "x", by=2), op("decrement", "x", by=1), op("increment", "y", by=1)])
    assert new == {"x": 2.5, "y": 3.0}
    assert type(new["y"]) is float


def test_integer_past_i64_becomes_u64(run_ops):
    new, _ = run_ops({"c": I64_MAX}, [op("increment", "c", by=1)])
    assert new == {"c": I64_MAX + 1}


def test_u64_precision_is_kept(run_ops):
    new, _ = run_ops({"i": I64_MAX + 10, "d": I64_MAX + 10}, [op("increment", "i", by=1), op("decrement", "d", by=1)])
    assert new == {"i": I64_MAX + 11, "d": I64_MAX + 9}


def test_u64_back_into_i64(run_ops):
    new, _ = run_ops({"c": I64_MAX + 5}, [op("increment", "c", by=-10)])
    assert new == {"c": I64_MAX - 5}


def test_zero_minus_i64_min_fits_u64(run_ops):
    assert run_ops({"c": 0}, [op("decrement", "c", by=I64_MIN)]) == ({"c": 2**63}, [])


@pytest.mark.parametrize(
    "start, kind, by",
    [(U64_MAX, "increment", 1), (I64_MIN, "decrement", 1), (-1, "increment", I64_MIN), (I64_MIN, "increment", -1)],
)
def test_leaving_the_64_bit_range_is_not_number(run_ops, codes, start, kind, by):
    new, errors = run_ops({"c": start}, [op(kind, "c", by=by)])
    assert new == {"c": start}
    assert codes(errors) == [f"{kind}.not_number"]


def test_decrement_missing_field_by_i64_min_gives_2_pow_63(run_ops):
    assert run_ops({}, [op("decrement", "c", by=I64_MIN)]) == ({"c": 2**63}, [])


def test_root_numeric_ops_act_on_the_root(run_ops):
    assert run_ops(2, [op("increment", "", by=3)]) == (5, [])
    assert run_ops(5, [op("decrement", "", by=3)]) == (2, [])
    assert run_ops(1.5, [op("increment", "", by=1)]) == (2.5, [])


def test_root_numeric_ops_on_a_missing_key_start_from_by(run_ops):
    assert run_ops(MISSING, [op("increment", "", by=7)]) == (7, [])
    assert run_ops(MISSING, [op("decrement", "", by=7)]) == (-7, [])


def test_root_increment_on_an_object_is_not_number(run_ops, codes):
    new, errors = run_ops({}, [op("increment", "", by=1)])
    assert (new, codes(errors)) == ({}, ["increment.not_number"])
    assert errors[0]["message"] == "Expected number at path 'root', got object."


def test_field_increment_on_a_non_object_root(run_ops):
    new, errors = run_ops(3, [op("decrement", "f", by=1)])
    assert new == 3
    assert errors[0]["code"] == "decrement.target_not_object"
    assert errors[0]["message"] == "Cannot decrement at path 'f': target is number, expected object."


# ---- append -----------------------------------------------------------------


def test_append_pushes_one_element(run_ops):
    new, _ = run_ops({"e": [{"k": 1}]}, [op("append", "e", value={"k": 2}), op("append", "e", value=["nested"])])
    assert new == {"e": [{"k": 1}, {"k": 2}, ["nested"]]}


def test_append_concatenates_strings(run_ops):
    assert run_ops({"t": "hello"}, [op("append", "t", value=" world")]) == ({"t": "hello world"}, [])


def test_append_to_missing_or_null_field_starts_by_value_kind(run_ops):
    new, _ = run_ops(
        {"sn": None, "an": None},
        [op("append", "s", value="x"), op("append", "a", value=1), op("append", "sn", value="y"), op("append", "an", value={"k": 1})],
    )
    assert new == {"sn": "y", "an": [{"k": 1}], "s": "x", "a": [1]}


def test_append_non_string_to_string_is_a_mismatch(run_ops):
    new, errors = run_ops({"t": "hello"}, [op("append", "t", value={"not": "str"})])
    assert new == {"t": "hello"}
    assert [(e["code"], e["message"]) for e in errors] == [
        ("append.type_mismatch", "Expected string append value at path 't', got object.")
    ]


@pytest.mark.parametrize("target, type_name", [({}, "object"), (1, "number"), (False, "boolean")])
def test_append_to_a_non_container_is_a_mismatch(run_ops, target, type_name):
    new, errors = run_ops({"e": target}, [op("append", "e", value="chunk")])
    assert new == {"e": target}
    assert errors[0]["code"] == "append.type_mismatch"
    assert errors[0]["message"] == (
        f"Cannot append at path 'e': target is {type_name}, expected array, string, null, or missing field."
    )


def test_root_append_on_a_missing_key(run_ops):
    assert run_ops(MISSING, [op("append", value="hello")]) == ("hello", [])
    assert run_ops(MISSING, [op("append", None, value={"k": 1})]) == ([{"k": 1}], [])


def test_root_append_on_existing_values(run_ops, codes):
    assert run_ops([1], [op("append", "", value=2)]) == ([1, 2], [])
    new, errors = run_ops({}, [op("append", value=2)])
    assert (new, codes(errors)) == ({}, ["append.type_mismatch"])
    assert "at path 'root'" in errors[0]["message"]


def test_nested_append_pushes_and_creates_levels(run_ops):
    assert run_ops({"e": {"buf": ["a"]}}, [op("append", ["e", "buf"], value="b")]) == ({"e": {"buf": ["a", "b"]}}, [])
    assert run_ops({}, [op("append", ["e", "buf"], value="a")]) == ({"e": {"buf": ["a"]}}, [])


def test_nested_append_to_missing_leaf_always_makes_an_array(run_ops):
    assert run_ops({"e": {}}, [op("append", ["e", "buf"], value="x")]) == ({"e": {"buf": ["x"]}}, [])
    assert run_ops({}, [op("append", "buf", value="x")]) == ({"buf": "x"}, [])


def test_nested_append_to_object_leaf_is_a_mismatch(run_ops, codes):
    old = {"e": {"buf": {"x": "y"}}}
    new, errors = run_ops(old, [op("append", ["e", "buf"], value="z")])
    assert (new, codes(errors)) == (old, ["append.type_mismatch"])


def test_path_append_on_non_object_root(run_ops):
    new, errors = run_ops([1, 2, 3], [op("append", ["a", "b"], value="x")])
    assert new == [1, 2, 3]
    assert errors[0]["code"] == "append.target_not_object"
    assert errors[0]["message"] == "Cannot append at path '[a, b]': target is array, expected object."


def test_dotted_append_path_is_one_field(run_ops):
    new, _ = run_ops({"e": {"buf": ["n"]}}, [op("append", "e.buf", value="flat")])
    assert new == {"e": {"buf": ["n"]}, "e.buf": "flat"}


@pytest.mark.parametrize("path", [["__proto__"], ["a", "constructor", "b"], ["safe", "prototype"]])
def test_append_proto_segment_anywhere_is_rejected_before_any_change(run_ops, codes, path):
    new, errors = run_ops({"safe": {}}, [op("append", path, value="x")])
    assert (new, codes(errors)) == ({"safe": {}}, ["append.path.proto_polluted"])


# ---- remove -------------------------------------------------------------------


def test_remove_field_and_missing_field(run_ops):
    assert run_ops({"a": 1, "b": 2}, [op("remove", "a"), op("remove", "zz")]) == ({"b": 2}, [])


@pytest.mark.adapters("kv-memory", "kv-file", "redis")  # the wire protocol reads a stored null as missing
def test_remove_root_gives_null(run_ops):
    assert run_ops({"": 1, "keep": True}, [op("remove", "")]) == (None, [])


def test_remove_field_of_non_object(run_ops):
    new, errors = run_ops("s", [op("remove", "a")])
    assert new == "s"
    assert errors[0]["code"] == "remove.target_not_object"
    assert errors[0]["message"] == "Cannot remove at path 'a': target is string, expected object."


# ---- all ops: paths and error handling ------------------------------------------


@pytest.mark.parametrize("sink", ["__proto__", "constructor", "prototype"])
@pytest.mark.parametrize(
    "make",
    [
        lambda s: op("set", s, value=True),
        lambda s: op("append", s, value="c"),
        lambda s: op("increment", s, by=1),
        lambda s: op("decrement", s, by=1),
        lambda s: op("remove", s),
    ],
    ids=["set", "append", "increment", "decrement", "remove"],
)
def test_every_op_rejects_proto_paths_with_its_own_code(run_ops, codes, make, sink):
    o = make(sink)
    assert codes(run_ops({}, [o])[1]) == [f"{o['type']}.path.proto_polluted"]


def test_long_segment_code_names_the_op(run_ops, codes):
    assert codes(run_ops({}, [op("append", "a" * 257, value="x")])[1]) == ["append.path.segment_too_long"]
    assert codes(run_ops({}, [op("set", "a" * 257, value=1)])[1]) == ["set.path.segment_too_long"]


def test_failed_ops_are_skipped_and_keep_their_index(run_ops):
    new, errors = run_ops(
        {"bad": "v", "events": {}},
        [op("increment", "bad", by=1), op("set", "__proto__", value=True), op("append", "events", value="c"), op("set", "ok", value=True)],
    )
    assert new == {"bad": "v", "events": {}, "ok": True}
    assert [(e["op_index"], e["code"]) for e in errors] == [
        (0, "increment.not_number"),
        (1, "set.path.proto_polluted"),
        (2, "append.type_mismatch"),
    ]


def test_missing_key_starts_as_empty_object(run_ops):
    assert run_ops(MISSING, [op("set", "a", value=1)]) == ({"a": 1}, [])
    assert run_ops(MISSING, []) == ({}, [])


def test_update_writes_back_even_when_every_op_failed(st):
    r = st.update("s", "k", [op("set", "__proto__", value=1), op("remove", "constructor")])
    assert r.old_value is None and r.new_value == {} and len(r.errors) == 2
    assert st.get("s", "k") == {}
    assert st.list_groups() == ["s"]


def test_missing_default_survives_failed_ops(run_ops, codes):
    # A failed op leaves the stand-in {} in place, so a later root
    # increment still starts from `by`...
    new, errors = run_ops(MISSING, [op("merge", "a", value=1), op("increment", "", by=5)])
    assert (new, codes(errors)) == (5, ["merge.value.not_an_object"])
    # ...but a successful op ends it.
    new, errors = run_ops(MISSING, [op("set", "a", value=1), op("increment", "", by=5)])
    assert (new, codes(errors)) == ({"a": 1}, ["increment.not_number"])


def test_ops_apply_in_order(run_ops):
    new, _ = run_ops({}, [op("set", "a", value=[]), op("append", "a", value=1), op("remove", "a"), op("append", "a", value="s")])
    assert new == {"a": "s"}


# ---- the documented one-key shorthand ----------------------------------------------

SHORTHAND = [
    ({"set": {"x": 1}}, op("set", "", value={"x": 1})),
    ({"merge": {"b": 2}}, op("merge", value={"b": 2})),
    ({"increment": {"field": "n", "by": 2}}, op("increment", "n", by=2)),
    ({"decrement": {"field": "n", "by": 2}}, op("decrement", "n", by=2)),
    ({"remove": "n"}, op("remove", "n")),
    ({"merge": "nope"}, op("merge", value="nope")),
    ({"increment": {"field": "s", "by": 1}}, op("increment", "s", by=1)),
]


@pytest.mark.parametrize("short, wire", SHORTHAND, ids=[str(s) for s, _ in SHORTHAND])
@pytest.mark.parametrize("old", [MISSING, {"n": 1, "s": "x"}, 7])
def test_shorthand_equals_wire_form(st, short, wire, old):
    results = []
    for i, ops in enumerate(([short], [wire])):
        if old is not MISSING:
            st.set("s", str(i), old)
        results.append(tuple(st.update("s", str(i), ops)))
    assert results[0] == results[1]


# ---- values ---------------------------------------------------------------------------


def test_operand_values_are_copied(st):
    value = {"list": [1]}
    ops = [op("set", "a", value=value), op("append", "b", value=value)]
    r = st.update("s", "k", ops)
    value["list"].append(2)
    assert r.new_value == {"a": {"list": [1]}, "b": [{"list": [1]}]}
    assert st.get("s", "k") == r.new_value


def test_old_and_new_share_no_containers(st):
    st.set("s", "k", {"a": {"b": [1]}, "c": [[1]]})
    r = st.update("s", "k", [op("set", "x", value=1)])
    r.new_value["a"]["b"].append(2)
    r.new_value["c"][0].append(2)
    assert r.old_value == {"a": {"b": [1]}, "c": [[1]]}


def test_tuples_are_stored_and_returned_as_lists(st):
    r = st.update("s", "k", [op("set", "t", value=(1, (2, 3)))])
    assert r.new_value == {"t": [1, [2, 3]]}
    assert type(r.new_value["t"]) is list


def test_64_bit_integers_round_trip(st):
    v = {"a": I64_MIN, "b": I64_MAX, "c": U64_MAX}
    st.set("s", "k", v)
    assert st.update("s", "k", []).new_value == v


def test_update_result_unpacks_and_gives_the_engine_response(st):
    old, new, errors = st.update("s", "k", [op("set", "a", value=1)])
    assert (old, new, errors) == (None, {"a": 1}, [])
    r = st.update("s", "k", [op("remove", "a")])
    assert r.to_response() == {"old_value": {"a": 1}, "new_value": {}}
    r = st.update("s", "k", [op("append", "", value=1)])
    assert set(r.to_response()) == {"old_value", "new_value", "errors"}


# ---- malformed requests fail whole, and change nothing --------------------------------

BAD = [
    ({"not": "a list"}, "ops: expected an array"),
    ("increment", "ops: expected an array"),
    ([1], "ops[0]: expected an object"),
    ([{"type": "explode", "path": "a"}], "ops[0].type: unknown op 'explode'"),
    ([{"type": 1, "path": "a"}], "ops[0].type: expected a string"),
    ([{"type": "set", "value": 1}], "ops[0].path: missing field"),
    ([{"type": "set", "path": None, "value": 1}], "ops[0].path: expected a string"),
    ([{"type": "remove"}], "ops[0].path: missing field"),
    ([{"type": "increment", "path": "a"}], "ops[0].by: missing field"),
    ([{"type": "increment", "path": "a", "by": 1.0}], "ops[0].by: expected an integer"),
    ([{"type": "increment", "path": "a", "by": "1"}], "ops[0].by: expected an integer"),
    ([{"type": "decrement", "path": "a", "by": True}], "ops[0].by: expected an integer"),
    ([{"type": "increment", "path": "a", "by": 2**63}], "ops[0].by: expected an integer"),
    ([{"type": "increment", "path": "a", "by": -(2**63) - 1}], "ops[0].by: expected an integer"),
    ([{"type": "merge", "path": "a"}], "ops[0].value: missing field"),
    ([{"type": "append", "path": "a"}], "ops[0].value: missing field"),
    ([{"type": "merge", "path": 3, "value": {}}], "ops[0].path: expected a string, an array of strings or null"),
    ([{"type": "append", "path": ["a", 1], "value": 1}], "ops[0].path[1]: expected a string"),
    ([{"path": "a"}], "ops[0]: expected {\"type\": ...} or a one-key shorthand"),
    ([{"set": 1, "merge": {}}], "ops[0]: expected {\"type\": ...} or a one-key shorthand"),
    ([{"append": 1}], "ops[0]: expected {\"type\": ...} or a one-key shorthand"),
    ([{"increment": 5}], "ops[0].increment: expected {\"field\": string, \"by\": integer}"),
    ([{"increment": {"by": 1}}], "ops[0].increment.field: missing field"),
    ([{"decrement": {"field": "a"}}], "ops[0].decrement.by: missing field"),
    ([{"remove": 1}], "ops[0].remove: expected a string"),
    ([{"type": "set", "path": "ok", "value": 1}, {"type": "nope"}], "ops[1].type: unknown op 'nope'"),
]


@pytest.mark.parametrize("ops, message", BAD, ids=[m for _, m in BAD])
@pytest.mark.parametrize("existing", [True, False])
def test_malformed_request_fails_and_changes_nothing(st, ops, message, existing):
    if existing:
        st.set("s", "k", {"a": 1})
    with pytest.raises(pystate.PayloadError) as e:
        st.update("s", "k", ops)
    assert e.value.code == "deserialization_error"
    assert message in e.value.message
    assert st.get("s", "k", MISSING) == ({"a": 1} if existing else MISSING)
    assert st.list_groups() == (["s"] if existing else [])


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), -float("inf"), {"x": [float("nan")]}, 2**64, -(2**63) - 1, {1: "int key"}, {1, 2}, b"bytes"]
)
def test_operand_that_is_not_json_fails_and_changes_nothing(st, value):
    st.set("s", "k", {"a": 1})
    with pytest.raises(pystate.InvalidValueError) as e:
        st.update("s", "k", [op("set", "b", value=1), op("set", "c", value=value)])
    assert e.value.code == "invalid_value"
    assert "ops[1].value" in e.value.message
    assert st.get("s", "k") == {"a": 1}
