"""The one write path (pystate/writes.py), whichever binding or adapter is
under it: the compare-and-set loop and its turn locks."""

from __future__ import annotations

import pystate
from pystate import writes as _writes


def _race_once(st, then):
    """A race hook that runs ``then()`` on the first call only; and the list
    of calls it saw."""
    calls = []

    def race():
        calls.append(1)
        if len(calls) == 1:
            then()

    return race, calls


def test_update_gives_back_its_turn_after_a_conflict():
    # After a compare-and-set conflict the updater retries holding the key's
    # turn lock; it must be free again once update returns.
    st = pystate.State()
    st.set("s", "k", {"n": 0})
    for rnd in range(3):
        race, calls = _race_once(st, lambda: st.set("s", "k", {"n": 100 * (rnd + 1)}))
        _writes._set_race_hook(race)
        try:
            r = st.update("s", "k", [{"type": "increment", "path": "n", "by": 1}])
        finally:
            _writes._set_race_hook(None)
        assert len(calls) == 2 and r.new_value == {"n": 100 * (rnd + 1) + 1}
        assert not any(lock.locked() for lock in st._writes._turns)


def test_update_whose_retry_fails_its_ops_still_gives_back_its_turn():
    st = pystate.State()
    st.set("s", "k", {"n": 0})

    def raced_then_bad():
        st.set("s", "k", {"n": "text"})
        _writes._set_race_hook(None)

    _writes._set_race_hook(raced_then_bad)
    try:
        r = st.update("s", "k", [{"type": "increment", "path": "n", "by": 1}])
    finally:
        _writes._set_race_hook(None)
    assert r.errors[0]["code"] == "increment.not_number"
    assert not any(lock.locked() for lock in st._writes._turns)


def test_an_update_closed_under_it_raises_and_gives_back_its_turn():
    st = pystate.State()
    st.set("s", "k", {"n": 0})

    def close_then_race():
        _writes._set_race_hook(None)
        st._writes.seal()

    _writes._set_race_hook(close_then_race)
    try:
        try:
            st.update("s", "k", [{"type": "increment", "path": "n", "by": 1}])
        except pystate.ClosedError:
            pass
        else:
            raise AssertionError("a sealed store took an update")
    finally:
        _writes._set_race_hook(None)
    assert st.get("s", "k") == {"n": 0}
    assert not any(lock.locked() for lock in st._writes._turns)


def test_an_update_retried_after_a_conflict_applies_its_ops_to_fresh_copies():
    # The ops' values go into the new value (set puts its value there, and
    # the append then grows that very list): a retry must start again from
    # the request, or it would append to the list of the dropped attempt.
    st = pystate.State()
    st.set("s", "k", {"n": 0})
    race, calls = _race_once(st, lambda: st.set("s", "k", {"n": 1}))
    ops = [{"type": "set", "path": "x", "value": [1]},
           {"type": "append", "path": "x", "value": 2}]
    _writes._set_race_hook(race)
    try:
        r = st.update("s", "k", ops)
    finally:
        _writes._set_race_hook(None)
    assert len(calls) == 2
    assert r.new_value == {"n": 1, "x": [1, 2]} == st.get("s", "k")
    assert ops[0]["value"] == [1]


def test_an_update_under_an_update_of_another_key_writes_each_key_its_own_value():
    # Between an update's read and its write, the race hook updates a key
    # of the same length in another scope: that inner update's read is the
    # store's last one when the outer write comes, and the outer write must
    # still land on its own key.
    st = pystate.State()
    st.set("s1", "ka", {"n": 1})
    st.set("s2", "ka", {"n": 10})
    st.set("s1", "kb", {"n": 100})
    inc = [{"type": "increment", "path": "n", "by": 1}]
    race, calls = _race_once(st, lambda: (st.update("s2", "ka", inc), st.get("s1", "kb")))
    _writes._set_race_hook(race)
    try:
        r = st.update("s1", "ka", inc)
    finally:
        _writes._set_race_hook(None)
    assert r.new_value == {"n": 2} and r.old_value == {"n": 1}
    assert st.get("s1", "ka") == {"n": 2}
    assert st.get("s2", "ka") == {"n": 11}
    assert st.get("s1", "kb") == {"n": 100}
    # A read in between changed nothing: no retry (the hook ran twice: once
    # in each update, with no third for a retried outer one).
    assert len(calls) == 2


def test_update_checks_the_names_before_the_ops():
    # As before the ops were parsed ahead of the read: a bad scope is what
    # a request with a bad scope and bad ops is refused for.
    st = pystate.State()
    try:
        st.update(5, "k", [{"type": "nonsense"}])  # type: ignore[arg-type]
    except pystate.PayloadError as e:
        assert "scope" in str(e) and "nonsense" not in str(e)
    else:
        raise AssertionError("a bad scope was taken")
    try:
        st.update("s", "k", [{"type": "nonsense"}])
    except pystate.PayloadError as e:
        assert "nonsense" in str(e)
    else:
        raise AssertionError("a bad op was taken")
    assert st.get("s", "k") is None
