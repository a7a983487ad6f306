"""``AsyncState``: the State surface as coroutines, for asyncio programs.

A thin layer over :class:`pystate.State`, not a second store. Calls that
only touch memory (every read and write of an in-memory store, and writes
of a file-based one in the ``interval`` and ``never`` modes, which copy into
a mapped log) run directly on the loop: they take microseconds, less than a
hop to a thread would. Calls that wait on the disk, the network or other
threads (every call of the redis adapter, writes with ``sync="always"``,
``flush``, ``compact``, ``check``, ``flush_events``, ``close``) run on a
worker thread, so the loop keeps going. When the event queue is full, writes wait for room without blocking
the loop.

>>> import asyncio, pystate
>>> async def main():
...     async with pystate.AsyncState() as st:
...         seen = []
...         async def on_user(event):
...             seen.append(event["new_value"])
...         st.register_function("on_user", on_user)
...         st.register_trigger({"type": "state", "function_id": "on_user",
...                              "config": {"scope": "users"}})
...         await st.set("users", "u1", {"name": "Ada"})
...         await st.flush_events()
...         return seen
>>> asyncio.run(main())
[{'name': 'Ada'}]
"""

from __future__ import annotations

import asyncio
import builtins
import os
from typing import TYPE_CHECKING, Any, Callable, Literal, overload

from pystate.functions import FunctionRef
from pystate.state import _UNSET, STATE_FUNCTIONS, State, Subscription, UpdateResult
from pystate.triggers import Trigger

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from pystate._options import BridgeOptions, KvOptions, RedisOptions

__all__ = ["AsyncState"]


class AsyncState:
    """An asyncio facade over :class:`pystate.State`.

    ``AsyncState(...)`` takes State's arguments (or ``state=`` an existing
    State to wrap). Registration methods (``register_function``,
    ``register_trigger``, ``on_change``) and ``stats`` are plain methods:
    they never wait. The rest are coroutines.
    """

    __slots__ = ("state", "_blocking_writes", "_remote")

    # For type checkers: State's signatures, or an existing State.
    @overload
    def __init__(self, *, state: State) -> None: ...
    @overload
    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, adapter: Literal["kv"] = "kv",
        **options: Unpack[KvOptions],
    ) -> None: ...
    @overload
    def __init__(self, path: None = None, *, adapter: Literal["redis"], **options: Unpack[RedisOptions]) -> None: ...
    @overload
    def __init__(self, path: None = None, *, adapter: Literal["bridge"], **options: Unpack[BridgeOptions]) -> None: ...

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, state: State | None = None, **options: Any
    ) -> None:
        if state is not None and (path is not None or options):
            raise TypeError("AsyncState: give either state= or State's arguments, not both")
        self.state: State = state if state is not None else State(path, **options)
        # A server is a round trip away: every call goes to a thread.
        self._remote = not self.state.storage.local
        self._blocking_writes = self._remote or self.state.sync == "always"

    # ---- the six functions ---------------------------------------------

    async def _room(self) -> None:
        # Wait for room in a full event queue here, as a coroutine; the
        # store itself never blocks a loop thread.
        ev = self.state._events
        while len(ev.pending) >= ev.bound and ev._thread is not None and not ev._stopping:
            await asyncio.sleep(0.001)

    async def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        await self._room()
        if self._blocking_writes:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def set(self, scope: str, key: str, value: Any) -> Any:
        """Store ``value``; return the previous value or None."""
        return await self._write(self.state.set, scope, key, value)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._remote:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def get(self, scope: str, key: str, default: Any = None) -> Any:
        """The value at (scope, key), or ``default``."""
        return await self._read(self.state.get, scope, key, default)

    async def delete(self, scope: str, key: str) -> Any:
        """Remove (scope, key); return the removed value or None."""
        return await self._write(self.state.delete, scope, key)

    async def update(self, scope: str, key: str, ops: list[dict[str, Any]]) -> UpdateResult:
        """Apply update ops atomically; see :meth:`State.update`."""
        return await self._write(self.state.update, scope, key, ops)

    async def list(self, scope: str) -> builtins.list[Any]:
        """All values of ``scope`` in key insertion order."""
        return await self._read(self.state.list, scope)

    async def keys(self, scope: str) -> builtins.list[str]:
        """The keys of ``scope``, in the order :meth:`list` gives the values."""
        return await self._read(self.state.keys, scope)

    async def list_groups(self) -> builtins.list[str]:
        """Sorted names of the scopes that hold keys."""
        return await self._read(self.state.list_groups)

    async def trigger(self, request: Any, payload: Any = _UNSET) -> Any:
        """Call a function by id, as :meth:`State.trigger`; a registered
        coroutine function of this loop is awaited here, a plain function
        runs on a worker thread."""
        st = self.state
        if payload is _UNSET and isinstance(request, dict):
            function_id, action = request.get("function_id"), request.get("action")
            body = request.get("payload")
        else:
            function_id, action, body = request, None, payload
        if (
            isinstance(function_id, str)
            and function_id not in STATE_FUNCTIONS
            and action is None
            and st._functions.get(function_id) is not None
        ):
            return await st._functions.call_async(function_id, body)
        if isinstance(function_id, str) and function_id in STATE_FUNCTIONS and function_id not in (
            "state::get",
            "state::list",
            "state::list_groups",
        ):
            await self._room()
        if self._blocking_writes:
            return await asyncio.to_thread(st.trigger, request, payload)
        return st.trigger(request, payload)

    # ---- triggers and functions ------------------------------------------

    def register_function(
        self, function_id: str, handler: Callable[..., Any], *, description: str | None = None, metadata: Any = None
    ) -> FunctionRef:
        """See :meth:`State.register_function`; a coroutine function
        registered here runs on this loop."""
        return self.state.register_function(function_id, handler, description=description, metadata=metadata)

    def register_trigger(self, trigger: Any) -> Trigger:
        """See :meth:`State.register_trigger`."""
        return self.state.register_trigger(trigger)

    def on_change(
        self,
        scope: str | None = None,
        key: str | None = None,
        condition: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Subscription]:
        """See :meth:`State.on_change`."""
        return self.state.on_change(scope, key, condition)

    async def flush_events(self, timeout: float | None = None) -> bool:
        """Wait (without blocking the loop) until every queued event has
        been handled; False if ``timeout`` seconds passed first."""
        return await asyncio.to_thread(self.state.flush_events, timeout)

    # ---- durability and lifetime -----------------------------------------

    async def flush(self) -> None:
        """Make every write so far durable; see :meth:`State.flush`."""
        await asyncio.to_thread(self.state.flush)

    async def compact(self, scope: str | None = None) -> None:
        """Rewrite logs to hold only live records; see :meth:`State.compact`."""
        await asyncio.to_thread(self.state.compact, scope)

    async def check(self) -> dict[str, Any]:
        """Verify every log and the index; see :meth:`State.check`."""
        return await asyncio.to_thread(self.state.check)

    def stats(self) -> dict[str, Any]:
        """See :meth:`State.stats`."""
        return self.state.stats()

    @property
    def closed(self) -> bool:
        return self.state.closed

    async def close(self, timeout: float | None = None) -> None:
        """Run queued events, stop dispatch and close the store."""
        await asyncio.to_thread(self.state.close, timeout)

    async def __aenter__(self) -> AsyncState:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<pystate.AsyncState over {self.state!r}>"
