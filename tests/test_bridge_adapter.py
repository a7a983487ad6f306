"""What only the bridge adapter promises: it shares one remote store with
every other client of that server, over the engine's wire protocol, and
fails clearly (then recovers) when the server goes away. The shared
contract runs on it from the contract modules."""

from __future__ import annotations

import threading
import time

import pytest

import pystate
from conftest import PystateServer

pytestmark = pytest.mark.filterwarnings("ignore:register_trigger is deprecated:DeprecationWarning")


@pytest.fixture
def bridge(pystate_server):
    st = pystate.State(adapter="bridge", bridge_url=pystate_server.url)
    yield st
    st.close()


def test_bridge_and_sdk_client_share_one_store(bridge, pystate_server, sdk):
    w = sdk(pystate_server.url)
    bridge.set("shared", "from-bridge", {"n": 1})
    assert w.trigger({"function_id": "state::get", "payload": {"scope": "shared", "key": "from-bridge"}}) == {"n": 1}
    w.trigger({"function_id": "state::set", "payload": {"scope": "shared", "key": "from-sdk", "value": [1]}})
    assert bridge.get("shared", "from-sdk") == [1]


def test_writes_through_the_bridge_fire_the_servers_triggers(bridge, pystate_server, sdk):
    w = sdk(pystate_server.url)
    got = []
    w.register_function("b::seen", got.append)
    w.register_trigger({"type": "state", "function_id": "b::seen", "config": {"scope": "watched"}})
    w.trigger({"function_id": "state::list_groups", "payload": {}})
    bridge.update("watched", "c", [{"type": "increment", "path": "n", "by": 2}])
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [(e["event_type"], e["new_value"]) for e in got] == [("state:created", {"n": 2})]


def test_two_bridges_racing_on_a_counter_lose_no_increment(pystate_server):
    a = pystate.State(adapter="bridge", bridge_url=pystate_server.url)
    b = pystate.State(adapter="bridge", bridge_url=pystate_server.url)
    inc = [{"type": "increment", "path": "n", "by": 1}]

    def hammer(st):
        for _ in range(300):
            st.update("race", "counter", inc)

    threads = [threading.Thread(target=hammer, args=(st,)) for st in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert a.get("race", "counter") == {"n": 1200}
    a.close()
    b.close()


def test_stored_null_reads_as_missing_over_the_wire(bridge):
    # The protocol's state::get answers null for both; the bridge cannot
    # tell them apart (README, "Differences").
    bridge.set("s", "k", None)
    assert bridge.get("s", "k", "default") == "default"
    assert bridge.list("s") == [None]


def test_server_gone_is_adapter_unavailable_then_reconnects(tmp_path):
    server = PystateServer(["--data", str(tmp_path / "d")], cwd=str(tmp_path))
    st = pystate.State(adapter="bridge", bridge_url=server.url, timeout=5)
    try:
        st.set("s", "k", "kept")
        server.kill()
        t0 = time.monotonic()
        with pytest.raises(pystate.AdapterUnavailableError) as e:
            st.get("s", "k")
        assert time.monotonic() - t0 < 5
        assert e.value.code == "adapter_unavailable"
        server.start(port=server.port)
        assert st.get("s", "k") == "kept"  # reconnected by itself; the file store kept the write
    finally:
        st.close()
        server.stop()


def test_unreachable_server_is_refused_at_open():
    with pytest.raises(pystate.AdapterUnavailableError, match="cannot reach"):
        pystate.State(adapter="bridge", bridge_url="ws://127.0.0.1:1", timeout=2)


def test_token_is_sent_and_a_wrong_one_is_named(tmp_path):
    server = PystateServer(["--data", str(tmp_path / "d"), "--token", "t0k"], cwd=str(tmp_path))
    try:
        with pytest.raises(pystate.AdapterUnavailableError, match="401.*token"):
            pystate.State(adapter="bridge", bridge_url=server.url, token="nope")
        with pystate.State(adapter="bridge", bridge_url=server.url, token="t0k") as st:
            st.set("s", "k", 1)
            assert st.get("s", "k") == 1
    finally:
        server.stop()


@pytest.mark.parametrize("url", ["http://127.0.0.1:49134", "127.0.0.1:49134", "ws://", 5])
def test_malformed_url_is_a_config_error(url):
    with pytest.raises(pystate.ConfigError, match="bridge_url"):
        pystate.State(adapter="bridge", bridge_url=url)


def test_kv_options_are_refused_by_name():
    with pytest.raises(pystate.ConfigError, match="sync"):
        pystate.State(adapter="bridge", bridge_url="ws://127.0.0.1:1", sync="always")


def test_from_config_opens_a_bridge(pystate_server, tmp_path):
    cfg = tmp_path / "iii-config.yaml"
    cfg.write_text(
        "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: bridge\n"
        f"        config: {{bridge_url: '{pystate_server.url}'}}\n"
    )
    with pystate.State.from_config(cfg) as st:
        assert st.adapter == "bridge"
        st.set("cfg", "k", "v")
        assert st.get("cfg", "k") == "v"
