"""Fixtures for the benchmarks: the workload, built once per session."""

from __future__ import annotations

import os

import pytest

from pystate.bench.workload import KEYS, make_keys, make_value

N = int(os.environ.get("PYSTATE_BENCH_KEYS", KEYS))


@pytest.fixture(scope="session")
def keys():
    return make_keys(N)


@pytest.fixture(scope="session")
def values():
    return [make_value(i) for i in range(N)]


@pytest.fixture(scope="session")
def values2():
    return [make_value(i + 1) for i in range(N)]


_shared: dict = {}


@pytest.fixture(scope="session")
def shared(keys, values):
    """make(cls) for benchmarks that leave the store's keys as they were:
    one filled store per implementation for the whole session."""

    def make(cls):
        if cls not in _shared:
            st = cls()
            for (s, k), v in zip(keys, values):
                st.set(s, k, v)
            _shared[cls] = st
        return _shared[cls]

    return make
