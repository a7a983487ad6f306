"""``pystate demo``: a short tour of the store that proves it works."""

from __future__ import annotations

import os
import tempfile

import pystate
from pystate._backend import codec as _codec

dumps = _codec.dumps

__all__ = ["demo"]


def _json(value) -> str:
    # Printed through pystate's own codec: the one place JSON is written.
    return dumps(value).decode()


def demo(path: str | None = None) -> int:
    """Write, update, list and read back on an in-memory store, then show
    that a file store (in ``path``, or a temporary directory) keeps its
    writes across close and reopen."""
    with pystate.State() as st:
        print(f"pystate {pystate.__version__} ({pystate.backend} backend), in-memory store")
        events: list[str] = []

        # A state trigger: runs after each write to "users", on the
        # dispatcher thread, unless the condition returns False.
        @st.on_change(scope="users", condition=lambda e: e["key"] == "ada")
        def on_user(event):
            events.append(f"{event['event_type']} {event['scope']}/{event['key']} -> {_json(event['new_value'])}")

        old = st.set("users", "ada", {"name": "Ada", "visits": 0, "tags": []})
        print(f"set users/ada            -> old value {_json(old)}")
        st.set("users", "grace", {"name": "Grace", "visits": 3, "tags": ["admiral"]})
        r = st.update(
            "users",
            "ada",
            [
                {"type": "increment", "path": "visits", "by": 1},
                {"type": "append", "path": "tags", "value": "math"},
                {"type": "increment", "path": "name", "by": 1},
            ],
        )
        print(f"update users/ada         -> {_json(r.new_value)}")
        for e in r.errors:
            print(f"  op {e['op_index']} skipped: {e['code']}: {e['message']}")
        print(f"list users               -> {_json(st.list('users'))}")
        print(f"list_groups              -> {_json(st.list_groups())}")
        value = st.trigger("state::get", {"scope": "users", "key": "ada"})
        print(f"trigger state::get       -> {_json(value)}")
        assert value == {"name": "Ada", "visits": 1, "tags": ["math"]}, value
        assert st.flush_events(timeout=30), "events did not finish"
        for line in events:
            print(f"trigger on users/ada     -> {line}")
        assert len(events) == 2, events
        print(f"stats                    -> {_json(st.stats())}")
    if path is not None:
        return _durable(path)
    with tempfile.TemporaryDirectory(prefix="pystate-demo-") as tmp:
        return _durable(os.path.join(tmp, "store"))


def _durable(path: str) -> int:
    with pystate.State(path) as st:
        print(f"file store at {path}")
        before = st.get("counters", "runs") or 0
        st.set("counters", "runs", before + 1)
        st.update("counters", "log", [{"type": "append", "path": "runs", "value": before + 1}])
        print(f"set counters/runs        -> {before + 1}")
    # A new State replays the logs: what was acknowledged is back.
    with pystate.State(path) as st:
        runs = st.get("counters", "runs")
        print(f"reopened, counters/runs  -> {runs}")
        assert runs == before + 1, runs
        s = st.stats()
        print(f"log bytes                -> {s['log_bytes']}, check -> {_json(st.check())}")
    return 0
