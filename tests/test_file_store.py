"""The file-based store: reopen, names, options, lock, compaction, check,
failed writes. Damage and recovery: test_recovery.py; the store directory
(what the store may create, touch or follow): test_store_dir.py."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import logfmt
import pystate
from conftest import MISSING, one_log


def reopen(st, **kw):
    st.close()
    return pystate.State(st.path, **kw)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store")


@pytest.fixture
def fst(path):
    s = pystate.State(path, sync="never")
    yield s
    s.close()


# ---- persistence --------------------------------------------------------------


@pytest.mark.parametrize("sync", ["never", "interval", "always"])
def test_everything_survives_close_and_reopen(path, sync):
    st = pystate.State(path, sync=sync)
    st.set("users", "c", {"n": 1})
    st.set("users", "a", [1, 2.5, None, "x"])
    st.set("users", "b", "b")
    st.update("users", "c", [{"type": "increment", "path": "n", "by": 41}])
    st.delete("users", "a")
    st.set("users", "a", True)
    st.set("other", "k", 2**64 - 1)
    st.set("gone", "k", 1)
    st.delete("gone", "k")
    before = (st.list("users"), st.list("other"), st.list_groups())
    st.close()
    st = pystate.State(path, sync=sync)
    assert (st.list("users"), st.list("other"), st.list_groups()) == before
    assert st.list("users") == [{"n": 42}, "b", True]
    assert st.get("gone", "k", MISSING) is MISSING
    assert st.check()["ok"]
    st.close()


@pytest.mark.parametrize(
    "scope",
    ["", "/", "..", "../../escape", "a\x00b", "é", "😀", "x" * 10_000, "Users", "users", "a.b", "\n"],
    ids=repr,
)
def test_any_scope_name_is_stored_safely_and_returned_exactly(tmp_path, scope):
    path = str(tmp_path / "store")
    st = pystate.State(path, sync="never")
    st.set(scope, "k", scope)
    st.set("Users" if scope == "users" else "users", "k", "twin")
    st = reopen(st, sync="never")
    assert st.get(scope, "k") == scope
    assert scope in st.list_groups()
    st.close()
    # nothing escaped the directory
    assert sorted(os.listdir(tmp_path)) == ["store"]


def test_names_that_differ_only_in_case_get_their_own_logs(fst):
    fst.set("Users", "k", 1)
    fst.set("users", "k", 2)
    fst.flush()
    assert set(logfmt.logs(fst.path)) == {b"Users", b"users"}


def test_state_path_creates_parent_directories(tmp_path):
    st = pystate.State(tmp_path / "a" / "b" / "store")
    st.set("s", "k", 1)
    assert st.path == str(tmp_path / "a" / "b" / "store")
    st.close()


# ---- options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"sync": "sometimes"},
        {"sync": None},
        {"save_interval_ms": 99},
        {"save_interval_ms": 3_600_001},
        {"save_interval_ms": 500.0},
        {"save_interval_ms": "5000"},
    ],
)
def test_bad_options_are_refused(path, kw):
    with pytest.raises(pystate.ConfigError) as e:
        pystate.State(path, **kw)
    assert list(kw)[0] in e.value.message


@pytest.mark.parametrize("ms", [100, 3_600_000])
def test_interval_bounds_are_inclusive(path, ms):
    pystate.State(path, save_interval_ms=ms).close()


@pytest.mark.parametrize("kw", [{"sync": "always"}, {"save_interval_ms": 100}, {"repair": True}])
def test_file_options_need_a_path(kw):
    with pytest.raises(pystate.ConfigError, match="give a path"):
        pystate.State(**kw)


def test_path_that_is_a_file_is_an_os_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("not a directory")
    with pytest.raises(pystate.StoreOSError) as e:
        pystate.State(f)
    assert e.value.errno == errno.EEXIST or e.value.errno == errno.ENOTDIR


# ---- several writers ------------------------------------------------------------------


def test_a_second_open_in_this_process_shares_the_store(fst):
    other = pystate.State(fst.path, sync="never")
    fst.set("s", "k", 1)
    assert other.get("s", "k") == 1
    other.close()


def test_a_second_process_opens_at_once_and_reads_what_was_written(fst):
    fst.set("s", "k", {"v": 1})
    code = f"""
import pystate, time
t = time.monotonic()
st = pystate.State({fst.path!r}, sync="never")
print(st.get("s", "k")["v"], round(time.monotonic() - t, 3))
st.set("s", "k", {{"v": 2}})
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.split()[0] == "1", r.stderr
    assert float(r.stdout.split()[1]) < 1.0
    assert fst.get("s", "k") == {"v": 2}


def test_a_writer_in_another_sync_mode_is_locked_out_naming_the_store(fst):
    with pytest.raises(pystate.LockedError) as e:
        pystate.State(fst.path, sync="always")
    assert fst.path in e.value.message and "sync=never" in e.value.message
    assert e.value.code == "locked"


def test_lock_is_released_on_close(path):
    pystate.State(path).close()
    pystate.State(path).close()


# ---- compaction ---------------------------------------------------------------------------


def test_compaction_leaves_only_live_data(path):
    st = pystate.State(path, sync="never")
    for rnd in range(10):  # values of the benchmark's size: ~210 bytes
        for i in range(200):
            st.set("s", f"key-{i:08d}", {"round": rnd, "pad": "x" * 190})
    for i in range(0, 200, 2):
        st.delete("s", f"key-{i:08d}")
    st.compact()
    s = st.stats()
    live = s["key_bytes"] + s["value_bytes"]
    assert s["log_dead_bytes"] == 0
    assert s["log_bytes"] <= 1.1 * live
    logpath = one_log(st)
    assert os.path.getsize(logpath) == s["log_bytes"]
    name, recs, end = logfmt.parse(open(logpath, "rb").read())
    assert end == s["log_bytes"]
    assert [r.key.decode() for r in recs] == [f"key-{i:08d}" for i in range(1, 200, 2)]
    assert all(r.kind == logfmt.PUT for r in recs)
    expect = st.list("s")
    st = reopen(st, sync="never")
    assert st.list("s") == expect
    assert st.check()["ok"]
    st.close()


def test_logs_compact_themselves_when_mostly_dead(path):
    st = pystate.State(path, sync="never", _compact_min_dead=64 * 1024)
    for i in range(3000):
        st.set("s", "counter", {"i": i, "pad": "y" * 200})
    # A background thread compacts, not the writer: give it a moment.
    deadline = time.monotonic() + 10
    s = st.stats()
    while (s["compactions"] == 0 or s["log_bytes"] >= 200 * 1024) and time.monotonic() < deadline:
        time.sleep(0.01)
        s = st.stats()
    assert s["compactions"] > 0
    assert s["log_bytes"] < 200 * 1024
    assert st.check()["ok"]
    st.close()


def test_emptied_scope_loses_its_log(path):
    st = pystate.State(path, sync="never")
    st.set("s", "k", 1)
    st.delete("s", "k")
    st.compact("s")
    assert logfmt.logs(path) == {}
    assert st.list_groups() == []
    st.close()


# ---- stats and check ----------------------------------------------------------------------


def test_stats_per_scope(fst):
    fst.set("a", "k1", "x" * 10)
    fst.set("a", "k1", "y" * 10)
    fst.set("b", "k", 1)
    s = fst.stats()
    a = s["per_scope"]["a"]
    assert a["keys"] == 1 and a["dead_bytes"] > 0 and a["live_bytes"] > 0
    assert a["file_bytes"] > a["live_bytes"] + a["dead_bytes"]  # plus the header
    assert s["per_scope"]["b"]["keys"] == 1
    assert s["sync"] == "never" and s["path"] == fst.path


def test_check_reports_a_log_changed_behind_the_stores_back(fst):
    fst.set("s", "k", 1)
    fst.set("s", "k2", 2)
    logpath = one_log(fst)
    data = bytearray(open(logpath, "rb").read())
    data[-1] ^= 1
    open(logpath, "wb").write(data)
    r = fst.check()
    assert not r["ok"]
    assert os.path.basename(logpath) in r["problem"]
    assert open(logpath, "rb").read() == data  # check changes nothing


# ---- failed writes ---------------------------------------------------------------------------


def test_failed_write_raises_changes_nothing_and_recovers(path):
    # A real EFBIG from the kernel: RLIMIT_FSIZE in a child process.
    code = textwrap.dedent(
        f"""
        import resource, signal, pystate, errno
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        st = pystate.State({path!r}, sync="never")
        st.set("s", "first", 1)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
        i = 0
        try:
            while True:
                st.set("s", f"k{{i}}", "v" * 1000)
                i += 1
        except pystate.StoreOSError as e:
            assert e.errno == errno.EFBIG, e.errno
            print("failed at", i, e.code, e.message)
        assert st.get("s", f"k{{i}}") is None
        assert st.get("s", "first") == 1
        try:
            st.update("s", "first", [{{"type": "set", "path": "x", "value": "v" * 9000}}])
        except pystate.StoreOSError:
            pass
        assert st.get("s", "first") == 1
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        st.set("s", f"k{{i}}", "later")
        st.close()
        st = pystate.State({path!r})
        assert st.get("s", f"k{{i}}") == "later" and len(st.list("s")) == i + 2
        assert st.check()["ok"]
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "os_error" in r.stdout and r.stdout.strip().endswith("ok")


def test_use_after_close_and_close_twice(path):
    st = pystate.State(path)
    st.close()
    st.close()
    for call in (lambda: st.set("s", "k", 1), lambda: st.flush(), lambda: st.compact(), lambda: st.check()):
        with pytest.raises(pystate.ClosedError):
            call()


# A real full file system: a 512 KiB tmpfs, mounted in a private user and
# mount namespace (no root needed, and it vanishes with the child).
_FULL_DISK_CHILD = """
import errno, os, sys, pystate
root = sys.argv[1]
ballast = os.path.join(root, "ballast")
with open(ballast, "wb") as f:
    f.write(b"x" * 96 * 1024)
st = pystate.State(os.path.join(root, "store"), sync=sys.argv[2])
acked = {}
i = 0
try:
    while True:
        st.set("s", f"k{i}", "v" * 900)
        acked[f"k{i}"] = "v" * 900
        i += 1
except pystate.StoreOSError as e:
    assert e.errno == errno.ENOSPC, e.errno
    assert e.code == "os_error" and "No space" in e.message, e.message
    print("full after", i)
assert st.get("s", f"k{i}") is None
# Every kind of write fails the same way and changes nothing.
for call in (
    lambda: st.set("s", "k0", "w" * 5000),
    lambda: st.update("s", "k0", [{"type": "set", "path": "", "value": "u" * 5000}]),
    lambda: st.set("new scope", "k", "n" * 5000),
):
    try:
        call()
    except pystate.StoreOSError as e:
        assert e.errno == errno.ENOSPC, e.errno
assert st.get("s", "k0") == "v" * 900
assert st.get("new scope", "k") is None and st.list_groups() == ["s"]
assert st.check()["ok"], st.check()
assert not [n for n in os.listdir(os.path.join(root, "store")) if ".tmp-" in n]  # nothing left behind
# A new store on the full disk: refused whole, and made once there is room.
fresh = os.path.join(root, "fresh")
try:
    pystate.State(fresh, sync=sys.argv[2])
    made = True
except pystate.StoreOSError as e:
    assert e.errno == errno.ENOSPC, e.errno
    assert os.listdir(fresh) in ([], ["LOCK"]), os.listdir(fresh)
    made = False
os.unlink(ballast)  # space returns: the store carries on
if not made:
    pystate.State(fresh).close()
for j in range(20):
    st.set("s", f"after{j}", j)
    acked[f"after{j}"] = j
st.close()
st = pystate.State(os.path.join(root, "store"))
got = dict(zip([f"k{n}" for n in range(i)] + [f"after{j}" for j in range(20)], st.list("s")))
assert got == acked, (len(got), len(acked))
assert st.check()["ok"] and st.stats()["recovery"]["torn_tails"] == 0
print("ok")
"""


@pytest.mark.parametrize("sync", ["never", "interval", "always"])
def test_full_disk_raises_enospc_changes_nothing_and_recovers(tmp_path, sync):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    script = tmp_path / "child.py"
    script.write_text(_FULL_DISK_CHILD)
    cmd = [
        "unshare", "--map-root-user", "--mount", "sh", "-c",
        f'mount -t tmpfs -o size=512k tmpfs "$0" && exec "$1" "$2" "$0" "$3"',
        str(mnt), sys.executable, str(script), sync,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "full after" in r.stdout and r.stdout.strip().endswith("ok")
