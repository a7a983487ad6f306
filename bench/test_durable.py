"""pystate's file store (default sync="interval") against durable
alternatives (bench/durable_impls.py), same workload, same run; get
against the in-memory store; reopen against the pure-Python log's replay;
sync=always against a bare write+fdatasync per operation and with four
writer threads against one; disk after compaction.

    python -m pytest bench/test_durable.py --benchmark-json=bench-durable.json
    python bench/ratios.py bench-durable.json

The comparisons that decide a target are measured in pairs, as in
test_core.py: each round times the alternative (in the round's setup, by
hand) and then pystate (by pytest-benchmark), back to back, garbage
collector off; the alternative's times ride along in
``extra_info["other_times"]``. lmdb and sqlite, far slower, are timed on
their own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading

import pytest

import pystate
from pystate.bench.durable_impls import Lmdb, PyLog, Sqlite
import pairing
from pystate.bench.workload import UPDATE_OPS, make_value

ROUNDS = 5


@pytest.fixture(scope="module")
def root():
    d = tempfile.mkdtemp(prefix="pystate-bench-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


_counter = [0]


def new_dir(root):
    _counter[0] += 1
    return os.path.join(root, f"d{_counter[0]}")


def fill(st, keys, values):
    for (s, k), v in zip(keys, values):
        st.set(s, k, v)
    return st


def paired(benchmark, op, n, other, make_other, make_ours, run_other, run_ours, rounds=ROUNDS,
           fresh=True):
    """Benchmark run_ours(make_ours()) against run_other(make_other()) in
    pairs (bench/pairing.py). fresh: new stores per round, closed after."""
    benchmark.group = op
    pairing.paired(benchmark, rounds=rounds, make_base=make_other, run_base=run_other,
                   make_ours=make_ours, run_ours=run_ours, times_key="other_times", fresh=fresh,
                   op=op, impl="pystate", other=other, ops_per_round=n, suite="durable")


def alone(benchmark, op, impl, n, make, run, rounds=3):
    benchmark.group = op
    benchmark.extra_info.update(op=op, impl=impl, ops_per_round=n, suite="durable")
    opened = []

    def setup():
        while opened:
            opened.pop().close()
        st = make()
        opened.append(st)
        return (st,), {}

    benchmark.pedantic(lambda st: pairing.gc_off(run, st), setup=setup, rounds=rounds)
    for st in opened:
        st.close()


# ---- the writes, against the pure-Python log (paired) and lmdb, sqlite --------------

def writes(keys, values, values2):
    def insert(st):
        for (s, k), v in zip(keys, values):
            st.set(s, k, v)

    def overwrite(st):
        for (s, k), v in zip(keys, values2):
            st.set(s, k, v)

    def update(st):
        upd = st.update
        for s, k in keys:
            old, new, errors = upd(s, k, UPDATE_OPS)

    def delete(st):
        d = st.delete
        for s, k in keys:
            d(s, k)

    return {"insert": insert, "overwrite": overwrite, "update": update, "delete": delete}


def maker(cls, root, keys, values, op):
    """A store for one round of `op`: empty for insert, filled otherwise."""
    def make():
        st = cls(new_dir(root))
        return st if op == "insert" else fill(st, keys, values)
    return make


@pytest.mark.parametrize("op", ["insert", "overwrite", "update", "delete"])
def test_write_vs_pylog(benchmark, op, root, keys, values, values2):
    run = writes(keys, values, values2)[op]
    paired(benchmark, op, len(keys), "pylog",
           maker(PyLog, root, keys, values, op),
           maker(lambda p: pystate.State(p), root, keys, values, op),
           run, run)


@pytest.mark.parametrize("impl", ["lmdb", "sqlite"])
@pytest.mark.parametrize("op", ["insert", "overwrite", "update", "delete"])
def test_write_alternatives(benchmark, op, impl, root, keys, values, values2):
    cls = {"lmdb": Lmdb, "sqlite": Sqlite}[impl]
    alone(benchmark, op, impl, len(keys), maker(cls, root, keys, values, op),
          writes(keys, values, values2)[op])


# ---- reads, reopen ------------------------------------------------------------------------

def test_get_vs_memory(benchmark, root, keys, values):
    mem = fill(pystate.State(), keys, values)
    disk = fill(pystate.State(new_dir(root)), keys, values)

    def run(st):
        get = st.get
        for s, k in keys:
            get(s, k)

    paired(benchmark, "get", len(keys), "memory", lambda: mem, lambda: disk, run, run, fresh=False)
    mem.close()
    disk.close()


def test_reopen_vs_pylog_replay(benchmark, root, keys, values):
    ours, theirs = new_dir(root), new_dir(root)
    fill(pystate.State(ours), keys, values).close()
    fill(PyLog(theirs), keys, values).close()
    paired(benchmark, "reopen", len(keys), "pylog",
           lambda: theirs, lambda: ours,
           lambda p: PyLog(p).close(), lambda p: pystate.State(p).close(), fresh=False)


# ---- sync=always ------------------------------------------------------------------------------

SYNC_OPS = 1000
VALUE = make_value(7)
RECORD = b"x" * 244  # a log record of the workload's size


def always_store(root, scopes=1):
    st = pystate.State(new_dir(root), sync="always")
    for t in range(scopes):
        st.set(f"s{t}", "warm", 0)  # create the logs outside the timing
    return st


def test_always_one_writer_vs_write_fdatasync(benchmark, root):
    """The least a durable write can cost: os.write of one record, then
    os.fdatasync, per operation."""

    def bare(fd):
        for _ in range(SYNC_OPS):
            os.write(fd, RECORD)
            os.fdatasync(fd)
        os.close(fd)

    def ours(st):
        for i in range(SYNC_OPS):
            st.set("s0", f"k{i}", VALUE)

    paired(benchmark, "always_1", SYNC_OPS, "bare",
           lambda: os.open(os.path.join(root, "bare"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
           lambda: always_store(root), bare, ours)


def threaded(st, threads, shared):
    per = SYNC_OPS // threads

    def work(t):
        scope = "s0" if shared else f"s{t}"
        for i in range(per):
            st.set(scope, f"t{t}-{i}", VALUE)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


@pytest.mark.parametrize("scopes", ["shared", "separate"])
def test_always_four_writers_vs_one(benchmark, root, scopes):
    """Concurrent writers share fdatasyncs (group commit): four threads
    against one, same number of writes."""
    shared = scopes == "shared"
    paired(benchmark, f"always_4_{scopes}", SYNC_OPS, "1 thread",
           lambda: always_store(root, 1 if shared else 4),
           lambda: always_store(root, 1 if shared else 4),
           lambda st: threaded(st, 1, shared), lambda st: threaded(st, 4, shared))


# ---- disk ------------------------------------------------------------------------------------------

def test_disk_after_compaction(benchmark, root, keys, values):
    """Log bytes after compact() over the live keys' and values' bytes."""
    st = pystate.State(new_dir(root), sync="never")
    fill(st, keys, values)
    for (s, k), v in zip(keys[::2], values[::2]):  # some history to drop
        st.set(s, k, v)
    for s, k in keys[1::10]:
        st.delete(s, k)
    benchmark.pedantic(st.compact, rounds=1)
    s = st.stats()
    disk = sum(os.path.getsize(os.path.join(st.path, f)) for f in os.listdir(st.path) if f.endswith(".log"))
    benchmark.group = "disk"
    benchmark.extra_info.update(
        op="disk", impl="pystate", suite="durable", ops_per_round=1,
        disk_bytes=disk, live_bytes=s["key_bytes"] + s["value_bytes"],
        ratio=disk / (s["key_bytes"] + s["value_bytes"]),
    )
    st.close()
