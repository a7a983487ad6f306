"""Registered functions: the callables that ``State.trigger`` and state
triggers invoke, with iii-sdk's calling conventions.

A handler receives the payload (for a trigger, the event) as its first
argument. As in iii-sdk, it also receives the trigger's ``metadata`` when it
declares a parameter literally named ``metadata`` (second positional or
keyword-only); every other signature is called with the payload alone.

A coroutine function runs on the asyncio loop that was running in the thread
that registered it; registered where no loop runs, it runs on a loop of the
store's own (:class:`LoopThread`), started on first use.

>>> from pystate.functions import FunctionRegistry
>>> reg = FunctionRegistry()
>>> ref = reg.register("math::double", lambda data: data * 2)
>>> reg.call("math::double", 21)
42
>>> ref.unregister()
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from typing import Any, Callable

from pystate.errors import (
    FunctionNotFoundError,
    InvocationError,
    PayloadError,
    StateError,
)

__all__ = ["FunctionRef", "FunctionRegistry", "LoopThread", "RegisteredFunction"]


def _metadata_mode(handler: Callable[..., Any]) -> str:
    """How a handler takes metadata: "positional", "keyword" or "none"."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):  # some builtins cannot be introspected
        return "none"
    param = sig.parameters.get("metadata")
    if param is None:
        return "none"
    if param.kind is inspect.Parameter.KEYWORD_ONLY:
        return "keyword"
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= 2 and positional[1] is param:
        return "positional"
    return "none"


def _is_async(handler: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # an object with ``async def __call__``
    return call is not None and inspect.iscoroutinefunction(call)


class LoopThread:
    """An asyncio loop on a daemon thread, for coroutine handlers that were
    registered where no loop was running. Started on first use."""

    def __init__(self, name: str = "pystate-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stop(self, timeout: float | None = None) -> None:
        """Cancel what still runs on the loop, stop it and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()
            loop.stop()

        if thread is threading.current_thread():
            loop.create_task(shutdown())
            return
        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


class RegisteredFunction:
    """One registered function: its id, handler and how to call it."""

    __slots__ = ("id", "handler", "is_async", "loop", "metadata_mode", "plain", "description", "metadata", "active")

    def __init__(
        self,
        function_id: str,
        handler: Callable[..., Any],
        loop: asyncio.AbstractEventLoop | None,
        description: str | None,
        metadata: Any,
    ) -> None:
        self.id = function_id
        self.handler = handler
        self.is_async = _is_async(handler)
        self.loop = loop
        self.metadata_mode = _metadata_mode(handler)
        # Called as handler(data) on the calling thread: the dispatcher's fast path.
        self.plain = not self.is_async and self.metadata_mode == "none"
        self.description = description
        self.metadata = metadata
        self.active = True

    def invoke(self, data: Any, metadata: Any = None) -> Any:
        """Call the handler as iii-sdk would; for a coroutine function, the
        coroutine (not yet scheduled)."""
        mode = self.metadata_mode
        if mode == "positional":
            return self.handler(data, metadata)
        if mode == "keyword":
            return self.handler(data, metadata=metadata)
        return self.handler(data)

    def __repr__(self) -> str:
        kind = "async" if self.is_async else "sync"
        return f"<pystate function {self.id!r} ({kind})>"


class FunctionRef:
    """What ``register_function`` returns: the function's ``id`` and
    ``unregister()`` (idempotent)."""

    __slots__ = ("id", "_registry", "_fn")

    def __init__(self, registry: FunctionRegistry, fn: RegisteredFunction) -> None:
        self.id = fn.id
        self._registry = registry
        self._fn = fn

    def unregister(self) -> None:
        """Remove the function; triggers naming it then fail (and are
        counted in ``handler_errors``) until a function of that id is
        registered again."""
        self._registry.unregister(self._fn)

    def __repr__(self) -> str:
        return f"FunctionRef(id={self.id!r})"


class FunctionRegistry:
    """Function ids to handlers, and the calls that run them."""

    def __init__(self, reserved: Callable[[str], bool] = lambda fid: False) -> None:
        self._functions: dict[str, RegisteredFunction] = {}
        self.table = self._functions  # read-only view for the dispatcher's hot loop
        self._lock = threading.Lock()
        self._reserved = reserved
        self.loop_thread = LoopThread()

    def register(
        self,
        function_id: str,
        handler: Callable[..., Any],
        *,
        description: str | None = None,
        metadata: Any = None,
    ) -> FunctionRef:
        """Register ``handler`` under ``function_id``; see State.register_function."""
        if not isinstance(function_id, str):
            raise PayloadError(f"register_function: function_id must be a string, got {type(function_id).__name__}")
        if not function_id.strip():
            raise PayloadError("register_function: function_id must not be empty")
        if not callable(handler):
            raise PayloadError(
                f"register_function: handler for {function_id!r} must be callable, got {type(handler).__name__}"
            )
        if self._reserved(function_id):
            raise StateError(
                f"register_function: {function_id!r} is a built-in function of the store",
                code="function_exists",
            )
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        fn = RegisteredFunction(function_id, handler, loop, description, metadata)
        if not fn.is_async:
            fn.loop = None
        with self._lock:
            if function_id in self._functions:
                raise StateError(
                    f"register_function: function id {function_id!r} is already registered",
                    code="function_exists",
                )
            self._functions[function_id] = fn
        return FunctionRef(self, fn)

    def unregister(self, fn: RegisteredFunction) -> None:
        with self._lock:
            if self._functions.get(fn.id) is fn:
                del self._functions[fn.id]
            fn.active = False

    def get(self, function_id: str) -> RegisteredFunction | None:
        return self._functions.get(function_id)

    def require(self, function_id: str) -> RegisteredFunction:
        fn = self._functions.get(function_id)
        if fn is None:
            raise FunctionNotFoundError(f"Function {function_id} not found")
        return fn

    def ids(self) -> list[str]:
        return sorted(self._functions)

    def loop_for(self, fn: RegisteredFunction) -> asyncio.AbstractEventLoop:
        """The loop a coroutine handler runs on."""
        return fn.loop if fn.loop is not None else self.loop_thread.get()

    def call(self, function_id: str, data: Any, metadata: Any = None) -> Any:
        """Run a function and return its result (blocking for a coroutine
        function). Its exceptions come back as InvocationError."""
        fn = self.require(function_id)
        if not fn.is_async:
            try:
                return fn.invoke(data, metadata)
            except Exception as e:
                raise InvocationError(f"function {function_id} failed: {e!r}") from e
        loop = self.loop_for(fn)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise StateError(
                f"trigger: {function_id} is a coroutine function of the loop this call "
                "runs on; waiting for it here would deadlock. Await it through "
                "pystate.AsyncState.trigger instead.",
                code="would_block",
            )
        try:
            future = asyncio.run_coroutine_threadsafe(fn.invoke(data, metadata), loop)
        except RuntimeError as e:  # the loop is closed
            raise InvocationError(f"function {function_id} failed: its event loop is gone ({e})") from e
        try:
            return future.result()
        except Exception as e:
            raise InvocationError(f"function {function_id} failed: {e!r}") from e

    async def call_async(self, function_id: str, data: Any, metadata: Any = None) -> Any:
        """Await a function from a coroutine: a coroutine function of this
        loop runs here, one of another loop there, a plain function on a
        worker thread."""
        fn = self.require(function_id)
        try:
            if not fn.is_async:
                return await asyncio.to_thread(fn.invoke, data, metadata)
            loop = self.loop_for(fn)
            if loop is asyncio.get_running_loop():
                return await fn.invoke(data, metadata)
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn.invoke(data, metadata), loop))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise InvocationError(f"function {function_id} failed: {e!r}") from e
