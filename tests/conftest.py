"""Shared fixtures and helpers for the pystate test suite."""

from __future__ import annotations

import pytest

import pystate

MISSING = object()


@pytest.fixture
def st():
    """A fresh in-memory store, closed after the test."""
    s = pystate.State()
    yield s
    s.close()


@pytest.fixture
def run_ops(st):
    """Apply ops to `old` (MISSING: no key) through State.update, check that
    the stored value is the returned new value, and return (new, errors)."""

    keys = iter(range(10**9))

    def run(old, ops):
        key = f"k{next(keys)}"  # a key of its own, so MISSING means missing
        if old is not MISSING:
            st.set("t", key, old)
        r = st.update("t", key, ops)
        assert r.old_value == (None if old is MISSING else old)
        assert st.get("t", key, MISSING) == r.new_value
        return r.new_value, r.errors

    return run


@pytest.fixture
def codes():
    """The error codes of an update's errors, in order."""
    return lambda errors: [e["code"] for e in errors]


@pytest.fixture
def watch(st):
    """Register a state trigger on ``st`` with the given config and return
    the list its handler appends each event to (read it after
    ``st.flush_events()``)."""

    counter = iter(range(10**9))

    def make(config=None, *, metadata=None, condition=None, handler=None):
        seen = []
        fid = f"collect{next(counter)}"
        st.register_function(fid, handler or seen.append)
        if condition is not None:
            st.register_function(f"{fid}.cond", condition)
            config = dict(config or {}, condition_function_id=f"{fid}.cond")
        st.register_trigger({"type": "state", "function_id": fid, "config": config or {}, "metadata": metadata})
        return seen

    return make


def drain(st, timeout=30):
    """Wait for every queued event; fail the test if they do not finish."""
    assert st.flush_events(timeout=timeout), "events were still pending after the timeout"
