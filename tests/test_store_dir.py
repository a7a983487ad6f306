"""The store directory: what makes a directory a store, what the store may
create, remove or follow in it, read-only opens that change nothing, and
any number of scopes within the descriptor budget."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap
import warnings

import pytest

import pystate
from conftest import fill, one_log


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store")


def snapshot(directory) -> dict:
    """Every entry under `directory`: its kind and content (links: their
    target), to compare before and after."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, directory)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(open(p, "rb").read()).hexdigest(), os.stat(p).st_mode)
    return out


def a_checkout(tmp_path):
    """A directory that is somebody's: a checkout with logs and a venv."""
    d = tmp_path / "project"
    (d / ".git").mkdir(parents=True)
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (d / "app.log").write_bytes(b"")
    (d / "notes.log").write_bytes(b"14 bytes here.")
    (d / "build.compact").write_bytes(b"x")
    (d / "venv" / "bin").mkdir(parents=True)
    (d / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return str(d)


# ---- what a store is ---------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"repair": True}, {"read_only": True}, {"sync": "always"}], ids=repr)
def test_a_directory_that_is_not_a_store_is_refused_and_left_untouched(tmp_path, kw):
    d = a_checkout(tmp_path)
    before = snapshot(d)
    with pytest.raises(pystate.NotAStoreError) as e:
        pystate.State(d, **kw)
    assert e.value.code == "not_a_store"
    assert d in e.value.message and "not a pystate store" in e.value.message
    assert snapshot(d) == before  # no LOCK, no marker, no log; nothing removed
    for sub in ("venv", ".git"):  # nor inside them
        with pytest.raises(pystate.NotAStoreError):
            pystate.State(os.path.join(d, sub))
    assert snapshot(d) == before


def test_a_new_or_empty_directory_becomes_a_store(tmp_path):
    for d in (tmp_path / "new", tmp_path / "empty"):
        if d.name == "empty":
            d.mkdir()
        st = pystate.State(d)
        st.set("s", "k", 1)
        st.close()
        assert (d / "PYSTATE").read_bytes().startswith(b"pystate store\n")
        (d / "notes.txt").write_text("mine")  # anything may sit beside it now
        st = pystate.State(d)
        assert st.get("s", "k") == 1
        st.close()


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path):
    for target in (tmp_path / "missing", tmp_path / "deep" / "missing"):
        with pytest.raises(pystate.StoreOSError):
            pystate.State(target, read_only=True)
        assert not target.exists() and not (tmp_path / "deep").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(pystate.NotAStoreError):
        pystate.State(tmp_path / "empty", read_only=True)
    assert os.listdir(tmp_path / "empty") == []


def test_files_of_others_inside_a_store_are_never_touched(path):
    logpath = fill(path, 2)
    others = {"app.log": b"", "notes.log": b"14 bytes here.", "x.compact": b"not ours",
              os.path.basename(logpath) + ".compact": b"\0" * 64, "0123456789ABCDEF.log": b"\0" * 100}
    for name, content in others.items():
        open(os.path.join(path, name), "wb").write(content)
    st = pystate.State(path)
    st.delete("s", "k0")
    st.delete("s", "k1")
    st.compact()  # the emptied log goes; nothing else does
    st.set("t", "k", 1)
    st.close()
    st = pystate.State(path, repair=True)
    st.close()
    for name, content in others.items():
        assert open(os.path.join(path, name), "rb").read() == content


# ---- links -------------------------------------------------------------------------------


def test_a_link_where_a_log_should_be_is_refused(path, tmp_path):
    logpath = fill(path, 2)
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"precious")
    os.replace(logpath, tmp_path / "moved.log")
    os.symlink(precious, logpath)
    before = snapshot(tmp_path)
    for kw in ({}, {"repair": True}, {"read_only": True}):
        with pytest.raises(pystate.CorruptError, match="link"):
            pystate.State(path, **kw)
    assert snapshot(tmp_path) == before


def test_a_link_planted_under_a_temporary_name_is_never_followed(path, tmp_path):
    """The attack of the old `<log>.compact` name: a link planted while the
    store runs. Temporaries now have fresh random names, created
    exclusively; links under such names are left alone, and their targets
    are never opened."""
    st = pystate.State(path, sync="never")
    st.set("s", "k", "v")
    logpath = one_log(st)
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"precious")
    planted = [logpath + ".compact", logpath + ".tmp-00000000000000aa", logpath + ".tmp-ffffffffffffffff"]
    for p in planted:
        os.symlink(precious, p)
    for i in range(20):
        st.set("s", "k", "v" * i)
        st.compact()
    st.close()
    st = pystate.State(path)  # leftovers are looked at: links are not ours
    assert st.get("s", "k") == "v" * 19
    st.close()
    assert precious.read_bytes() == b"precious"
    assert all(os.path.islink(p) for p in planted)
    assert not os.path.islink(logpath)


@pytest.mark.parametrize("name", ["PYSTATE", "LOCK"])
def test_a_link_as_the_marker_or_the_lock_is_refused(path, tmp_path, name):
    fill(path, 1)
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"precious")
    os.replace(os.path.join(path, name), tmp_path / "moved")
    os.symlink(precious, os.path.join(path, name))
    with pytest.raises(pystate.StoreOSError, match="link"):
        pystate.State(path)
    assert precious.read_bytes() == b"precious"


# ---- read-only ---------------------------------------------------------------------------


def damaged_store(path):
    """A store with a torn tail, a leftover temporary and an emptied log."""
    logpath = fill(path, 4)
    st = pystate.State(path, sync="never")
    st.set("gone", "k", 1)
    st.delete("gone", "k")
    st.close()
    with open(logpath, "ab") as f:
        f.write(b"half a record")
    open(logpath + ".tmp-00000000000000aa", "wb").write(open(logpath, "rb").read()[:100])
    return logpath


def test_a_read_only_open_reports_damage_and_changes_nothing(path):
    damaged_store(path)
    before = snapshot(path)
    with pytest.warns(pystate.RecoveryWarning, match="left as it is"):
        st = pystate.State(path, read_only=True)
    assert st.read_only
    assert st.list("s") == [{"i": i} for i in range(4)]
    assert st.stats()["recovery"]["torn_tails"] == 1
    for write in (lambda: st.set("s", "k9", 1), lambda: st.delete("s", "k0"),
                  lambda: st.update("s", "k0", [{"type": "set", "path": "i", "value": 9}]),
                  lambda: st.compact()):
        with pytest.raises(pystate.ReadOnlyError) as e:
            write()
        assert e.value.code == "read_only"
    st.flush()  # nothing to make durable
    assert st.get("s", "k0") == {"i": 0}
    st.close()
    assert snapshot(path) == before


def test_readers_and_writers_share_a_store(path):
    fill(path, 1)
    a = pystate.State(path, read_only=True)
    b = pystate.State(path, read_only=True)
    w = pystate.State(path)
    w.set("s", "k0", {"i": 10})
    assert a.get("s", "k0") == b.get("s", "k0") == {"i": 10}
    with pytest.raises(pystate.ReadOnlyError):
        a.set("s", "k0", 1)
    a.close()
    b.close()
    w.close()


def test_read_only_applies_to_file_stores_only():
    with pytest.raises(pystate.ConfigError, match="read_only"):
        pystate.State(read_only=True)
    with pytest.raises(pystate.ConfigError, match="read_only"):
        pystate.State("x", read_only="yes")


# ---- descriptors -------------------------------------------------------------------------


MANY_SCOPES = textwrap.dedent(
    """
    import resource, sys, warnings, pystate
    path, sync, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))   # the usual soft limit
    warnings.simplefilter("error")
    st = pystate.State(path, sync=sync, save_interval_ms=100)
    for i in range(n):
        st.set(f"scope-{i}", "k", i)
    st.flush()
    for i in range(0, n, 3):
        st.set(f"scope-{i}", "k", -i)
    import time; time.sleep(0.35)                              # background syncs run
    assert st.stats()["sync_errors"] == 0, st.stats()["sync_errors"]
    st.close()
    from pystate._backend import core
    r = core.inspect(path)
    assert r["ok"] and r["logs"] == n, r
    st = pystate.State(path, sync=sync)
    assert st.check()["ok"]
    assert [st.get(f"scope-{i}", "k") for i in range(n)] == [-i if i % 3 == 0 else i for i in range(n)]
    st.compact()
    st.close()
    print("ok")
    """
)


@pytest.mark.parametrize("sync", ["interval", "always", "never"])
def test_more_scopes_than_the_descriptor_limit_write_sync_close_and_reopen(path, sync):
    r = subprocess.run([sys.executable, "-c", MANY_SCOPES, path, sync, "1100"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_a_sync_that_cannot_reach_a_log_is_not_ignored(path):
    """flush() must report a log it could not sync, not skip it, and try
    it again next time: here a's log has no descriptor open (the budget is
    one, and b has it) and its name was made a link behind the store's
    back, so it cannot be opened to be synced."""
    import logfmt

    st = pystate.State(path, sync="never", _max_open_files=1)
    st.set("a", "k", 1)
    st.set("b", "k", 1)  # takes the one descriptor from a
    target = logfmt.logs(path)[b"a"]
    os.replace(target, target + ".aside")
    os.symlink(target + ".aside", target)
    with pytest.raises(pystate.StoreOSError) as e:
        st.flush()
    assert e.value.errno == errno.ELOOP
    os.unlink(target)
    os.replace(target + ".aside", target)
    st.flush()  # tried again, and fine now
    st.close()


def test_warnings_name_the_file_and_offset(path):
    logpath = damaged_store(path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        pystate.State(path).close()
    (msg,) = [str(x.message) for x in w if x.category is pystate.RecoveryWarning]
    assert os.path.basename(logpath) in msg and "offset" in msg and "1 torn tail" in msg
