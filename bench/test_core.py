"""pystate's in-memory core against the dict floor, same workload, same run.

This machine's load drifts by tens of percent over minutes, so the two are
measured in pairs: every round times one pass of the floor (in the round's
setup, by hand) and then one pass of pystate (by pytest-benchmark), back to
back. pytest-benchmark's statistics are pystate's; the floor's times ride
along in ``extra_info["floor_times"]``. bench/ratios.py prints the ratios.

    python -m pytest bench/test_core.py --benchmark-json=bench-core.json
    python bench/ratios.py bench-core.json --memory
"""

from __future__ import annotations

import pairing
import pystate
from pystate.bench.workload import SCOPES, UPDATE_OPS, DictFloor

ROUNDS = 15


def filled(cls, keys, values):
    st = cls()
    for (s, k), v in zip(keys, values):
        st.set(s, k, v)
    return st


def paired(benchmark, op, n, make, run, fresh=True):
    """Benchmark run(make(pystate.State)) against run(make(DictFloor)) in
    pairs (bench/pairing.py). make(cls) returns a store for one round: a
    fresh one, or (fresh=False) a shared one for operations that leave it
    as it was."""
    benchmark.group = op
    pairing.paired(benchmark, rounds=ROUNDS, make_base=lambda: make(DictFloor), run_base=run,
                   make_ours=lambda: make(pystate.State), run_ours=run, fresh=fresh,
                   op=op, ops_per_round=n)


def test_insert(benchmark, keys, values):
    def run(st):
        for (s, k), v in zip(keys, values):
            st.set(s, k, v)

    paired(benchmark, "insert", len(keys), lambda cls: cls(), run)


def test_overwrite(benchmark, shared, keys, values, values2):
    flip = {DictFloor: [values2, values], pystate.State: [values2, values]}

    def run(st):
        vs = flip[type(st)]
        vs.reverse()  # alternate, so every pass really changes the values
        for (s, k), v in zip(keys, vs[0]):
            st.set(s, k, v)

    paired(benchmark, "overwrite", len(keys), shared, run, fresh=False)


def test_get_hit(benchmark, shared, keys):
    def run(st):
        get = st.get
        for s, k in keys:
            get(s, k)

    paired(benchmark, "get_hit", len(keys), shared, run, fresh=False)


def test_get_miss(benchmark, shared, keys):
    missing = [(s, k + "-missing") for s, k in keys]

    def run(st):
        get = st.get
        for s, k in missing:
            get(s, k)

    paired(benchmark, "get_miss", len(keys), shared, run, fresh=False)


def test_update(benchmark, keys, values):
    def run(st):
        update = st.update
        for s, k in keys:
            old, new, errors = update(s, k, UPDATE_OPS)

    paired(benchmark, "update", len(keys), lambda cls: filled(cls, keys, values), run)


def test_list(benchmark, shared, keys):
    scopes = [f"scope-{i}" for i in range(SCOPES)]

    def run(st):
        for s in scopes:
            st.list(s)

    paired(benchmark, "list", len(keys), shared, run, fresh=False)  # per value listed


def test_delete(benchmark, keys, values):
    def run(st):
        delete = st.delete
        for s, k in keys:
            delete(s, k)

    paired(benchmark, "delete", len(keys), lambda cls: filled(cls, keys, values), run)
