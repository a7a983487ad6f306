"""``pystate serve`` end to end, with the official client (iii-sdk 0.25.0)
against the server in a subprocess: what a program written for the iii
engine sees when it connects here instead."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import pytest

if sys.version_info < (3, 10):  # iii-sdk 0.25.0 needs 3.10+; the test extra leaves it out
    pytest.skip("iii-sdk needs Python 3.10+", allow_module_level=True)
from iii import InvocationError, TriggerAction  # noqa: E402

import pystate
from conftest import PystateServer

# iii-sdk 0.25 deprecates register_trigger, yet it is how state triggers bind.
pytestmark = pytest.mark.filterwarnings("ignore:register_trigger is deprecated:DeprecationWarning")


def call(w, fid, payload, **extra):
    return w.trigger({"function_id": fid, "payload": payload, **extra})


def barrier(w):
    """One round trip: the server has handled every frame ``w`` sent before."""
    call(w, "state::list_groups", {})


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def register_and_wait(w, caller, fid, handler):
    """Register ``fid`` on ``w`` and wait until ``caller`` can reach it
    (registration is fire-and-forget in the SDK)."""
    w.register_function(fid, handler)
    barrier(w)
    return fid


def scope():
    return f"s-{uuid.uuid4().hex[:10]}"


class Collector:
    def __init__(self):
        self.items = []
        self.lock = threading.Lock()

    def __call__(self, data, metadata=None):
        with self.lock:
            self.items.append((data, metadata))
        return None

    def wait(self, n, timeout=10.0):
        wait_until(lambda: len(self.items) >= n, timeout, f"{n} deliveries (have {len(self.items)})")
        return [d for d, _ in self.items]


# ---- the six functions --------------------------------------------------


def test_set_returns_old_and_new_value(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    assert call(w, "state::set", {"scope": s, "key": "k", "value": {"n": 1}}) == {"old_value": None, "new_value": {"n": 1}}
    assert call(w, "state::set", {"scope": s, "key": "k", "value": [1, 2]}) == {"old_value": {"n": 1}, "new_value": [1, 2]}


def test_get_returns_value_or_null(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    call(w, "state::set", {"scope": s, "key": "k", "value": {"big": 2**63 - 1, "text": "héllo ✓"}})
    assert call(w, "state::get", {"scope": s, "key": "k"}) == {"big": 2**63 - 1, "text": "héllo ✓"}
    assert call(w, "state::get", {"scope": s, "key": "missing"}) is None


def test_delete_returns_removed_value(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    call(w, "state::set", {"scope": s, "key": "k", "value": 7})
    assert call(w, "state::delete", {"scope": s, "key": "k"}) == 7
    assert call(w, "state::delete", {"scope": s, "key": "k"}) is None
    assert call(w, "state::get", {"scope": s, "key": "k"}) is None


def test_update_applies_ops_and_reports_failed_ones(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    call(w, "state::set", {"scope": s, "key": "k", "value": {"n": 1, "name": "x", "tags": []}})
    r = call(w, "state::update", {"scope": s, "key": "k", "ops": [
        {"type": "increment", "path": "n", "by": 2},
        {"type": "increment", "path": "name", "by": 1},
        {"type": "append", "path": "tags", "value": "a"},
    ]})
    assert r["old_value"] == {"n": 1, "name": "x", "tags": []}
    assert r["new_value"] == {"n": 3, "name": "x", "tags": ["a"]}
    assert [(e["op_index"], e["code"]) for e in r["errors"]] == [(1, "increment.not_number")]


def test_update_without_errors_omits_the_errors_field(pystate_server, sdk):
    w = sdk(pystate_server.url)
    r = call(w, "state::update", {"scope": scope(), "key": "k", "ops": [{"type": "set", "path": "a", "value": 1}]})
    assert r == {"old_value": None, "new_value": {"a": 1}}


def test_list_and_list_groups(pystate_server, sdk):
    w = sdk(pystate_server.url)
    a, b = sorted([scope(), scope()])
    for i in range(3):
        call(w, "state::set", {"scope": a, "key": f"k{i}", "value": i})
    call(w, "state::set", {"scope": b, "key": "x", "value": "y"})
    assert call(w, "state::list", {"scope": a}) == [0, 1, 2]
    assert call(w, "state::list", {"scope": "never-written"}) == []
    groups = call(w, "state::list_groups", {})["groups"]
    assert [g for g in groups if g in (a, b)] == [a, b]
    assert groups == sorted(groups)


def test_void_set_returns_none_and_writes(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    assert call(w, "state::set", {"scope": s, "key": "k", "value": 5}, action=TriggerAction.Void()) is None
    wait_until(lambda: call(w, "state::get", {"scope": s, "key": "k"}) == 5, what="the void write")


def test_a_value_over_16_mib_round_trips_in_fragments(pystate_server, sdk):
    w = sdk(pystate_server.url)
    big = "x" * (17 * 2**20)
    s = scope()
    call(w, "state::set", {"scope": s, "key": "big", "value": big})
    assert call(w, "state::get", {"scope": s, "key": "big"}) == big


# ---- errors ---------------------------------------------------------------


def test_missing_field_is_a_deserialization_error(pystate_server, sdk):
    w = sdk(pystate_server.url)
    with pytest.raises(InvocationError) as e:
        call(w, "state::set", {"scope": "s", "value": 1})
    assert e.value.code == "deserialization_error"
    assert "missing field `key`" in e.value.message


def test_wrong_type_is_a_deserialization_error_and_writes_nothing(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    with pytest.raises(InvocationError) as e:
        call(w, "state::update", {"scope": s, "key": "k", "ops": [{"type": "explode"}]})
    assert e.value.code == "deserialization_error"
    assert call(w, "state::get", {"scope": s, "key": "k"}) is None


def test_unknown_function_is_function_not_found(pystate_server, sdk):
    w = sdk(pystate_server.url)
    with pytest.raises(InvocationError) as e:
        call(w, "no::such", {})
    assert e.value.code == "function_not_found"
    assert "no::such" in e.value.message


def test_enqueue_action_is_refused_with_enqueue_error(pystate_server, sdk):
    w = sdk(pystate_server.url)
    with pytest.raises(InvocationError) as e:
        call(w, "state::get", {"scope": "s", "key": "k"}, action=TriggerAction.Enqueue(queue="q"))
    assert e.value.code == "enqueue_error"


def test_worker_handler_that_raises_is_invocation_failed(pystate_server, sdk):
    owner, caller = sdk(pystate_server.url), sdk(pystate_server.url)

    def boom(data):
        raise RuntimeError("kaput")

    register_and_wait(owner, caller, "t::boom", boom)
    with pytest.raises(InvocationError) as e:
        call(caller, "t::boom", {})
    assert e.value.code == "invocation_failed"
    assert "kaput" in e.value.message


# ---- functions routed between workers ----------------------------------------


def test_call_routed_to_the_worker_that_registered_it(pystate_server, sdk):
    owner, caller = sdk(pystate_server.url), sdk(pystate_server.url)
    register_and_wait(owner, caller, "t::add", lambda d: {"sum": d["a"] + d["b"]})
    assert call(caller, "t::add", {"a": 2, "b": 3}) == {"sum": 5}


def test_worker_can_call_its_own_function_through_the_server(pystate_server, sdk):
    w = sdk(pystate_server.url)
    register_and_wait(w, w, "t::echo", lambda d: d)
    assert call(w, "t::echo", {"x": [1, 2]}) == {"x": [1, 2]}


def test_void_call_runs_on_the_owner_and_returns_none(pystate_server, sdk):
    owner, caller = sdk(pystate_server.url), sdk(pystate_server.url)
    got = Collector()
    register_and_wait(owner, caller, "t::sink", got)
    assert call(caller, "t::sink", {"n": 1}, action=TriggerAction.Void()) is None
    assert got.wait(1) == [{"n": 1}]


def test_unregistered_function_is_not_found(pystate_server, sdk):
    owner, caller = sdk(pystate_server.url), sdk(pystate_server.url)
    ref = owner.register_function("t::gone", lambda d: 1)
    barrier(owner)
    assert call(caller, "t::gone", {}) == 1
    ref.unregister()
    barrier(owner)
    with pytest.raises(InvocationError) as e:
        call(caller, "t::gone", {})
    assert e.value.code == "function_not_found"


def test_worker_that_disconnects_loses_its_functions(pystate_server, sdk):
    owner, caller = sdk(pystate_server.url), sdk(pystate_server.url)
    register_and_wait(owner, caller, "t::mine", lambda d: 1)
    owner.shutdown()

    def gone():
        try:
            call(caller, "t::mine", {})
        except InvocationError as e:
            return e.code == "function_not_found"
        return False

    wait_until(gone, what="the function to go with its worker")


_SLOW_WORKER = """
import sys, time
from iii import InitOptions, register_worker
w = register_worker(sys.argv[1], InitOptions(otel={"enabled": False}))
w.register_function("t::slow", lambda d: time.sleep(60))
w.trigger({"function_id": "state::list_groups", "payload": {}})
print("ready", flush=True)
time.sleep(120)
"""


def test_call_waiting_on_a_worker_that_dies_fails_at_once(pystate_server, sdk, tmp_path):
    script = tmp_path / "slow_worker.py"
    script.write_text(_SLOW_WORKER)
    proc = subprocess.Popen([sys.executable, str(script), pystate_server.url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        caller = sdk(pystate_server.url, invocation_timeout_ms=30_000)
        outcome = {}

        def make_call():
            t0 = time.monotonic()
            try:
                call(caller, "t::slow", {})
            except InvocationError as e:
                outcome["code"] = e.code
            outcome["seconds"] = time.monotonic() - t0

        t = threading.Thread(target=make_call)
        t.start()
        time.sleep(0.5)  # the call is now waiting on the slow worker
        proc.kill()
        t.join(20)
        assert outcome.get("code") == "invocation_stopped"
        assert outcome["seconds"] < 10  # not the 30 s timeout
    finally:
        proc.kill()
        proc.wait(10)


# ---- state triggers ---------------------------------------------------------


def trigger_on(w, config, handler, *, metadata=None, fid=None):
    fid = fid or f"t::on{uuid.uuid4().hex[:8]}"
    w.register_function(fid, handler)
    trig = w.register_trigger({"type": "state", "function_id": fid, "config": config, "metadata": metadata})
    barrier(w)
    return trig


def test_trigger_receives_created_updated_deleted(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    got = Collector()
    trigger_on(w, {"scope": s}, got)
    call(w, "state::set", {"scope": s, "key": "k", "value": 1})
    call(w, "state::set", {"scope": s, "key": "k", "value": 2})
    call(w, "state::delete", {"scope": s, "key": "k"})
    events = got.wait(3)
    assert sorted((e["event_type"], e["old_value"], e["new_value"]) for e in events) == sorted([
        ("state:created", None, 1), ("state:updated", 1, 2), ("state:deleted", 2, None),
    ])
    assert all(e["type"] == "state" and e["scope"] == s and e["key"] == "k" for e in events)


def test_update_fires_an_event_with_old_and_new_value(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    got = Collector()
    trigger_on(w, {"scope": s}, got)
    call(w, "state::update", {"scope": s, "key": "c", "ops": [{"type": "increment", "path": "n", "by": 5}]})
    (e,) = got.wait(1)
    assert (e["event_type"], e["old_value"], e["new_value"]) == ("state:created", None, {"n": 5})


def test_trigger_metadata_reaches_the_handler(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    got = Collector()
    trigger_on(w, {"scope": s}, got, metadata={"tag": "watch-1"})
    call(w, "state::set", {"scope": s, "key": "k", "value": 1})
    got.wait(1)
    assert got.items[0][1] == {"tag": "watch-1"}


def test_scope_and_key_filters_select_events(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s, other = scope(), scope()
    by_key, by_both = Collector(), Collector()
    trigger_on(w, {"key": f"{s}-only"}, by_key)
    trigger_on(w, {"scope": s, "key": "k1"}, by_both)
    call(w, "state::set", {"scope": s, "key": "k2", "value": "no"})
    call(w, "state::set", {"scope": other, "key": "k1", "value": "no"})
    call(w, "state::set", {"scope": other, "key": f"{s}-only", "value": "key"})
    call(w, "state::set", {"scope": s, "key": "k1", "value": "both"})
    assert [e["new_value"] for e in by_key.wait(1)] == ["key"]
    assert [e["new_value"] for e in by_both.wait(1)] == ["both"]
    time.sleep(0.3)  # nothing else arrives late
    assert len(by_key.items) == 1 and len(by_both.items) == 1


def test_condition_false_skips_and_true_runs_the_handler(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    got = Collector()
    w.register_function("t::cond", lambda e: e["new_value"]["allow"])
    barrier(w)
    trigger_on(w, {"scope": s, "condition_function_id": "t::cond"}, got)
    call(w, "state::set", {"scope": s, "key": "no", "value": {"allow": False}})
    call(w, "state::set", {"scope": s, "key": "yes", "value": {"allow": True}})
    assert [e["key"] for e in got.wait(1)] == ["yes"]
    time.sleep(0.3)
    assert len(got.items) == 1


def test_condition_on_another_worker_is_called_there(pystate_server, sdk):
    w, judge = sdk(pystate_server.url), sdk(pystate_server.url)
    s = scope()
    asked = Collector()

    def cond(event, metadata=None):
        asked(event, metadata)
        return event["key"] == "ok"

    register_and_wait(judge, w, "t::judge", cond)
    got = Collector()
    trigger_on(w, {"scope": s, "condition_function_id": "t::judge"}, got, metadata={"m": 1})
    call(w, "state::set", {"scope": s, "key": "ok", "value": 1})
    call(w, "state::set", {"scope": s, "key": "nope", "value": 1})
    assert [e["key"] for e in got.wait(1)] == ["ok"]
    asked.wait(2)
    assert all(meta is None for _, meta in asked.items)  # the condition gets no metadata


def test_events_of_writes_by_another_worker_are_delivered(pystate_server, sdk):
    watcher, writer = sdk(pystate_server.url), sdk(pystate_server.url)
    s = scope()
    got = Collector()
    trigger_on(watcher, {"scope": s}, got)
    call(writer, "state::set", {"scope": s, "key": "k", "value": "from-writer"}, action=TriggerAction.Void())
    assert got.wait(1)[0]["new_value"] == "from-writer"


def test_unregistered_trigger_stops_delivery(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    got = Collector()
    trig = trigger_on(w, {"scope": s}, got)
    call(w, "state::set", {"scope": s, "key": "a", "value": 1})
    got.wait(1)
    trig.unregister()
    barrier(w)
    call(w, "state::set", {"scope": s, "key": "b", "value": 2})
    time.sleep(0.5)
    assert [d["key"] for d, _ in got.items] == ["a"]


def test_bad_trigger_config_leaves_the_connection_working(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    got = Collector()
    w.register_function("t::h", got)
    w.register_trigger({"type": "state", "function_id": "t::h", "config": {"scope": 42}})
    barrier(w)
    trigger_on(w, {"scope": s}, got)
    call(w, "state::set", {"scope": s, "key": "k", "value": 1})
    assert got.wait(1)[0]["key"] == "k"


def test_triggers_go_with_the_worker_that_registered_them(pystate_server, sdk):
    watcher, writer = sdk(pystate_server.url), sdk(pystate_server.url)
    s = scope()
    got = Collector()
    trigger_on(watcher, {"scope": s}, got)
    watcher.shutdown()
    time.sleep(0.3)
    call(writer, "state::set", {"scope": s, "key": "k", "value": 1})
    time.sleep(0.3)
    assert got.items == []


# ---- restarts, shutdown, auth ----------------------------------------------------


def test_client_reconnects_after_restart_with_data_and_triggers(pystate_server, sdk):
    w = sdk(pystate_server.url)
    s = scope()
    call(w, "state::set", {"scope": s, "key": "kept", "value": {"n": 1}})
    got = Collector()
    trigger_on(w, {"scope": s}, got)
    assert pystate_server.stop() == 0
    pystate_server.start(port=pystate_server.port)

    def back():
        try:
            return call(w, "state::get", {"scope": s, "key": "kept"}, timeout_ms=1000) == {"n": 1}
        except InvocationError:
            return False

    wait_until(back, timeout=40, what="the client to reconnect")
    barrier(w)  # the SDK replayed its trigger before this call
    call(w, "state::set", {"scope": s, "key": "after", "value": 2})
    assert got.wait(1)[-1]["key"] == "after"


def test_sigterm_finishes_in_flight_calls_flushes_and_exits_zero(pystate_server, sdk, tmp_path):
    owner, caller = sdk(pystate_server.url), sdk(pystate_server.url)

    def slow(d):
        time.sleep(1.0)
        return "done"

    register_and_wait(owner, caller, "t::slow1", slow)
    for i in range(100):
        call(caller, "state::set", {"scope": "durable", "key": f"k{i}", "value": i}, action=TriggerAction.Void())
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", call(caller, "t::slow1", {})))
    t.start()
    time.sleep(0.3)
    code = pystate_server.stop()
    t.join(10)
    assert code == 0, pystate_server.stderr
    assert result.get("r") == "done"
    assert "stopped" in pystate_server.stdout
    with pystate.State(tmp_path / "data") as st:
        assert [st.get("durable", f"k{i}") for i in range(100)] == list(range(100))


def test_token_required_when_set(tmp_path, sdk):
    import websockets.sync.client as wsc
    from websockets.exceptions import InvalidStatus

    server = PystateServer(["--data", str(tmp_path / "d"), "--token", "sesame"], cwd=str(tmp_path))
    try:
        with pytest.raises(InvalidStatus) as e:
            wsc.connect(server.url, open_timeout=5).close()
        assert e.value.response.status_code == 401
        with pytest.raises(InvalidStatus):
            wsc.connect(server.url, open_timeout=5, additional_headers={"Authorization": "Bearer wrong"}).close()
        w = sdk(server.url, headers={"Authorization": "Bearer sesame"})
        assert call(w, "state::set", {"scope": "s", "key": "k", "value": 1})["new_value"] == 1
    finally:
        assert server.stop() == 0


def test_serve_reads_an_iii_config_file(tmp_path, sdk):
    cfg = tmp_path / "iii-config.yaml"
    cfg.write_text(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: kv\n"
        "        config: {store_method: file_based, file_path: ./from-config}\n"
    )
    server = PystateServer(["--config", str(cfg)], cwd=str(tmp_path))
    try:
        w = sdk(server.url)
        call(w, "state::set", {"scope": "cfg", "key": "k", "value": "v"})
    finally:
        assert server.stop() == 0
    with pystate.State(tmp_path / "from-config") as st:
        assert st.get("cfg", "k") == "v"


def test_serve_with_a_bad_config_exits_with_one_clear_line(tmp_path):
    cfg = tmp_path / "iii-config.yaml"
    cfg.write_text("workers:\n  - name: iii-state\n    config:\n      adapter: {name: nosuch}\n")
    r = subprocess.run([sys.executable, "-m", "pystate", "serve", "--config", str(cfg), "--port", "0"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 3  # the store cannot be opened (README, "Command line")
    assert "adapter.name" in r.stderr and "nosuch" in r.stderr
    assert "Traceback" not in r.stderr


def test_serve_binds_loopback_by_default(pystate_server):
    assert pystate_server.url.startswith("ws://127.0.0.1:")


def test_serve_a_redis_store_from_config(tmp_path, sdk, redis_server):
    redis_server.flush()
    cfg = tmp_path / "iii-config.yaml"
    cfg.write_text(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: redis\n"
        f"        config: {{redis_url: '{redis_server.url}'}}\n"
    )
    server = PystateServer(["--config", str(cfg)], cwd=str(tmp_path))
    try:
        w = sdk(server.url)
        got = Collector()
        trigger_on(w, {"scope": "r"}, got)
        assert call(w, "state::set", {"scope": "r", "key": "k", "value": {"n": 1}})["old_value"] is None
        assert call(w, "state::update", {"scope": "r", "key": "k", "ops": [{"type": "increment", "path": "n", "by": 1}]})["new_value"] == {"n": 2}
        assert sorted(e["new_value"]["n"] for e in got.wait(2)) == [1, 2]
    finally:
        assert server.stop() == 0
    with pystate.State(adapter="redis", redis_url=redis_server.url) as st:
        assert st.get("r", "k") == {"n": 2}
