"""pystate's file store (default sync="interval") against durable
alternatives (bench/durable_impls.py), same workload, same run; sync=always
against a bare write+fdatasync per operation and with four writer threads;
reopen against the pure-Python log's replay; disk after compaction.

    python -m pytest bench/test_durable.py --benchmark-json=bench-durable.json
    python bench/ratios.py bench-durable.json

Implementations run back to back for each operation; per-operation times
come from the best of the rounds.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time

import pytest

import pystate
from durable_impls import Lmdb, PyLog, Sqlite
from workload import UPDATE_OPS, make_value

ROUNDS = 3
IMPLS = {
    "pystate": lambda p: pystate.State(p),
    "pylog": PyLog,
    "lmdb": Lmdb,
    "sqlite": Sqlite,
}
pair = pytest.mark.parametrize("impl", list(IMPLS))


@pytest.fixture(scope="module")
def root():
    d = tempfile.mkdtemp(prefix="pystate-bench-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Dirs:
    """A fresh directory per round, removed after."""

    def __init__(self, root):
        self.root, self.n = root, 0

    def new(self):
        self.n += 1
        p = os.path.join(self.root, f"d{self.n}")
        shutil.rmtree(p, ignore_errors=True)
        return p


def info(benchmark, impl, op, n, group=None):
    benchmark.group = group or op
    benchmark.extra_info.update(impl=impl, op=op, ops_per_round=n, suite="durable")


def fill(st, keys, values):
    for (s, k), v in zip(keys, values):
        st.set(s, k, v)
    return st


def pedantic(benchmark, run, setup, teardown_list):
    def timed(st):
        gc.disable()
        try:
            run(st)
        finally:
            gc.enable()

    benchmark.pedantic(timed, setup=setup, rounds=ROUNDS)
    for st in teardown_list:
        st.close()


@pair
def test_insert(benchmark, impl, root, keys, values):
    info(benchmark, impl, "insert", len(keys))
    dirs, opened = Dirs(root), []

    def setup():
        st = IMPLS[impl](dirs.new())
        opened.append(st)
        return (st,), {}

    def run(st):
        for (s, k), v in zip(keys, values):
            st.set(s, k, v)

    pedantic(benchmark, run, setup, opened)


@pair
def test_overwrite(benchmark, impl, root, keys, values, values2):
    info(benchmark, impl, "overwrite", len(keys))
    st = fill(IMPLS[impl](Dirs(root).new() + impl), keys, values)
    flip = [values2, values]

    def run(s_):
        flip.reverse()
        for (s, k), v in zip(keys, flip[0]):
            s_.set(s, k, v)

    pedantic(benchmark, run, lambda: ((st,), {}), [st])


@pair
def test_update(benchmark, impl, root, keys, values):
    info(benchmark, impl, "update", len(keys))
    dirs, opened = Dirs(root), []

    def setup():
        st = fill(IMPLS[impl](dirs.new() + "u"), keys, values)
        opened.append(st)
        return (st,), {}

    def run(st):
        update = st.update
        for s, k in keys:
            old, new, errors = update(s, k, UPDATE_OPS)

    pedantic(benchmark, run, setup, opened)


@pair
def test_delete(benchmark, impl, root, keys, values):
    info(benchmark, impl, "delete", len(keys))
    dirs, opened = Dirs(root), []

    def setup():
        st = fill(IMPLS[impl](dirs.new() + "x"), keys, values)
        opened.append(st)
        return (st,), {}

    def run(st):
        delete = st.delete
        for s, k in keys:
            delete(s, k)

    pedantic(benchmark, run, setup, opened)


@pytest.mark.parametrize("impl", ["pystate", "memory"])
def test_get(benchmark, impl, root, keys, values):
    info(benchmark, impl, "get", len(keys), group="get (file vs memory)")
    st = pystate.State(Dirs(root).new() + "g") if impl == "pystate" else pystate.State()
    fill(st, keys, values)

    def run(s_):
        get = s_.get
        for s, k in keys:
            get(s, k)

    pedantic(benchmark, run, lambda: ((st,), {}), [st])


@pytest.mark.parametrize("impl", ["pystate", "pylog"])
def test_reopen(benchmark, impl, root, keys, values):
    info(benchmark, impl, "reopen", len(keys))
    path = Dirs(root).new() + "r" + impl
    make = (lambda p: pystate.State(p)) if impl == "pystate" else PyLog
    fill(make(path), keys, values).close()

    def run(_):
        make(path).close()

    pedantic(benchmark, run, lambda: ((None,), {}), [])


# ---- sync=always -----------------------------------------------------------------------

SYNC_OPS = 1000


@pytest.mark.parametrize("impl", ["pystate", "bare"])
def test_always_one_writer(benchmark, impl, root):
    """pystate sync="always" against the least a durable write can cost:
    os.write of the same record size, then os.fdatasync, per operation."""
    info(benchmark, impl, "always_1", SYNC_OPS, group="sync=always, one writer")
    dirs, opened = Dirs(root), []
    value = make_value(7)
    record = b"x" * 244  # a log record of the workload's size

    def setup():
        if impl == "pystate":
            st = pystate.State(dirs.new(), sync="always")
            st.set("s", "warm", 0)  # create the log outside the timing
            opened.append(st)
            return (st,), {}
        fd = os.open(os.path.join(root, "bare"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        return (fd,), {}

    def run(target):
        if impl == "pystate":
            for i in range(SYNC_OPS):
                target.set("s", f"k{i}", value)
        else:
            for _ in range(SYNC_OPS):
                os.write(target, record)
                os.fdatasync(target)
            os.close(target)

    pedantic(benchmark, run, setup, opened)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("scopes", ["shared", "separate"])
def test_always_threads(benchmark, threads, scopes, root):
    """Throughput of sync="always" with 1 or 4 writer threads: concurrent
    writers share fdatasyncs (group commit)."""
    info(benchmark, f"{threads}x{scopes}", "always_threads", SYNC_OPS, group=f"sync=always, threads, {scopes} scope")
    dirs, opened = Dirs(root), []
    value = make_value(7)

    def setup():
        st = pystate.State(dirs.new(), sync="always")
        for t in range(threads):
            st.set("s" if scopes == "shared" else f"s{t}", "warm", 0)
        opened.append(st)
        return (st,), {}

    def run(st):
        per = SYNC_OPS // threads

        def work(t):
            scope = "s" if scopes == "shared" else f"s{t}"
            for i in range(per):
                st.set(scope, f"t{t}-{i}", value)

        ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    pedantic(benchmark, run, setup, opened)


def test_disk_after_compaction(benchmark, root, keys, values):
    """Log bytes after compact() over the live keys' and values' bytes."""
    st = pystate.State(Dirs(root).new() + "c", sync="never")
    fill(st, keys, values)
    for (s, k), v in zip(keys[::2], values[::2]):  # some history to drop
        st.set(s, k, v)
    for s, k in keys[1::10]:
        st.delete(s, k)
    benchmark.pedantic(st.compact, rounds=1)
    s = st.stats()
    disk = sum(os.path.getsize(os.path.join(st.path, f)) for f in os.listdir(st.path) if f.endswith(".log"))
    benchmark.extra_info.update(
        op="disk", impl="pystate", suite="durable", ops_per_round=1,
        disk_bytes=disk, live_bytes=s["key_bytes"] + s["value_bytes"],
        ratio=disk / (s["key_bytes"] + s["value_bytes"]),
    )
    benchmark.group = "disk after compaction"
    st.close()
    time.sleep(0)
