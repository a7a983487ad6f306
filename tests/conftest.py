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
