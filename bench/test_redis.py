"""The redis adapter against plain redis-py on the same server, same run.

The baseline is what a program would write by hand: ``HSET`` of the
orjson text, ``HGET`` then decode, ``HVALS`` then decode. pystate's set also
returns the old value (one Lua call), and its update is a read and a
compare-and-set (two round trips), against a baseline update of HGET,
decode, change, encode, HSET (two round trips, not atomic). Paired rounds,
as in test_core.py. The server is a fresh redis-server on a loopback port.

    python -m pytest bench/test_redis.py --benchmark-json=bench-redis.json
    python bench/ratios.py bench-redis.json

PYSTATE_BENCH_REDIS_KEYS (default 20,000) sets how many keys of the
workload are used: every call is a network round trip.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import orjson
import pytest
import redis

import pairing
from pystate.bench.redis_server import start_redis
import pystate
from pystate.bench.workload import UPDATE_OPS, apply_update_ops

ROUNDS = 7
N = int(os.environ.get("PYSTATE_BENCH_REDIS_KEYS", 20_000))
LIST_KEYS = 25_000


@pytest.fixture(scope="module")
def server():
    d = tempfile.mkdtemp(prefix="pystate-bench-redis-")
    proc, url = start_redis(d)
    yield url
    proc.kill()
    proc.wait()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def clients(server):
    raw = redis.Redis.from_url(server)
    st = pystate.State(adapter="redis", redis_url=server)
    yield raw, st
    st.close()
    raw.close()


def fill(raw, work, values):
    raw.flushdb()
    pipe = raw.pipeline(transaction=False)
    for (s, k), v in zip(work, values):
        pipe.hset("state:" + s, k, orjson.dumps(v))
    pipe.execute()


def paired(benchmark, op, n, prepare, run_base, run_ours):
    """Each round: prepare() the server, time run_base by hand, prepare()
    again, time run_ours by pytest-benchmark (bench/pairing.py)."""
    benchmark.group = f"redis-{op}"
    pairing.paired(benchmark, rounds=ROUNDS, make_base=prepare, run_base=lambda _: run_base(),
                   make_ours=prepare, run_ours=lambda _: run_ours(), fresh=False,
                   suite="redis", op=op, ops_per_round=n)


def test_set(benchmark, clients, keys, values):
    raw, st = clients
    work = list(zip(keys[:N], values[:N]))

    def base():
        hset, dumps = raw.hset, orjson.dumps
        for (s, k), v in work:
            hset("state:" + s, k, dumps(v))

    def ours():
        set_ = st.set
        for (s, k), v in work:
            set_(s, k, v)

    paired(benchmark, "set", len(work), raw.flushdb, base, ours)


def test_get(benchmark, clients, keys, values):
    raw, st = clients
    work = keys[:N]
    fill(raw, work, values[:N])

    def base():
        hget, loads = raw.hget, orjson.loads
        for s, k in work:
            loads(hget("state:" + s, k))

    def ours():
        get = st.get
        for s, k in work:
            get(s, k)

    paired(benchmark, "get", len(work), lambda: None, base, ours)


def test_update(benchmark, clients, keys, values):
    raw, st = clients
    work = keys[:N]

    def base():
        hget, hset, dumps = raw.hget, raw.hset, orjson.dumps
        for s, k in work:
            _, v = apply_update_ops(hget("state:" + s, k))  # UPDATE_OPS, by hand
            hset("state:" + s, k, dumps(v))

    def ours():
        update = st.update
        for s, k in work:
            update(s, k, UPDATE_OPS)

    paired(benchmark, "update", len(work), lambda: fill(raw, work, values[:N]), base, ours)


def test_list_of_a_25000_key_scope(benchmark, clients, values):
    raw, st = clients
    raw.flushdb()
    pipe = raw.pipeline(transaction=False)
    for i in range(LIST_KEYS):
        pipe.hset("state:big", f"k{i}", orjson.dumps(values[i % len(values)]))
    pipe.execute()

    def base():
        loads = orjson.loads
        [loads(v) for v in raw.hvals("state:big")]

    def ours():
        st.list("big")

    paired(benchmark, "list_25000", LIST_KEYS, lambda: None, base, ours)
