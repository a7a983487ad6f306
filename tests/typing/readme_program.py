"""A program written as README teaches, with annotations: ``mypy --strict``
must find nothing wrong in it (tests/test_typing.py runs it, and runs it)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from typing import Any

import pystate


def use_the_store(path: str) -> None:
    with pystate.State(path, sync="always", max_value_bytes=1 << 20) as st:
        old: Any = st.set("users", "u1", {"name": "Ada", "visits": 0})
        assert old is None
        r = st.update("users", "u1", [{"type": "increment", "path": "visits", "by": 1}])
        old_value, new_value, errors = r
        assert new_value == {"name": "Ada", "visits": 1} and errors == [] and r.old_value == old_value
        for group in st.list_groups():
            print(group, st.list(group), st.keys(group))
        for key, value in st.items("users"):
            print(key, value)
        assert ("users", "u1") in st
        st.trigger("state::set", {"scope": "s", "key": "k", "value": 1})

        def on_user(event: dict[str, Any]) -> None:
            print(event["event_type"], event["key"])

        st.register_function("users::on_change", on_user)
        trig = st.register_trigger({"type": "state", "function_id": "users::on_change"})

        @st.on_change(scope="orders")
        def on_order(event: dict[str, Any]) -> None:
            print("order", event["key"])

        st.set("orders", "o1", {"total": 5})
        st.flush_events()
        on_order.unregister()
        trig.unregister()
        report: dict[str, Any] = st.check()
        assert report["ok"]
        st.compact("users")
        st.flush()
        stats: dict[str, Any] = st.stats()
        print(stats["keys"], st.closed, st.adapter, st.triggers_enabled)
        st.delete("users", "u1")


async def use_it_async(path: str) -> None:
    async with pystate.AsyncState(path) as st:
        await st.set("users", "u1", {"name": "Ada"})
        print(await st.get("users", "u1"))
        for group in await st.list_groups():
            print(group)
        await st.flush_events()


def main() -> int:
    with tempfile.TemporaryDirectory() as d:
        use_the_store(os.path.join(d, "a"))
        asyncio.run(use_it_async(os.path.join(d, "b")))
    try:
        pystate.State(adapter="kv", max_value_bytes=0)
    except pystate.ConfigError as e:
        print(e.code, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
