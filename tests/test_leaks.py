"""The binding must not leak: Python objects (tracemalloc) or C memory
(stats()["heap_bytes"]) across many calls, error paths included."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

import pystate

OPS = [{"type": "increment", "path": "n", "by": 1}, {"type": "append", "path": "t", "value": "x"}]


def workload(st: pystate.State, rounds: int) -> None:
    for i in range(rounds):
        key = f"k{i % 50}"
        st.set("s", key, {"n": i, "t": [], "pad": "x" * (i % 300)})
        st.get("s", key)
        st.get("s", "missing")
        st.update("s", key, OPS)
        st.update("s", "new" + key, OPS)
        st.list("s")
        st.list_groups()
        st.trigger("state::get", {"scope": "s", "key": key})
        st.stats()
        for bad in (
            lambda: st.set("s", key, float("nan")),
            lambda: st.set(1, key, 1),
            lambda: st.update("s", key, [{"type": "nope"}]),
            lambda: st.update("s", key, [OPS[0], {"type": "set", "path": "x", "value": {1, 2}}]),
            lambda: st.trigger("state::nope", {}),
        ):
            with pytest.raises(pystate.StateError):
                bad()
        st.delete("s", key)
        st.delete("s", "new" + key)


def test_no_python_memory_leaks():
    st = pystate.State()
    workload(st, 300)  # warm caches (interned strings, free lists)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        workload(st, 3000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        st.close()
    # A leak of one object per call would be over 100 KB here.
    assert after - before < 20_000, after - before


def test_no_c_memory_left_after_deleting_everything():
    st = pystate.State()
    workload(st, 500)
    s = st.stats()
    assert s["keys"] == 0 and s["heap_bytes"] == 0, s
    st.close()


def test_no_python_memory_leaks_with_triggers_and_handlers():
    st = pystate.State()
    seen = []

    def handler(event, metadata=None):
        seen.append(1)
        if len(seen) % 7 == 0:
            raise RuntimeError("every seventh fails")

    st.register_function("h", handler)
    st.register_function("cond", lambda e: e["key"] != "k3")
    st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s"}, "metadata": {"m": 1}})
    st.register_trigger({"type": "state", "function_id": "h", "config": {"key": "k1", "condition_function_id": "cond"}})
    import logging

    logging.getLogger("pystate.triggers").disabled = True  # the failures are expected
    try:
        workload(st, 300)
        assert st.flush_events(timeout=60)
        seen.clear()
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            workload(st, 2000)
            assert st.flush_events(timeout=60)
            seen.clear()
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    finally:
        logging.getLogger("pystate.triggers").disabled = False
        st.close()
    assert after - before < 20_000, after - before
