"""Several processes, one store: every process that opens a directory shares it.

Each test starts real processes (``python -c`` children, or ``os.fork``),
bounded in count and time. The children speak a line protocol over their
stdin/stdout (see CHILD), so a test can make one process write, then ask
another what it reads.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import pystate

SYNC_MODES = ["interval", "never", "always"]

# A process holding a store open, doing what it is told, one JSON line per
# command; it answers each with one line.
CHILD = textwrap.dedent(
    """
    import json, sys, warnings
    import pystate
    warnings.simplefilter("ignore", pystate.RecoveryWarning)
    opts = json.loads(sys.argv[2])
    st = pystate.State(sys.argv[1], **opts)
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop(0)
        try:
            if op == "get":
                out = st.get(*cmd)
            elif op == "set":
                out = st.set(*cmd)
            elif op == "delete":
                out = st.delete(*cmd)
            elif op == "update":
                out = st.update(*cmd).new_value
            elif op == "incr":  # n increments of one key, each a call
                for _ in range(cmd[2]):
                    st.update(cmd[0], cmd[1], [{"type": "increment", "path": "n", "by": 1}])
                out = cmd[2]
            elif op == "keys":
                out = st.keys(*cmd)
            elif op == "groups":
                out = st.list_groups()
            elif op == "list":
                out = st.list(*cmd)
            elif op == "compact":
                st.compact(*cmd)
                out = None
            elif op == "check":
                out = st.check()["ok"]
            elif op == "close":
                st.close()
                print(json.dumps(["ok", None]), flush=True)
                break
            print(json.dumps(["ok", out]), flush=True)
        except pystate.StateError as e:
            print(json.dumps(["error", e.code, e.message]), flush=True)
    """
)


class Child:
    """A process with the store open."""

    def __init__(self, path, **opts):
        self.p = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), json.dumps(opts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self._line(60)
        assert line == "ready", line + self.p.stderr.read()

    def _line(self, timeout):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        assert r, f"no answer within {timeout} s"
        return self.p.stdout.readline().strip()

    def __call__(self, *cmd, timeout=60):
        self.p.stdin.write(json.dumps(list(cmd)) + "\n")
        self.p.stdin.flush()
        line = self._line(timeout)
        assert line, self.p.stderr.read()
        reply = json.loads(line)
        if reply[0] == "error":
            raise AssertionError(f"{cmd}: {reply}")
        return reply[1]

    def close(self):
        if self.p.poll() is None:
            self("close")
            self.p.wait(timeout=60)
        assert self.p.returncode == 0, self.p.stderr.read()


@pytest.fixture
def children(tmp_path):
    made = []

    def start(**opts):
        c = Child(tmp_path / "store", **opts)
        made.append(c)
        return c

    start.path = tmp_path / "store"
    yield start
    for c in made:
        if c.p.poll() is None:
            c.p.kill()
        c.p.wait(timeout=30)


def quiet_open(path, **opts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pystate.RecoveryWarning)
        return pystate.State(path, **opts)


# ---- sharing -------------------------------------------------------------------------


@pytest.mark.parametrize("sync", SYNC_MODES)
def test_a_write_in_one_process_is_read_by_the_next_call_in_another(children, sync):
    a, b = children(sync=sync), children(sync=sync)
    for i in range(50):
        writer, reader = (a, b) if i % 2 else (b, a)
        writer("set", "s", f"k{i % 5}", {"i": i})
        assert reader("get", "s", f"k{i % 5}") == {"i": i}
        writer("update", "s", "u", [{"type": "increment", "path": "n", "by": 1}])
        assert reader("get", "s", "u") == {"n": i + 1}
    a("delete", "s", "k0")
    assert b("get", "s", "k0") is None
    assert b("keys", "s") == a("keys", "s") == ["u", "k1", "k2", "k3", "k4"]
    a.close()
    b.close()


def test_a_scope_made_after_a_process_opened_is_found_by_it(children):
    a, b = children(), children()
    for i in range(20):
        a("set", f"scope{i}", "k", i)
    a("set", "", "k", "the empty scope")
    assert b("groups") == [""] + sorted(f"scope{i}" for i in range(20))
    assert b("get", "", "k") == "the empty scope"
    assert b("list", "scope7") == [7]
    # Emptied in one process (and its log removed by compaction), gone in the other.
    a("delete", "scope7", "k")
    a("compact", "scope7")
    assert "scope7" not in b("groups")
    assert b("get", "scope7", "k") is None
    b("set", "scope7", "k", "back")
    assert a("get", "scope7", "k") == "back"
    a.close()
    b.close()


def test_more_scopes_than_open_descriptors_are_followed_in_another_process(children):
    a, b = children(_max_open_files=8), children(_max_open_files=8)
    for i in range(40):
        a("set", f"s{i}", "k", i)
    assert len(b("groups")) == 40
    for i in range(40):
        b("set", f"s{i}", "k", i * 10)
    assert [a("get", f"s{i}", "k") for i in range(40)] == [i * 10 for i in range(40)]
    a.close()
    b.close()


def test_four_processes_incrementing_one_key_2000_times_each_end_at_8000(children):
    procs = [children() for _ in range(4)]
    procs[0]("set", "s", "c", {"n": 0})
    for c in procs:  # all four at once
        c.p.stdin.write(json.dumps(["incr", "s", "c", 2000]) + "\n")
        c.p.stdin.flush()
    for c in procs:
        assert json.loads(c._line(120)) == ["ok", 2000]
    assert {c("get", "s", "c")["n"] for c in procs} == {8000}
    for c in procs:
        c.close()
    st = pystate.State(children.path)
    assert st.get("s", "c") == {"n": 8000}
    st.close()


def test_the_same_directory_twice_in_one_process_is_shared_too(tmp_path):
    a = pystate.State(tmp_path / "s")
    b = pystate.State(tmp_path / "s")
    a.set("s", "k", 1)
    assert b.get("s", "k") == 1
    b.update("s", "k", [{"type": "set", "path": "", "value": 2}])
    assert a.get("s", "k") == 2
    a.close()
    b.set("s", "j", 3)
    b.close()
    c = pystate.State(tmp_path / "s")
    assert dict(c.items("s")) == {"k": 2, "j": 3}
    c.close()


def test_a_writer_in_another_sync_mode_is_refused_saying_why(tmp_path):
    a = pystate.State(tmp_path / "s", sync="always")
    with pytest.raises(pystate.LockedError) as e:
        pystate.State(tmp_path / "s", sync="interval")
    assert "sync=always" in e.value.message
    r = pystate.State(tmp_path / "s", read_only=True)  # a reader may use any
    a.set("s", "k", 1)
    assert r.get("s", "k") == 1
    r.close()
    a.close()
    b = pystate.State(tmp_path / "s", sync="interval")  # alone again: any mode
    assert b.get("s", "k") == 1
    b.close()


def test_a_reader_follows_the_writes_of_a_running_writer(children):
    w = children()
    w("set", "s", "k", 1)
    r = quiet_open(children.path, read_only=True)
    assert r.get("s", "k") == 1
    w("set", "s", "k", 2)
    w("set", "t", "new", 3)
    assert r.get("s", "k") == 2
    assert r.get("t", "new") == 3
    assert r.list_groups() == ["s", "t"]
    r.close()
    w.close()


def test_the_cli_reads_and_writes_a_store_an_application_holds_open(children):
    app = children()
    app("set", "s", "k", {"v": 1})
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "pystate", *a, "--data", str(children.path)],
        capture_output=True, text=True, timeout=60)
    r = run("get", "s", "k")
    assert r.returncode == 0 and json.loads(r.stdout) == {"v": 1}, r.stderr
    r = run("set", "s", "k", '{"v": 2}')
    assert r.returncode == 0, r.stderr
    assert app("get", "s", "k") == {"v": 2}
    for cmd in (["check"], ["dump"], ["list", "s"], ["keys", "s"], ["stats"]):
        r = run(*cmd)
        assert r.returncode == 0, (cmd, r.stderr)
    app.close()


# ---- a process killed at any moment blocks nobody, loses nothing acknowledged ----------

WRITER = textwrap.dedent(
    """
    import sys, pystate, warnings
    warnings.simplefilter("ignore", pystate.RecoveryWarning)
    path, sync, me, start = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    st = pystate.State(path, sync=sync, _compact_min_dead=4096)
    i = start
    while True:
        st.set("shared", f"{me}-{i}", {"i": i, "pad": "x" * (i % 200)})
        st.set("shared", f"last-{me}", i)
        st.update("counts", me, [{"type": "increment", "path": "n", "by": 1}])
        if i % 7 == 0:
            st.delete("shared", f"{me}-{i - 3}")
        print(i, flush=True)
        i += 1
    """
)


@pytest.mark.parametrize("sync", SYNC_MODES)
def test_sigkill_of_random_writers_loses_no_acknowledged_write_of_any(tmp_path, sync):
    path = str(tmp_path / "store")
    rng = random.Random(17)
    writers = {}
    acked = {me: -1 for me in "abc"}

    def start(me):
        writers[me] = subprocess.Popen(
            [sys.executable, "-c", WRITER, path, sync, me, str(acked[me] + 1)],
            stdout=subprocess.PIPE, text=True)

    def read_acks(me, until):
        p = writers[me]
        while time.monotonic() < until:
            r, _, _ = select.select([p.stdout], [], [], max(0.0, until - time.monotonic()))
            if not r:
                break
            line = p.stdout.readline()
            if not line:
                break
            acked[me] = int(line)

    for me in acked:
        start(me)
    deadline = time.monotonic() + 12
    kills = 0
    while time.monotonic() < deadline and kills < 12:
        for me in acked:
            read_acks(me, time.monotonic() + 0.05)
        victim = rng.choice(sorted(acked))
        time.sleep(rng.random() * 0.2)
        writers[victim].send_signal(signal.SIGKILL)
        writers[victim].wait()
        read_acks(victim, time.monotonic() + 0.5)  # what it said before dying
        kills += 1
        start(victim)
    for me, p in writers.items():
        p.send_signal(signal.SIGKILL)
        p.wait()
        read_acks(me, time.monotonic() + 0.5)
    assert all(n > 20 for n in acked.values()), acked

    st = quiet_open(path, sync=sync)
    shared = dict(st.items("shared"))
    for me, n in acked.items():
        # Every acknowledged write is there, with its latest value; at most
        # the one write in flight when it was killed went further.
        assert shared[f"last-{me}"] in (n, n + 1)
        for i in range(n + 1):
            deleted_by = i + 3 if (i + 3) % 7 == 0 else None  # the write that deletes it
            if deleted_by is not None and deleted_by <= n:
                assert f"{me}-{i}" not in shared
            elif deleted_by != n + 1:  # (that one may be the write in flight)
                assert shared[f"{me}-{i}"] == {"i": i, "pad": "x" * (i % 200)}
        assert st.get("counts", me)["n"] >= n + 1
    # And nothing else.
    names = {k.split("-")[0] for k in shared if not k.startswith("last-")}
    assert names <= set(acked)
    assert st.check()["ok"]
    st.close()


@pytest.mark.parametrize("point", ["written", "synced", "renamed"])
def test_a_process_killed_mid_compaction_blocks_nobody(children, tmp_path, point):
    w = children()
    for i in range(200):
        w("set", "s", f"k{i % 20}", {"i": i, "pad": "p" * 100})
    code = textwrap.dedent(
        f"""
        import os, signal, pystate
        def hook(p):
            if p == {point!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        st = pystate.State({str(children.path)!r}, _compact_hook=hook)
        st.get("s", "k0")
        st.compact("s")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert r.returncode == -signal.SIGKILL
    t = time.monotonic()
    w("set", "s", "k0", "after")  # the slot it held is taken back
    assert time.monotonic() - t < 1.0
    assert w("get", "s", "k1") == {"i": 181, "pad": "p" * 100}
    other = children()
    assert other("get", "s", "k0") == "after"
    assert other("get", "s", "k19") == {"i": 199, "pad": "p" * 100}
    assert other("check") is True
    w.close()
    other.close()
    st = quiet_open(children.path)
    assert st.get("s", "k0") == "after" and len(st.keys("s")) == 20
    st.close()


def test_compactions_under_concurrent_writers_lose_and_resurrect_nothing(children):
    procs = [children(_compact_min_dead=2048) for _ in range(3)]
    last = {}
    for rnd in range(60):
        for n, c in enumerate(procs):
            for j in range(10):
                key = f"k{(rnd * 10 + j) % 15}"
                value = {"by": n, "round": rnd, "pad": "z" * 80}
                c("set", "s", key, value)
                last[key] = value
            if rnd % 5 == n:
                c("delete", "s", f"k{rnd % 15}")
                last.pop(f"k{rnd % 15}", None)
            if rnd % 9 == n:
                c("compact", "s")
    for c in procs:
        assert dict(zip(c("keys", "s"), c("list", "s"))) == last
    for c in procs:
        c.close()
    st = quiet_open(children.path)
    assert dict(st.items("s")) == last
    st.close()


# ---- fork ----------------------------------------------------------------------------


@pytest.mark.parametrize("sync", SYNC_MODES)
def test_a_forked_child_and_its_parent_both_write_and_both_are_kept(tmp_path, sync):
    st = pystate.State(tmp_path / "s", sync=sync)
    fired = []
    st.register_function("h", lambda ev: fired.append((os.getpid(), ev["key"])))
    st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s"}})
    st.set("s", "before", 0)
    pid = os.fork()
    if pid == 0:  # the child: the store its parent opened, and its triggers
        code = 1
        try:
            for i in range(100):
                st.set("s", f"child{i}", i)
            seen = st.get("s", "parent99")  # may or may not be there yet
            deadline = time.monotonic() + 10
            while len([k for p, k in fired if p == os.getpid()]) < 100 and time.monotonic() < deadline:
                time.sleep(0.01)
            mine = [k for p, k in fired if p == os.getpid()]
            code = 0 if mine == [f"child{i}" for i in range(100)] and seen in (None, 99) else 3
            st.close()
        finally:
            os._exit(code)
    for i in range(100):
        st.set("s", f"parent{i}", i)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert st.get("s", "child99") == 99  # the child's writes, read by the parent
    st.close()
    again = pystate.State(tmp_path / "s")
    keys = again.keys("s")
    assert sorted(keys) == sorted(["before"] + [f"child{i}" for i in range(100)]
                                  + [f"parent{i}" for i in range(100)])
    again.close()
    # The parent's own triggers fired for its own writes only, once each.
    assert [k for p, k in fired if p == os.getpid()] == ["before"] + [f"parent{i}" for i in range(100)]


def test_a_child_forked_while_another_thread_writes_does_not_hang(tmp_path):
    import threading

    st = pystate.State(tmp_path / "s")
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            st.set("s", f"t{i % 50}", i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        pids = []
        for n in range(5):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
                pid = os.fork()
            if pid == 0:
                try:
                    st.set("s", f"child{n}", n)
                    ok = st.get("s", f"child{n}") == n
                    st.close()
                finally:
                    os._exit(0 if ok else 3)
            pids.append(pid)
        for pid in pids:
            deadline = time.monotonic() + 30
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                assert time.monotonic() < deadline, "a forked child hung"
                time.sleep(0.01)
            assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        t.join()
    assert [st.get("s", f"child{n}") for n in range(5)] == list(range(5))
    st.close()


# ---- share_events ----------------------------------------------------------------------


def _watching(path, **opts):
    st = pystate.State(path, share_events=True, **opts)
    seen = []
    st.register_function("h", lambda ev: seen.append(
        (ev["event_type"], ev["scope"], ev["key"], ev["old_value"], ev["new_value"])))
    st.register_trigger({"type": "state", "function_id": "h", "config": {}})
    return st, seen


def _wait_for(seen, n, timeout=10):
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return seen


def test_share_events_fires_triggers_for_other_processes_writes_in_their_order(children):
    w = children()
    w("set", "s", "before", 0)
    st, seen = _watching(children.path)
    w("set", "s", "k", {"n": 1})
    w("update", "s", "k", [{"type": "increment", "path": "n", "by": 1}])
    w("delete", "s", "before")
    w("set", "new-scope", "x", "y")
    st.set("s", "mine", 1)  # its own write: one event, from its own write path
    _wait_for(seen, 5)
    st.close()
    theirs = [e for e in seen if e[2] != "mine"]
    assert theirs == [
        ("state:created", "s", "k", None, {"n": 1}),
        ("state:updated", "s", "k", {"n": 1}, {"n": 2}),
        ("state:deleted", "s", "before", 0, None),
        ("state:created", "new-scope", "x", None, "y"),
    ]
    assert [e for e in seen if e[2] == "mine"] == [("state:created", "s", "mine", None, 1)]
    w.close()


def test_without_share_events_other_processes_writes_fire_nothing(children):
    w = children()
    st = pystate.State(children.path)
    seen = []
    st.register_function("h", lambda ev: seen.append(ev))
    st.register_trigger({"type": "state", "function_id": "h", "config": {}})
    w("set", "s", "k", 1)
    assert st.get("s", "k") == 1
    time.sleep(0.2)
    st.close()
    assert seen == []
    w.close()


def test_share_events_keeps_per_key_order_under_a_stream_of_writes(children):
    w = children()
    w("set", "s", "c", {"n": 0})
    st, seen = _watching(children.path)
    w("incr", "s", "c", 300)
    _wait_for(seen, 300)
    st.close()
    assert [e[4]["n"] for e in seen] == list(range(1, 301))
    assert [e[3]["n"] for e in seen] == list(range(300))
    assert {e[0] for e in seen} == {"state:updated"}
    w.close()


def test_share_events_applies_to_file_stores_only():
    with pytest.raises(pystate.ConfigError, match="share_events"):
        pystate.State(share_events=True)
    with pytest.raises(pystate.ConfigError, match="share_events"):
        pystate.State("x", share_events="yes")
