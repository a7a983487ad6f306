"""State triggers: the events each write emits, filters, conditions,
registration errors and unregistering."""

from __future__ import annotations

import pytest

import pystate
from conftest import drain

# Part of the shared adapter contract (see tests/conftest.py).
CONTRACT = True


def ev(event_type, scope, key, old, new):
    return {"type": "state", "event_type": event_type, "scope": scope, "key": key, "old_value": old, "new_value": new}


# ---- event types -----------------------------------------------------------


def test_set_of_a_new_key_emits_created(st, watch):
    seen = watch()
    st.set("s", "k", {"a": 1})
    drain(st)
    assert seen == [ev("state:created", "s", "k", None, {"a": 1})]


def test_set_of_an_existing_key_emits_updated_with_old_and_new(st, watch):
    st.set("s", "k", 1)
    seen = watch()
    st.set("s", "k", [2])
    drain(st)
    assert seen == [ev("state:updated", "s", "k", 1, [2])]


@pytest.mark.adapters("kv-memory", "kv-file", "redis")  # the wire protocol reads a stored null as missing
def test_overwriting_a_stored_null_is_an_update(st, watch):
    st.set("s", "k", None)
    seen = watch()
    st.set("s", "k", 5)
    drain(st)
    assert seen == [ev("state:updated", "s", "k", None, 5)]


def test_delete_emits_deleted_with_the_old_value(st, watch):
    st.set("s", "k", {"x": 1})
    seen = watch()
    assert st.delete("s", "k") == {"x": 1}
    drain(st)
    assert seen == [ev("state:deleted", "s", "k", {"x": 1}, None)]


def test_delete_of_a_missing_key_still_emits_deleted_with_nulls(st, watch):
    seen = watch()
    assert st.delete("s", "nothing") is None
    drain(st)
    assert seen == [ev("state:deleted", "s", "nothing", None, None)]


def test_update_of_a_missing_key_emits_created(st, watch):
    seen = watch()
    st.update("s", "k", [{"type": "increment", "path": "n", "by": 2}])
    drain(st)
    assert seen == [ev("state:created", "s", "k", None, {"n": 2})]


def test_update_of_an_existing_key_emits_updated(st, watch):
    st.set("s", "k", {"n": 1})
    seen = watch()
    st.update("s", "k", [{"type": "increment", "path": "n", "by": 2}])
    drain(st)
    assert seen == [ev("state:updated", "s", "k", {"n": 1}, {"n": 3})]


def test_update_whose_ops_all_fail_still_emits_as_it_still_stores(st, watch):
    st.set("s", "k", {"n": "text"})
    seen = watch()
    r = st.update("s", "k", [{"type": "increment", "path": "n", "by": 1}])
    assert r.errors
    drain(st)
    assert seen == [ev("state:updated", "s", "k", {"n": "text"}, {"n": "text"})]


def test_trigger_calls_of_state_functions_emit_events(st, watch):
    seen = watch()
    st.trigger("state::set", {"scope": "s", "key": "k", "value": 1})
    st.trigger("state::update", {"scope": "s", "key": "k", "ops": [{"type": "set", "path": "", "value": 2}]})
    st.trigger("state::delete", {"scope": "s", "key": "k"})
    drain(st)
    assert [e["event_type"] for e in seen] == ["state:created", "state:updated", "state:deleted"]


def test_reads_and_failed_writes_emit_nothing(st, watch):
    st.set("s", "k", 1)
    seen = watch()
    st.get("s", "k")
    st.list("s")
    st.list_groups()
    with pytest.raises(pystate.InvalidValueError):
        st.set("s", "k", float("nan"))
    with pytest.raises(pystate.PayloadError):
        st.update("s", "k", "not a list")
    drain(st)
    assert seen == []


def test_events_do_not_share_objects_with_the_writer(st, watch):
    seen = watch()
    value = {"list": [1]}
    st.set("s", "k", value)
    value["list"].append(2)  # after the write: the event keeps what was written
    drain(st)
    assert seen[0]["new_value"] == {"list": [1]}


def test_each_handler_gets_its_own_event(st, watch):
    def vandal(event):
        event["new_value"]["x"] = "changed"

    watch(handler=vandal)
    seen = watch()
    st.set("s", "k", {"x": 1})
    drain(st)
    assert seen[0]["new_value"] == {"x": 1}


# ---- filters ---------------------------------------------------------------

WRITES = [("a", "k1"), ("a", "k2"), ("b", "k1"), ("b", "k2")]


@pytest.mark.parametrize(
    "config, expected",
    [
        ({}, WRITES),
        ({"scope": "a"}, [("a", "k1"), ("a", "k2")]),
        ({"key": "k1"}, [("a", "k1"), ("b", "k1")]),
        ({"scope": "b", "key": "k2"}, [("b", "k2")]),
        ({"scope": "c"}, []),
        ({"scope": None, "key": None}, WRITES),
    ],
    ids=["none", "scope", "key", "scope+key", "other-scope", "explicit-nulls"],
)
def test_scope_and_key_filters_select_the_writes(st, watch, config, expected):
    seen = watch(config)
    for scope, key in WRITES:
        st.set(scope, key, 1)
    drain(st)
    assert [(e["scope"], e["key"]) for e in seen] == expected


def test_filters_compare_exactly(st, watch):
    seen = watch({"scope": "Users", "key": "a.b"})
    st.set("users", "a.b", 1)
    st.set("Users", "a", 1)
    st.set("Users", "a.b", 2)
    drain(st)
    assert [(e["scope"], e["key"], e["new_value"]) for e in seen] == [("Users", "a.b", 2)]


def test_every_matching_trigger_runs_in_registration_order(st):
    order = []
    configs = [{}, {"scope": "s"}, {"key": "k"}, {"scope": "s", "key": "k"}, {"scope": "s"}]
    for i, config in enumerate(configs):
        st.register_function(f"h{i}", lambda e, i=i: order.append(i))
        st.register_trigger({"type": "state", "function_id": f"h{i}", "config": config})
    st.set("s", "k", 1)
    drain(st)
    assert order == [0, 1, 2, 3, 4]


# ---- conditions --------------------------------------------------------------


def test_condition_true_runs_the_handler_and_false_skips_it(st, watch):
    seen = watch(condition=lambda e: e["new_value"] > 10)
    for v in (5, 50, 7, 70):
        st.set("s", "k", v)
    drain(st)
    assert [e["new_value"] for e in seen] == [50, 70]


def test_condition_receives_the_event(st, watch):
    got = []
    watch({"scope": "s"}, condition=lambda e: got.append(e) or True)
    st.set("s", "k", 1)
    drain(st)
    assert got == [ev("state:created", "s", "k", None, 1)]


@pytest.mark.parametrize("verdict", [None, 0, "", [], "yes", 1])
def test_only_an_explicit_false_skips_the_handler_as_in_the_engine(st, watch, verdict):
    seen = watch(condition=lambda e: verdict)
    st.set("s", "k", 1)
    drain(st)
    assert len(seen) == 1


def test_a_raising_condition_skips_the_handler_and_counts_an_error(st, watch, caplog):
    def bad(e):
        raise RuntimeError("condition broke")

    seen = watch(condition=bad)
    st.set("s", "k", 1)
    drain(st)
    assert seen == []
    assert st.stats()["handler_errors"] == 1
    assert "condition broke" in caplog.text


def test_a_coroutine_condition_is_awaited(st, watch):
    async def big(e):
        return e["new_value"] > 1

    seen = watch(condition=big)
    st.set("s", "k", 1)
    st.set("s", "k", 2)
    drain(st)
    assert [e["new_value"] for e in seen] == [2]


# ---- metadata --------------------------------------------------------------


def test_metadata_reaches_a_handler_that_declares_it(st):
    got = []

    def handler(event, metadata=None):
        got.append((event["key"], metadata))

    st.register_function("h", handler)
    st.register_trigger({"type": "state", "function_id": "h", "config": {}, "metadata": {"team": "billing"}})
    st.set("s", "k", 1)
    drain(st)
    assert got == [("k", {"team": "billing"})]


def test_metadata_is_not_passed_to_a_handler_without_the_parameter(st):
    got = []
    st.register_function("h", lambda event: got.append(event["key"]))
    st.register_trigger({"type": "state", "function_id": "h", "metadata": {"x": 1}})
    st.set("s", "k", 1)
    drain(st)
    assert got == ["k"]
    assert st.stats()["handler_errors"] == 0


# ---- registration errors -------------------------------------------------------


@pytest.mark.parametrize(
    "trigger, code",
    [
        ({"type": "cron", "function_id": "h"}, "trigger_type_not_found"),
        ({"function_id": "h"}, "trigger_type_not_found"),
        ({"type": "state", "function_id": "h", "config": {"scope": 123}}, "invalid_trigger_config"),
        ({"type": "state", "function_id": "h", "config": {"key": ["k"]}}, "invalid_trigger_config"),
        ({"type": "state", "function_id": "h", "config": {"condition_function_id": 5}}, "invalid_trigger_config"),
        ({"type": "state", "function_id": "h", "config": "scope=a"}, "invalid_trigger_config"),
        ({"type": "state", "function_id": None}, "invalid_trigger_config"),
        ({"type": "state", "function_id": "missing"}, "function_not_found"),
        (
            {"type": "state", "function_id": "h", "config": {"condition_function_id": "missing"}},
            "function_not_found",
        ),
    ],
    ids=[
        "unknown-type",
        "no-type",
        "scope-not-string",
        "key-not-string",
        "condition-not-string",
        "config-not-object",
        "no-function-id",
        "unknown-function",
        "unknown-condition",
    ],
)
def test_a_bad_trigger_is_refused_and_nothing_is_registered(st, trigger, code):
    seen = []
    st.register_function("h", seen.append)
    with pytest.raises(pystate.StateError) as e:
        st.register_trigger(trigger)
    assert e.value.code == code
    assert st.stats()["triggers"] == 0
    st.set("a", "k", 1)
    drain(st)
    assert seen == []


def test_unknown_config_fields_are_ignored_as_in_the_engine(st, watch):
    seen = watch({"scope": "s", "color": "blue"})
    st.set("s", "k", 1)
    drain(st)
    assert len(seen) == 1


# ---- unregister and enable -------------------------------------------------


def test_unregister_stops_delivery(st):
    seen = []
    st.register_function("h", seen.append)
    t = st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s"}})
    st.set("s", "a", 1)
    drain(st)
    t.unregister()
    t.unregister()  # twice is fine
    st.set("s", "b", 1)
    drain(st)
    assert [e["key"] for e in seen] == ["a"]
    assert st.stats()["triggers"] == 0


def test_events_queued_before_unregister_are_not_delivered_after_it(st):
    import threading

    gate = threading.Event()
    seen = []
    st.register_function("blocker", lambda e: gate.wait(10))
    st.register_trigger({"type": "state", "function_id": "blocker", "config": {"key": "first"}})
    st.register_function("h", seen.append)
    t = st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s"}})
    st.set("x", "first", 1)  # holds the dispatcher
    st.set("s", "k", 1)  # queued behind it
    t.unregister()
    gate.set()
    drain(st)
    assert seen == []


def test_unregistering_one_of_two_triggers_on_a_scope_keeps_the_other(st, watch):
    st.register_function("h", lambda e: None)
    t = st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s"}})
    seen = watch({"scope": "s"})
    t.unregister()
    st.set("s", "k", 1)
    drain(st)
    assert len(seen) == 1


def test_triggers_disabled_delivers_nothing():
    st = pystate.State(triggers_enabled=False)
    try:
        seen = []
        st.register_function("h", seen.append)
        st.register_trigger({"type": "state", "function_id": "h"})
        st.set("s", "k", 1)
        assert st.flush_events(timeout=5)
        assert seen == []
        assert st.triggers_enabled is False
    finally:
        st.close()


def test_a_handler_unregistered_as_function_counts_an_error(st):
    seen = []
    ref = st.register_function("h", seen.append)
    st.register_trigger({"type": "state", "function_id": "h"})
    ref.unregister()
    st.set("s", "k", 1)
    drain(st)
    assert seen == []
    assert st.stats()["handler_errors"] == 1


# ---- on_change ---------------------------------------------------------------


def test_on_change_decorator_filters_and_conditions(st):
    seen = []

    @st.on_change(scope="orders", condition=lambda e: e["event_type"] != "state:deleted")
    def on_order(event):
        seen.append((event["event_type"], event["key"]))
        return "called"

    st.set("orders", "o1", 1)
    st.set("other", "o1", 1)
    st.delete("orders", "o1")
    drain(st)
    assert seen == [("state:created", "o1")]
    assert on_order({"event_type": "x", "key": "direct"}) == "called"  # still a function
    assert on_order.__name__ == "on_order"


def test_on_change_unregister_removes_trigger_and_functions(st):
    seen = []
    sub = st.on_change(key="k", condition=lambda e: True)(seen.append)
    functions_before = len(st._functions.ids())
    sub.unregister()
    st.set("s", "k", 1)
    drain(st)
    assert seen == []
    assert len(st._functions.ids()) == functions_before - 2
    assert st.stats()["triggers"] == 0


def test_on_change_refuses_a_non_string_scope(st):
    with pytest.raises(pystate.PayloadError):
        st.on_change(scope=5)


# ---- matching is indexed ---------------------------------------------------------


def test_writes_to_unwatched_keys_never_reach_the_matcher(st):
    """With many triggers elsewhere, a write no trigger can match is turned
    away by the compiled gate: no matching, no copy, no event."""
    for i in range(2000):
        st.register_function(f"f{i}", lambda e: None)
        st.register_trigger({"type": "state", "function_id": f"f{i}", "config": {"scope": f"other{i}"}})
    st.register_function("mine", lambda e: None)
    st.register_trigger({"type": "state", "function_id": "mine", "config": {"scope": "mine"}})
    st.register_trigger({"type": "state", "function_id": "mine", "config": {"scope": "pairs", "key": "k1"}})
    st.register_trigger({"type": "state", "function_id": "mine", "config": {"key": "only-key"}})
    calls = []
    real = st._events.emit
    st._events.emit = lambda et, scope, key, old, new: calls.append((scope, key)) or real(et, scope, key, old, new)
    st._rewire()  # the compiled gate takes emit when triggers change
    st.set("unwatched", "k", 1)
    st.update("unwatched", "k", [{"type": "increment", "path": "n", "by": 1}])
    st.delete("unwatched", "k")
    st.set("pairs", "k2", 1)  # a watched scope, but no trigger names this key
    st.set("mine", "k", 1)
    st.set("pairs", "k1", 1)
    st.set("anywhere", "only-key", 1)
    drain(st)
    assert calls == [("mine", "k"), ("pairs", "k1"), ("anywhere", "only-key")]
    assert st.stats()["events"]["delivered"] == 3


def test_unregistering_the_last_trigger_of_a_key_closes_the_gate_for_it(st):
    st.register_function("h", lambda e: None)
    t = st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s", "key": "k"}})
    assert st._triggers.watched_pairs == {"s": {"k"}}
    t.unregister()
    assert st._triggers.watched_pairs == {}
    assert st._triggers.watched_scopes == set() and st._triggers.watched_keys == set()
