"""The State API: the six functions, values, scopes and keys, limits,
lifecycle."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import subprocess
import sys

import pytest

import pystate
from conftest import MISSING

# The shared adapter contract: every test here taking `st` runs on the kv
# store in memory, the kv file store and the redis adapter.
CONTRACT = True

# ---- set / get / delete -----------------------------------------------------


def test_set_returns_the_old_value(st):
    assert st.set("s", "k", {"v": 1}) is None
    assert st.set("s", "k", {"v": 2}) == {"v": 1}
    assert st.get("s", "k") == {"v": 2}


def test_get_missing_returns_default(st):
    assert st.get("s", "k") is None
    assert st.get("s", "k", "dflt") == "dflt"
    st.set("s", "other", 1)
    assert st.get("s", "k", MISSING) is MISSING


@pytest.mark.adapters("kv-memory", "kv-file", "redis")  # the wire protocol reads a stored null as missing
def test_stored_null_is_a_value_not_missing(st):
    st.set("s", "k", None)
    assert st.get("s", "k", "dflt") is None
    assert st.list("s") == [None]
    assert st.set("s", "k", 1) is None  # old value was null


def test_delete_returns_old_value_and_missing_gives_none(st):
    st.set("s", "k", [1, 2])
    assert st.delete("s", "k") == [1, 2]
    assert st.delete("s", "k") is None
    assert st.delete("never", "k") is None
    assert st.get("s", "k", MISSING) is MISSING


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        1.5,
        -0.0,
        5e-324,
        1.7976931348623157e308,
        "",
        "héllo \u2028 \x00 \"quoted\" \\",
        "😀",
        [],
        {},
        [1, "a", None, [{}]],
        {"nested": {"deep": [1, {"x": None}]}, "": "empty key"},
    ],
)
def test_json_values_round_trip_exactly(st, value):
    st.set("s", "k", value)
    got = st.get("s", "k")
    assert got == value and type(got) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, got) == math.copysign(1, value)


def test_deep_values_round_trip(st):
    v = []
    for _ in range(200):
        v = [v]
    st.set("s", "k", v)
    assert st.get("s", "k") == v


def test_values_are_copies(st):
    v = {"a": [1]}
    st.set("s", "k", v)
    v["a"].append(2)
    got = st.get("s", "k")
    assert got == {"a": [1]}
    got["a"].append(3)
    assert st.get("s", "k") == {"a": [1]}


def test_values_orjson_encodes_natively_are_stored_as_their_json(st):
    class Color(enum.Enum):
        RED = "red"

    @dataclasses.dataclass
    class Point:
        x: int
        y: float

    st.set("s", "k", {"when": datetime.date(2026, 11, 23), "c": Color.RED, "p": Point(1, 2.5), "t": (1, 2)})
    assert st.get("s", "k") == {"when": "2026-11-23", "c": "red", "p": {"x": 1, "y": 2.5}, "t": [1, 2]}


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        -float("inf"),
        [1.0, float("nan")],
        {"a": {"b": float("inf")}},
        2**64,
        -(2**63) - 1,
        {1: "non-string key"},
        {"a": {1, 2}},
        b"bytes",
        object(),
        "\ud800 lone surrogate",
    ],
)
def test_non_json_values_are_refused_and_change_nothing(st, value):
    st.set("s", "k", "before")
    with pytest.raises(pystate.InvalidValueError) as e:
        st.set("s", "k", value)
    assert e.value.code == "invalid_value"
    assert isinstance(e.value, ValueError)
    assert st.get("s", "k") == "before"
    with pytest.raises(pystate.InvalidValueError):
        st.set("s", "new", value)
    assert st.get("s", "new", MISSING) is MISSING


def test_nan_inside_a_dataclass_is_refused(st):
    @dataclasses.dataclass
    class P:
        x: float

    with pytest.raises(pystate.InvalidValueError):
        st.set("s", "k", {"p": P(float("nan")), "n": None})


def test_null_values_with_finite_floats_are_accepted(st):
    st.set("s", "k", {"a": None, "b": 1.5, "c": [None, 2.0]})
    assert st.get("s", "k") == {"a": None, "b": 1.5, "c": [None, 2.0]}


# ---- scopes and keys ---------------------------------------------------------

ODD_NAMES = ["", " ", "a/b", "../..", "a\x00b", "é", "É", "😀", "x" * 10_000, "a.b", "\n"]


@pytest.mark.parametrize("name", ODD_NAMES, ids=repr)
def test_any_string_is_a_scope_and_a_key(st, name):
    st.set(name, name, name)
    assert st.get(name, name) == name
    assert st.list(name) == [name]
    assert st.list_groups() == [name]
    assert st.delete(name, name) == name
    assert st.list_groups() == []


def test_names_differing_only_in_case_are_distinct(st):
    st.set("Users", "Key", 1)
    st.set("users", "key", 2)
    assert st.get("Users", "Key") == 1 and st.get("users", "key") == 2
    assert st.get("users", "Key") is None


@pytest.mark.parametrize("bad", [1, None, b"bytes", ("t",), 1.5])
def test_scope_and_key_must_be_strings(st, bad):
    for call in (
        lambda: st.set(bad, "k", 1),
        lambda: st.set("s", bad, 1),
        lambda: st.get(bad, "k"),
        lambda: st.delete("s", bad),
        lambda: st.update(bad, "k", []),
        lambda: st.list(bad),
    ):
        with pytest.raises(pystate.PayloadError) as e:
            call()
        assert e.value.code == "deserialization_error"
        assert "expected a string" in e.value.message
    assert st.list_groups() == []


def test_none_for_both_names_is_refused_as_the_first_call_of_a_process():
    # A fresh process: a binding that caches the last names it encoded must
    # not start with a cache that None matches.
    code = (
        "import pystate\n"
        "st = pystate.State()\n"
        "for call in (lambda: st.set(None, None, 1), lambda: st.get(None, None),\n"
        "             lambda: st.update(None, None, [])):\n"
        "    try:\n"
        "        call()\n"
        "    except pystate.PayloadError as e:\n"
        "        assert 'expected a string' in e.message, e.message\n"
        "    else:\n"
        "        raise SystemExit('accepted None names')\n"
        "assert st.list_groups() == [], st.list_groups()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_lone_surrogate_in_key_is_refused(st):
    with pytest.raises(pystate.PayloadError, match="lone surrogate"):
        st.set("s", "\udcff", 1)


def test_str_subclass_keys_work(st):
    class Name(str):
        pass

    st.set(Name("s"), Name("k"), 1)
    assert st.get("s", "k") == 1


# ---- list / list_groups -----------------------------------------------------------


def test_list_is_in_insertion_order(st):
    for k in ["c", "a", "b"]:
        st.set("s", k, k)
    st.set("s", "c", "C")  # overwrite keeps its place
    st.delete("s", "a")  # others keep their order
    st.set("s", "a", "A")  # re-insert goes to the end
    st.set("other", "z", 0)
    assert st.list("s") == ["C", "b", "A"]
    assert st.list("missing") == []


def fill_big_scope(st):
    """3,000 keys, every third deleted: big enough to come out of the core
    in several arrays. Returns the values left, in insertion order."""
    values = [{"i": i, "pad": "x" * (i % 200)} for i in range(3000)]
    for i, v in enumerate(values):
        st.set("big", f"k{i}", v)
    for i in range(0, 3000, 3):
        st.delete("big", f"k{i}")
    return [v for i, v in enumerate(values) if i % 3]


@pytest.mark.adapters("kv-memory", "kv-file")  # Redis keeps no order in a hash
def test_list_of_a_big_scope_is_complete_and_ordered(st):
    left = fill_big_scope(st)
    assert st.list("big") == left


def test_list_of_a_big_scope_is_complete(st):
    left = fill_big_scope(st)
    assert sorted(st.list("big"), key=lambda v: v["i"]) == left


@pytest.mark.adapters("kv-memory", "kv-file")  # Redis keeps no order in a hash
def test_keys_are_in_the_order_list_gives_the_values(st):
    for k in ["c", "a", "b"]:
        st.set("s", k, k.upper())
    st.delete("s", "a")
    st.set("s", "a", "A")
    st.set("other", "z", 0)
    assert st.keys("s") == ["c", "b", "a"]
    assert st.list("s") == ["C", "B", "A"]
    assert st.keys("missing") == []


@pytest.mark.adapters("kv-memory", "kv-file", "redis")
def test_keys_match_the_values_of_a_big_scope(st):
    left = fill_big_scope(st)
    keys = st.keys("big")
    assert sorted(keys, key=lambda k: int(k[1:])) == [f"k{v['i']}" for v in left]
    assert [st.get("big", k) for k in keys] == st.list("big")


@pytest.mark.adapters("kv-memory", "kv-file", "redis")
def test_items_pair_each_key_with_its_value(st):
    left = fill_big_scope(st)
    assert dict(st.items("big")) == {f"k{v['i']}": v for v in left}
    assert list(st.items("missing")) == []


@pytest.mark.adapters("bridge")
def test_keys_and_items_through_a_bridge_are_refused_clearly(st):
    st.set("s", "k", 1)
    for call in (lambda: st.keys("s"), lambda: list(st.items("s"))):
        with pytest.raises(pystate.UnsupportedError) as e:
            call()
        assert e.value.code == "unsupported" and "bridge" in e.value.message


def test_in_tells_whether_a_key_exists(st):
    st.set("s", "k", {"a": 1})
    assert ("s", "k") in st
    assert ("s", "other") not in st
    assert ("nowhere", "k") not in st
    st.delete("s", "k")
    assert ("s", "k") not in st


@pytest.mark.adapters("kv-memory", "kv-file", "redis")  # the wire reads a stored null as missing
def test_a_stored_null_is_in_the_store(st):
    st.set("s", "k", None)
    assert ("s", "k") in st


@pytest.mark.parametrize("bad", ["s", ("s",), ("s", "k", "x"), ["s", "k"], ("s", 1)], ids=repr)
def test_in_needs_a_scope_key_pair_of_strings(st, bad):
    with pytest.raises(pystate.PayloadError):
        bad in st  # noqa: B015


def test_list_groups_sorted_unique_and_non_empty(st):
    for scope in ["b", "a", "é", "B", "a"]:
        st.set(scope, "k", 1)
    st.set("gone", "k", 1)
    st.delete("gone", "k")
    assert st.list_groups() == sorted(["b", "a", "é", "B"])
    st.update("made-by-update", "k", [])
    assert "made-by-update" in st.list_groups()


def test_many_scopes(st):
    for i in range(2000):
        st.set(f"scope-{i:05d}", "k", i)
    assert st.list_groups() == [f"scope-{i:05d}" for i in range(2000)]
    for i in range(0, 2000, 2):
        st.delete(f"scope-{i:05d}", "k")
    assert len(st.list_groups()) == 1000


# ---- limits -------------------------------------------------------------------------


def test_max_value_bytes_guards_set(st):
    small = pystate.State(max_value_bytes=10)
    small.set("s", "k", "12345678")  # 10 bytes with quotes
    with pytest.raises(pystate.ValueTooLargeError) as e:
        small.set("s", "k", "123456789")
    assert e.value.code == "VALUE_TOO_LARGE"
    assert e.value.message == "value of 11 bytes exceeds the configured max_value_bytes limit of 10"
    assert small.get("s", "k") == "12345678"
    assert small.max_value_bytes == 10
    # As in the engine, update results are not size-guarded.
    small.update("s", "k2", [{"type": "set", "path": "x", "value": "long enough to pass 10"}])
    small.close()


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True, 2**63, 2**70])
def test_max_value_bytes_must_be_a_positive_int_a_length_can_reach(bad):
    # 2**70 was a bare OverflowError on the Cython binding, accepted on cffi.
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State(max_value_bytes=bad)
    assert "max_value_bytes" in e.value.message and repr(bad) in e.value.message


def test_the_largest_max_value_bytes_is_accepted():
    with pystate.State(max_value_bytes=2**63 - 1) as st:
        assert st.max_value_bytes == 2**63 - 1
        st.set("s", "k", "v")


@pytest.mark.parametrize("option", ["repair", "read_only"])
def test_a_flag_that_is_not_a_bool_is_refused(tmp_path, option):
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State(tmp_path / "d", **{option: 1})
    assert option in e.value.message
    assert not (tmp_path / "d").exists()


def test_large_values(st):
    big = {"blob": "x" * 5_000_000, "list": list(range(100_000))}
    st.set("s", "k", big)
    assert st.get("s", "k") == big


# ---- stats ---------------------------------------------------------------------------


@pytest.mark.adapters("kv-memory")  # the counters of the in-memory store
def test_stats_counts(st):
    assert st.stats()["keys"] == 0
    st.set("a", "k1", "xy")
    st.set("a", "k2", 1)
    st.set("b", "k", [])
    s = st.stats()
    assert (s["scopes"], s["keys"]) == (2, 3)
    assert s["key_bytes"] == len("k1") + len("k2") + len("k")
    assert s["value_bytes"] == len(b'"xy"') + len(b"1") + len(b"[]")
    assert s["heap_bytes"] > 0
    for scope, key in [("a", "k1"), ("a", "k2"), ("b", "k")]:
        st.delete(scope, key)
    s = st.stats()
    assert s["scopes"] == s["keys"] == s["value_bytes"] == s["heap_bytes"] == 0


# ---- lifecycle ------------------------------------------------------------------------


def test_context_manager_closes():
    with pystate.State() as st:
        st.set("s", "k", 1)
        assert not st.closed
    assert st.closed


def test_use_after_close_raises_and_close_twice_is_fine():
    st = pystate.State()
    st.set("s", "k", 1)
    st.close()
    st.close()
    for call in (
        lambda: st.get("s", "k"),
        lambda: st.set("s", "k", 1),
        lambda: st.delete("s", "k"),
        lambda: st.update("s", "k", []),
        lambda: st.list("s"),
        lambda: st.list_groups(),
        lambda: st.keys("s"),
        lambda: ("s", "k") in st,
        lambda: list(st.items("s")),
        lambda: st.stats(),
        lambda: st.trigger("state::get", {"scope": "s", "key": "k"}),
    ):
        with pytest.raises(pystate.ClosedError) as e:
            call()
        assert e.value.code == "closed"
    with pytest.raises(pystate.ClosedError):
        with st:
            pass


def test_stores_are_independent():
    a, b = pystate.State(), pystate.State()
    a.set("s", "k", 1)
    assert b.get("s", "k") is None
    a.close()
    b.set("s", "k", 2)
    assert b.get("s", "k") == 2


@pytest.mark.adapters("kv-memory")
def test_repr_and_module_facts(st):
    st.set("s", "k", 1)
    assert "1 scopes, 1 keys" in repr(st)
    assert isinstance(pystate.__version__, str)
    st.close()
    assert "closed" in repr(st)
