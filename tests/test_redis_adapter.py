"""The redis adapter against a real redis-server: the engine's data layout,
atomicity across processes, failures and reconnection, configuration.

The six functions and triggers are the shared contract (the CONTRACT
modules run them on this adapter too); these tests cover what is Redis's own.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import redis

import pystate
from conftest import RedisServer, drain


@pytest.fixture
def server(redis_server):
    redis_server.flush()
    return redis_server


@pytest.fixture
def rst(server):
    s = pystate.State(adapter="redis", redis_url=server.url)
    yield s
    s.close()


@pytest.fixture
def raw(server):
    with redis.Redis.from_url(server.url) as r:
        yield r


def test_state_with_adapter_redis_is_a_state(rst):
    assert isinstance(rst, pystate.State)
    assert rst.adapter == "redis"
    assert pystate.State().adapter == "kv"


def test_values_live_in_the_engines_layout(rst, raw):
    rst.set("users", "u1", {"name": "Ada", "n": 1})
    assert raw.type("state:users") == b"hash"
    assert raw.hget("state:users", "u1") == b'{"name":"Ada","n":1}'


def test_values_written_by_another_client_in_that_layout_are_read(rst, raw):
    # What an engine (or any client) writes: serde_json's text, keys sorted.
    raw.hset("state:orders", "o1", '{"items":[1,2],"total":12345678901234567}')
    assert rst.get("orders", "o1") == {"items": [1, 2], "total": 12345678901234567}
    r = rst.update("orders", "o1", [{"type": "increment", "path": "total", "by": 1}])
    assert r.new_value["total"] == 12345678901234568  # exact beyond 2**53
    assert rst.list_groups() == ["orders"]


def test_list_groups_scans_every_scope_and_ignores_other_keys(rst, raw):
    for i in range(1500):
        raw.hset(f"state:s{i:04d}", "k", "1")
    raw.set("state:not-a-hash", "x")
    raw.hset("other:prefix", "k", "1")
    groups = rst.list_groups()
    assert groups == [f"s{i:04d}" for i in range(1500)]


def test_an_emptied_scope_disappears_from_list_groups(rst):
    rst.set("s", "k", 1)
    rst.delete("s", "k")
    assert rst.list_groups() == []


_RACER = textwrap.dedent(
    """
    import sys, pystate
    st = pystate.State(adapter="redis", redis_url=sys.argv[1])
    for _ in range(int(sys.argv[2])):
        st.update("race", "counter", [{"type": "increment", "path": "n", "by": 1}])
        st.update("race", "list", [{"type": "append", "path": "items", "value": sys.argv[3]}])
    st.close()
    """
)


def test_two_processes_racing_on_one_counter_lose_no_increment(rst, server):
    n = 300
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, server.url, str(n), tag]) for tag in ("a", "b", "c")
    ]
    for p in procs:
        assert p.wait(120) == 0
    assert rst.get("race", "counter") == {"n": 3 * n}
    items = rst.get("race", "list")["items"]
    assert sorted(items) == sorted(["a"] * n + ["b"] * n + ["c"] * n)


def test_triggers_fire_for_writes_through_this_client(rst, raw):
    seen = []
    rst.register_function("h", seen.append)
    rst.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s"}})
    rst.set("s", "k", 1)
    rst.update("s", "k", [{"type": "set", "path": "", "value": 2}])
    rst.delete("s", "k")
    raw.hset("state:s", "outside", "3")  # not through this client: no event
    drain(rst)
    assert [(e["event_type"], e["old_value"], e["new_value"]) for e in seen] == [
        ("state:created", None, 1),
        ("state:updated", 1, 2),
        ("state:deleted", 2, None),
    ]


# ---- failures ------------------------------------------------------------------


@pytest.fixture
def own_server():
    """A server of this test's own, to stop and restart."""
    s = RedisServer()
    yield s
    s.stop()


def test_a_stopped_server_gives_adapter_unavailable_and_a_restart_recovers(own_server):
    st = pystate.State(adapter="redis", redis_url=own_server.url, socket_timeout=2)
    try:
        st.set("s", "k", {"n": 1})
        own_server.stop()
        for call in (
            lambda: st.set("s", "k", 2),
            lambda: st.get("s", "k"),
            lambda: st.update("s", "k", [{"type": "increment", "path": "n", "by": 1}]),
            lambda: st.delete("s", "k"),
            lambda: st.list("s"),
            lambda: st.list_groups(),
        ):
            with pytest.raises(pystate.AdapterUnavailableError) as e:
                call()
            assert e.value.code == "adapter_unavailable"
            assert str(own_server.port) in e.value.message
        own_server.start()  # empty: this server keeps no data across restarts
        assert st.get("s", "k") is None  # reconnected by itself
        st.set("s", "k", 3)
        assert st.get("s", "k") == 3
    finally:
        st.close()


def test_an_unreachable_server_fails_at_open():
    from conftest import _free_port

    with pytest.raises(pystate.AdapterUnavailableError) as e:
        pystate.State(adapter="redis", redis_url=f"redis://127.0.0.1:{_free_port()}/0", socket_timeout=1)
    assert "cannot reach Redis" in e.value.message


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "", 5, "redis://"])
def test_a_malformed_url_is_refused(url):
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State(adapter="redis", redis_url=url)
    assert "redis_url" in e.value.message


def test_options_of_the_kv_adapter_are_refused(server, tmp_path):
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State(tmp_path, adapter="redis", redis_url=server.url)
    assert "path" in e.value.message
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State(adapter="redis", redis_url=server.url, sync="always")
    assert "sync" in e.value.message


def test_an_unknown_adapter_is_refused():
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State(adapter="mongo")
    assert "kv, redis" in e.value.message


def test_the_password_never_appears_in_messages(own_server):
    url = own_server.url.replace("//", "//user:s3cret@", 1)  # the server has no such user
    with pytest.raises(pystate.AdapterUnavailableError) as e:
        pystate.State(adapter="redis", redis_url=url)
    assert "user:***@" in e.value.message
    assert "s3cret" not in str(e.value)


def test_async_state_over_redis(server):
    import asyncio

    async def main():
        async with pystate.AsyncState(adapter="redis", redis_url=server.url) as st:
            seen = []

            async def h(event):
                seen.append(event["new_value"])

            st.register_function("h", h)
            st.register_trigger({"type": "state", "function_id": "h"})
            await st.set("s", "k", 1)
            r = await st.update("s", "k", [{"type": "set", "path": "", "value": 2}])
            assert r.new_value == 2
            assert await st.get("s", "k") == 2
            assert await st.list("s") == [2]
            assert await st.list_groups() == ["s"]
            assert await st.trigger("state::get", {"scope": "s", "key": "k"}) == 2
            assert await st.flush_events(10)
            return seen

    assert asyncio.run(main()) == [1, 2]


# ---- Redis Cluster ---------------------------------------------------------------


def test_the_adapter_works_against_a_three_primary_cluster(redis_cluster):
    import redis.cluster

    st = pystate.State(adapter="redis", redis_url=redis_cluster.url)
    try:
        assert st.clustered and st.stats()["cluster"] is True
        scopes = [f"scope-{i}" for i in range(40)]  # spread over the three primaries' slots
        for s in scopes:
            st.delete(s, "k")
        for i, s in enumerate(scopes):
            assert st.set(s, "k", {"i": i}) is None
            st.update(s, "k", [{"type": "increment", "path": "i", "by": 1}])
            assert st.get(s, "k") == {"i": i + 1}
            assert st.list(s) == [{"i": i + 1}]
        assert st.list_groups() == sorted(scopes)
        with redis.cluster.RedisCluster.from_url(redis_cluster.url) as rc:
            homes = {rc.get_node_from_key(f"state:{s}").name for s in scopes}
            assert len(homes) == 3  # the scopes really are spread over every primary
            assert rc.hget("state:scope-0", "k") == b'{"i":1}'  # the engine's layout, on the cluster
        for s in scopes:
            assert st.delete(s, "k") == {"i": scopes.index(s) + 1}
        assert st.list_groups() == []
    finally:
        st.close()


def test_two_processes_racing_on_a_cluster_lose_no_increment(redis_cluster):
    st = pystate.State(adapter="redis", redis_url=redis_cluster.url)
    try:
        st.delete("race", "counter")
        st.delete("race", "list")
        n = 150
        procs = [
            subprocess.Popen([sys.executable, "-c", _RACER, redis_cluster.url, str(n), tag]) for tag in ("a", "b")
        ]
        for p in procs:
            assert p.wait(120) == 0
        assert st.get("race", "counter") == {"n": 2 * n}
    finally:
        st.close()


# ---- shared events -------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys, pystate
    st = pystate.State(adapter="redis", redis_url=sys.argv[1], share_events=True)
    for i in range(int(sys.argv[2])):
        st.update("shared", "counter", [{"type": "increment", "path": "n", "by": 1}])
        st.set("shared", "w-" + sys.argv[3], i)
    st.delete("shared", "w-" + sys.argv[3])
    st.close()
    """
)


def test_shared_events_reach_every_process_in_order_per_key(server):
    st = pystate.State(adapter="redis", redis_url=server.url, share_events=True)
    try:
        seen = []
        st.register_function("h", seen.append)
        st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "shared"}})
        st.set("shared", "mine", 'é/"quoted"')  # this process's own writes come the same way
        n = 200
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, server.url, str(n), tag]) for tag in ("a", "b")]
        for p in procs:
            assert p.wait(120) == 0
        import time

        deadline = time.monotonic() + 30
        while len(seen) < 1 + 2 * (2 * n + 1) and time.monotonic() < deadline:
            time.sleep(0.02)
        drain(st)
        assert seen[0] == {
            "type": "state", "event_type": "state:created", "scope": "shared", "key": "mine",
            "old_value": None, "new_value": 'é/"quoted"',
        }
        counter = [e["new_value"]["n"] for e in seen if e["key"] == "counter"]
        assert counter == list(range(1, 2 * n + 1))  # every increment, in the server's order
        for tag in ("a", "b"):
            mine = [e for e in seen if e["key"] == f"w-{tag}"]
            assert [e["new_value"] for e in mine[:-1]] == list(range(n))
            assert [e["old_value"] for e in mine[1:]] == list(range(n))
            assert mine[0]["event_type"] == "state:created" and mine[-1]["event_type"] == "state:deleted"
        assert len(seen) == 1 + 2 * (2 * n + 1)  # and nothing twice
    finally:
        st.close()


def test_without_share_events_other_processes_writes_are_not_seen(server):
    st = pystate.State(adapter="redis", redis_url=server.url)
    try:
        seen = []
        st.register_function("h", seen.append)
        st.register_trigger({"type": "state", "function_id": "h"})
        p = subprocess.run([sys.executable, "-c", _WRITER, server.url, "3", "x"], timeout=60)
        assert p.returncode == 0
        drain(st)
        assert seen == []
    finally:
        st.close()


def test_shared_events_on_a_cluster_reach_a_client_of_another_node(redis_cluster):
    import time

    urls = [node.url.rsplit("/", 1)[0] for node in redis_cluster.nodes]
    listener = pystate.State(adapter="redis", redis_url=urls[0], share_events=True)
    writer = pystate.State(adapter="redis", redis_url=urls[2], share_events=True)
    try:
        seen = []
        listener.register_function("h", seen.append)
        listener.register_trigger({"type": "state", "function_id": "h", "config": {"key": "k"}})
        scopes = [f"ev-{i}" for i in range(12)]  # on every primary's slots
        for s in scopes:
            writer.delete(s, "k")
        for round_ in range(3):
            for s in scopes:
                writer.set(s, "k", round_)
        deadline = time.monotonic() + 30
        while len(seen) < 3 * len(scopes) + len(scopes) and time.monotonic() < deadline:
            time.sleep(0.02)
        drain(listener)
        for s in scopes:
            mine = [e for e in seen if e["scope"] == s]
            assert [(e["event_type"], e["new_value"]) for e in mine] == [
                ("state:deleted", None),
                ("state:created", 0),
                ("state:updated", 1),
                ("state:updated", 2),
            ]
    finally:
        writer.close()
        listener.close()
