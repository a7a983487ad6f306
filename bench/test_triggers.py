"""What triggers cost: writes with none, with many on other scopes, and the
end-to-end event rate to one handler. Same workload as bench/test_core.py.

Paired rounds, as in test_core.py: each round times the baseline (a store
with no trigger registered) by hand, then the measured store, back to back.
bench/ratios.py prints the ratios and the event rate.

    python -m pytest bench/test_triggers.py --benchmark-json=bench-triggers.json
    python bench/ratios.py bench-triggers.json

The baseline of "set with no triggers" is the core issue's set: the same
code as today's, less the trigger gate. bench/ab_set.py measures it against
a build of an older commit, since one process cannot load two builds.
"""

from __future__ import annotations

import pairing
import pystate

ROUNDS = 9
OTHER_TRIGGERS = 10_000


def with_other_triggers() -> pystate.State:
    st = pystate.State()
    st.register_function("noop", lambda event: None)
    for i in range(OTHER_TRIGGERS):
        st.register_trigger({"type": "state", "function_id": "noop", "config": {"scope": f"elsewhere-{i}"}})
    return st


def insert_all(st, keys, values):
    set_ = st.set
    for (s, k), v in zip(keys, values):
        set_(s, k, v)


def paired(benchmark, op, n, make_base, make_ours, run, run_base=None):
    """Time run(make_ours()) by pytest-benchmark and run_base(make_base())
    (default: the same run) by hand, in pairs (bench/pairing.py)."""
    benchmark.group = op
    pairing.paired(benchmark, rounds=ROUNDS, make_base=make_base, run_base=run_base or run,
                   make_ours=make_ours, run_ours=run, suite="triggers", op=op, ops_per_round=n)


def test_set_with_10000_triggers_on_other_scopes(benchmark, keys, values):
    paired(
        benchmark,
        "set_other_triggers",
        len(keys),
        pystate.State,
        with_other_triggers,
        lambda st: insert_all(st, keys, values),
    )


def test_set_with_one_noop_handler_end_to_end(benchmark, keys, values):
    """Every write matches one trigger whose handler does nothing; the
    round ends when flush_events says every event has run. The handler
    checks that each scope's keys arrive in write order and none is lost."""
    expected = {}
    for s, k in keys:
        expected.setdefault(s, []).append(k)
    received: dict[str, list[str]] = {}

    def make():
        received.clear()
        st = pystate.State()

        def handler(event):
            received[event["scope"]].append(event["key"])

        st.register_function("noop", handler)
        for s in expected:
            received[s] = []
            st.register_trigger({"type": "state", "function_id": "noop", "config": {"scope": s}})
        return st

    def run_and_check(st):
        insert_all(st, keys, values)
        assert st.flush_events(timeout=600)
        assert received == expected, "events were lost or reordered"
        assert st.stats()["handler_errors"] == 0

    paired(
        benchmark,
        "events_end_to_end",
        len(keys),
        pystate.State,
        make,
        run_and_check,
        run_base=lambda st: insert_all(st, keys, values),
    )
