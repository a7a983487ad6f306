"""pystate's in-memory core against the dict floor, same workload, same run.

Each benchmark times one pass over all keys; divide by the key count for
per-operation time (bench/ratios.py does it and prints the ratios).

    pytest bench/test_core.py --benchmark-json=bench-core.json
    python bench/ratios.py bench-core.json
"""

from __future__ import annotations

import pytest

import pystate
from workload import SCOPES, UPDATE_OPS, DictFloor

IMPLS = {"dict_floor": DictFloor, "pystate": pystate.State}
ROUNDS = 12
_filled: dict = {}

# Parametrized per test function, so the floor and pystate run back to back
# for each operation: this machine's load drifts, and a pair measured
# minutes apart would compare the drift rather than the code.
pair = pytest.mark.parametrize("impl", list(IMPLS))


def filled(impl, keys, values):
    st = IMPLS[impl]()
    for (s, k), v in zip(keys, values):
        st.set(s, k, v)
    return st


@pytest.fixture
def store(impl, keys, values):
    """A filled store, built once per implementation and shared by the
    benchmarks that leave its keys in place."""
    if impl not in _filled:
        _filled[impl] = filled(impl, keys, values)
    return _filled[impl]


def per_round(benchmark, impl, op, n):
    benchmark.group = op
    benchmark.extra_info.update(impl=impl, op=op, ops_per_round=n)


@pair
def test_insert(benchmark, impl, keys, values):
    per_round(benchmark, impl, "insert", len(keys))

    def setup():
        return (IMPLS[impl](),), {}

    def run(st):
        for (s, k), v in zip(keys, values):
            st.set(s, k, v)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS)


@pair
def test_overwrite(benchmark, impl, store, keys, values, values2):
    per_round(benchmark, impl, "overwrite", len(keys))
    flip = [values2, values]

    def run():
        vs = flip[0]
        flip.reverse()
        for (s, k), v in zip(keys, vs):
            st_set(s, k, v)

    st_set = store.set
    benchmark.pedantic(run, rounds=ROUNDS)


@pair
def test_get_hit(benchmark, impl, store, keys):
    per_round(benchmark, impl, "get_hit", len(keys))
    get = store.get

    def run():
        for s, k in keys:
            get(s, k)

    benchmark.pedantic(run, rounds=ROUNDS)


@pair
def test_get_miss(benchmark, impl, store, keys):
    per_round(benchmark, impl, "get_miss", len(keys))
    get = store.get
    missing = [(s, k + "-missing") for s, k in keys]

    def run():
        for s, k in missing:
            get(s, k)

    benchmark.pedantic(run, rounds=ROUNDS)


@pair
def test_update(benchmark, impl, keys, values):
    per_round(benchmark, impl, "update", len(keys))

    def setup():
        return (filled(impl, keys, values),), {}

    def run(st):
        update = st.update
        for s, k in keys:
            old, new, errors = update(s, k, UPDATE_OPS)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS)


@pair
def test_list(benchmark, impl, store, keys):
    per_round(benchmark, impl, "list", len(keys))  # per value listed
    scopes = [f"scope-{i}" for i in range(SCOPES)]

    def run():
        for s in scopes:
            store.list(s)

    benchmark.pedantic(run, rounds=ROUNDS)


@pair
def test_delete(benchmark, impl, keys, values):
    per_round(benchmark, impl, "delete", len(keys))

    def setup():
        return (filled(impl, keys, values),), {}

    def run(st):
        delete = st.delete
        for s, k in keys:
            delete(s, k)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS)
