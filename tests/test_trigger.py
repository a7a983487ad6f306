"""State.trigger: the engine's state::* requests and response shapes."""

from __future__ import annotations

import pytest

import pystate
from conftest import MISSING

# Part of the shared adapter contract (see tests/conftest.py).
CONTRACT = True


def test_set_answers_old_and_new(st):
    assert st.trigger("state::set", {"scope": "s", "key": "k", "value": {"a": 1}}) == {
        "old_value": None,
        "new_value": {"a": 1},
    }
    assert st.trigger("state::set", {"scope": "s", "key": "k", "value": 2}) == {"old_value": {"a": 1}, "new_value": 2}


def test_set_accepts_data_as_alias_of_value(st):
    st.trigger("state::set", {"scope": "s", "key": "k", "data": "hello"})
    assert st.get("s", "k") == "hello"


@pytest.mark.adapters("kv-memory", "kv-file", "redis")  # the wire protocol reads a stored null as missing
def test_set_stores_null_value(st):
    assert st.trigger("state::set", {"scope": "s", "key": "k", "value": None}) == {"old_value": None, "new_value": None}
    assert st.get("s", "k", MISSING) is None


def test_get_delete_list_list_groups(st):
    st.set("s", "a", 1)
    st.set("s", "b", 2)
    assert st.trigger("state::get", {"scope": "s", "key": "a"}) == 1
    assert st.trigger("state::get", {"scope": "s", "key": "zz"}) is None
    assert st.trigger("state::list", {"scope": "s"}) == [1, 2]
    assert st.trigger("state::list", {"scope": "nothing"}) == []
    assert st.trigger("state::list_groups", {}) == {"groups": ["s"]}
    assert st.trigger("state::delete", {"scope": "s", "key": "a"}) == 1
    assert st.trigger("state::delete", {"scope": "s", "key": "a"}) is None


def test_update_answers_errors_only_when_there_are_some(st):
    ok = st.trigger("state::update", {"scope": "s", "key": "k", "ops": [{"type": "increment", "path": "n", "by": 2}]})
    assert ok == {"old_value": None, "new_value": {"n": 2}}
    bad = st.trigger(
        "state::update", {"scope": "s", "key": "k", "ops": [{"type": "append", "path": "n", "value": "x"}]}
    )
    assert bad["old_value"] == {"n": 2} and bad["new_value"] == {"n": 2}
    assert [e["code"] for e in bad["errors"]] == ["append.type_mismatch"]


def test_unknown_fields_are_ignored(st):
    st.trigger("state::set", {"scope": "s", "key": "k", "value": 1, "_caller_worker_id": "w1"})
    assert st.trigger("state::get", {"scope": "s", "key": "k", "extra": True}) == 1


def test_sdk_request_form(st):
    req = {"function_id": "state::set", "payload": {"scope": "s", "key": "k", "value": 1}}
    assert st.trigger(req) == {"old_value": None, "new_value": 1}
    assert st.trigger({"function_id": "state::get", "payload": {"scope": "s", "key": "k"}, "timeout_ms": 5}) == 1


def test_void_action_runs_and_returns_none(st):
    req = {"function_id": "state::set", "payload": {"scope": "s", "key": "k", "value": 7}, "action": {"type": "void"}}
    assert st.trigger(req) is None
    assert st.get("s", "k") == 7


def test_enqueue_action_is_refused_like_the_engine_without_queues(st):
    req = {"function_id": "state::set", "payload": {"scope": "s", "key": "k", "value": 7}, "action": {"type": "enqueue", "queue": "q"}}
    with pytest.raises(pystate.UnsupportedActionError) as e:
        st.trigger(req)
    assert e.value.code == "enqueue_error"
    assert st.get("s", "k") is None


def test_unknown_function(st):
    with pytest.raises(pystate.FunctionNotFoundError) as e:
        st.trigger("state::nope", {})
    assert e.value.code == "function_not_found"
    assert "state::nope" in e.value.message
    assert isinstance(e.value, LookupError)


@pytest.mark.parametrize(
    "fid, payload, message",
    [
        ("state::set", {"key": "k", "value": 1}, "missing field `scope`"),
        ("state::set", {"scope": "s", "value": 1}, "missing field `key`"),
        ("state::set", {"scope": "s", "key": "k"}, "missing field `value`"),
        ("state::set", {"scope": "s", "key": "k", "value": 1, "data": 2}, "duplicate field `value`"),
        ("state::set", {"scope": 1, "key": "k", "value": 1}, "invalid type for `scope`"),
        ("state::get", {"scope": "s", "key": None}, "invalid type for `key`"),
        ("state::get", None, "expected an object"),
        ("state::delete", ["s", "k"], "expected an object"),
        ("state::update", {"scope": "s", "key": "k"}, "missing field `ops`"),
        ("state::update", {"scope": "s", "key": "k", "ops": {}}, "ops: expected an array"),
        ("state::update", {"scope": "s", "key": "k", "ops": [{"type": "x"}]}, "ops[0].type: unknown op"),
        ("state::list", {}, "missing field `scope`"),
        ("state::list_groups", [], "expected an object"),
    ],
)
def test_bad_payloads_are_deserialization_errors(st, fid, payload, message):
    with pytest.raises(pystate.PayloadError) as e:
        st.trigger(fid, payload)
    assert e.value.code == "deserialization_error"
    assert e.value.message.startswith(f"Failed to deserialize input for {fid}")
    assert message in e.value.message
    assert st.list_groups() == []


def test_bad_request_shapes(st):
    with pytest.raises(pystate.PayloadError):
        st.trigger(42)
    with pytest.raises(pystate.PayloadError):
        st.trigger({"function_id": 5, "payload": {}})
    with pytest.raises(pystate.PayloadError):
        st.trigger({"function_id": "state::get", "payload": {"scope": "s", "key": "k"}, "action": "void"})


def test_max_value_bytes_applies_to_trigger_set():
    st = pystate.State(max_value_bytes=4)
    with pytest.raises(pystate.ValueTooLargeError):
        st.trigger("state::set", {"scope": "s", "key": "k", "value": "toolong"})
    st.close()
