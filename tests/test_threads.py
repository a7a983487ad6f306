"""State shared between threads: atomic updates, consistent reads."""

from __future__ import annotations

import sys
import threading

import pystate
from pystate._backend import core as _core
from pystate import writes as _writes


def run_threads(n, target):
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "thread did not finish"
    assert not errors, errors


def test_two_threads_incrementing_one_counter_lose_nothing(st):
    # Switch threads as often as the interpreter allows, so that updates
    # really do interleave between read and compare-and-set.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ops = [{"type": "increment", "path": "n", "by": 1}]
        run_threads(2, lambda i: [st.update("c", "counter", ops) for _ in range(100_000)])
    finally:
        sys.setswitchinterval(old)
    assert st.get("c", "counter") == {"n": 200_000}


def test_concurrent_appends_keep_every_element(st):
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        def work(i):
            for j in range(500):
                st.update("log", "events", [{"type": "append", "path": "e", "value": [i, j]}])

        run_threads(4, work)
    finally:
        sys.setswitchinterval(old)
    events = st.get("log", "events")["e"]
    assert len(events) == 2000
    for i in range(4):  # each thread's appends arrive in its own order
        assert [j for t, j in events if t == i] == list(range(500))


def test_update_retries_when_the_key_changes_between_read_and_write(st):
    # Force the race deterministically: the hook runs after update read the
    # old value and before it writes the new one.
    st.set("s", "k", {"n": 1})
    calls = []

    def race():
        calls.append(1)
        if len(calls) == 1:
            st.set("s", "k", {"n": 100})

    _writes._set_race_hook(race)
    try:
        r = st.update("s", "k", [{"type": "increment", "path": "n", "by": 1}])
    finally:
        _writes._set_race_hook(None)
    assert len(calls) == 2  # the first attempt lost the race and was redone
    assert (r.old_value, r.new_value) == ({"n": 100}, {"n": 101})
    assert st.get("s", "k") == {"n": 101}


def test_update_of_a_created_key_retries_when_someone_else_creates_it(st):
    calls = []

    def race():
        calls.append(1)
        if len(calls) == 1:
            st.set("s", "new", {"n": 5})

    _writes._set_race_hook(race)
    try:
        r = st.update("s", "new", [{"type": "increment", "path": "n", "by": 1}])
    finally:
        _writes._set_race_hook(None)
    assert len(calls) == 2
    assert (r.old_value, r.new_value) == ({"n": 5}, {"n": 6})


def test_writes_to_other_keys_do_not_force_a_retry(st):
    st.set("s", "k", {"n": 1})
    calls = []

    def race():
        calls.append(1)
        st.set("s", f"other{len(calls)}", 0)

    _writes._set_race_hook(race)
    try:
        st.update("s", "k", [{"type": "increment", "path": "n", "by": 1}])
    finally:
        _writes._set_race_hook(None)
    assert len(calls) == 1


def test_mixed_operations_from_many_threads_stay_consistent(st):
    def work(i):
        scope = f"s{i % 3}"
        for j in range(3000):
            key = f"k{j % 50}"
            st.set(scope, key, {"by": i, "j": j})
            st.get(scope, key)
            if j % 7 == 0:
                st.delete(scope, key)
            if j % 11 == 0:
                st.update(scope, key, [{"type": "increment", "path": "j", "by": 1}])
            if j % 101 == 0:
                st.list(scope)
                st.list_groups()

    run_threads(6, work)
    total = 0
    for scope in st.list_groups():
        values = st.list(scope)
        total += len(values)
        for v in values:
            assert set(v) == {"by", "j"}
    assert st.stats()["keys"] == total


def test_close_while_other_threads_use_the_store_never_crashes():
    st = pystate.State()
    started = threading.Barrier(4, timeout=60)
    outcomes = []

    def work(i):
        n = 0
        while True:
            if n == 100:
                started.wait()  # everyone is busy before the close
            try:
                st.set("s", f"k{n % 10}", n)
                st.get("s", f"k{n % 10}")
                st.update("s", "u", [{"type": "increment", "path": "n", "by": 1}])
            except pystate.ClosedError:
                outcomes.append("closed")
                return
            n += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    started.wait()
    st.close()
    for t in threads:
        t.join(timeout=60)
    assert outcomes == ["closed"] * 3


def test_check_flush_and_compact_beside_writers_see_a_consistent_store(st):
    # In memory the store takes no lock of its own (the GIL serializes its
    # calls), so these must not let the GIL go while they walk its tables.
    stop = threading.Event()
    checks = []

    def work(i):
        if i == 0:
            try:
                while len(checks) < 200:
                    checks.append(st.check()["ok"])
                    st.flush()
                    st.compact()
            finally:
                stop.set()
            return
        j = 0
        while not stop.is_set() and j < 200_000:
            key = f"k{j % 500}"
            st.set(f"s{j % 7}", key, {"j": j, "pad": "x" * (j % 40)})
            if j % 3 == 0:
                st.delete(f"s{(j + 1) % 7}", key)
            j += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        run_threads(3, work)
    finally:
        sys.setswitchinterval(old)
    assert checks == [True] * 200
    assert st.check()["ok"]
