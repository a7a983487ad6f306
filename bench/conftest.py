"""Fixtures for the benchmarks: the workload, built once per session."""

from __future__ import annotations

import os

import pytest

from workload import KEYS, make_keys, make_value

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
