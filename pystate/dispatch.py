"""Event dispatch: the queue between watched writes and trigger handlers.

A watched write appends one item to a deque (no lock, no event built: the
item holds the matched triggers and the old and new JSON texts) and wakes
the dispatcher thread only if it sleeps. The dispatcher thread takes items
in order and, for each matched trigger, builds the engine's event, asks the
condition function, then runs the handler: a plain function right there, a
coroutine function as a task on its loop (tasks start in queue order). One
thread and one queue keep every handler's events in write order.

The queue is bounded (``max_pending_events``). When it is full, a write
waits for room before it changes anything (``event_queue_full="block"``,
the default) or raises :class:`pystate.EventQueueFullError`
(``"raise"``). Two kinds of writer never wait, since waiting could never
end: handlers running on the dispatcher thread and code running on an
asyncio loop (whose coroutine handlers the queue may be waiting for); their
events are queued beyond the bound. Nothing is ever dropped silently: only
``close(timeout=...)`` that runs out of time discards what is left, and it
logs and counts it.

>>> import pystate
>>> st = pystate.State()
>>> seen = []
>>> sub = st.on_change(scope="s")(lambda event: seen.append(event["event_type"]))
>>> _ = st.set("s", "k", 1); _ = st.delete("s", "k")
>>> st.flush_events(timeout=5)
True
>>> seen
['state:created', 'state:deleted']
>>> st.close()
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any

from pystate._backend import codec as _codec
from pystate.errors import ClosedError, EventQueueFullError, StateError
from pystate.functions import FunctionRegistry, RegisteredFunction
from pystate.triggers import Trigger, TriggerIndex

__all__ = ["EventDispatcher", "QUEUE_POLICIES"]

log = logging.getLogger("pystate.triggers")

#: What a watched write does when the event queue is full.
QUEUE_POLICIES = ("block", "raise")

_loads = _codec.loads


class EventDispatcher:
    """The event queue and the thread that drains it."""

    def __init__(
        self,
        index: TriggerIndex,
        functions: FunctionRegistry,
        *,
        max_pending: int = 10_000,
        when_full: str = "block",
    ) -> None:
        self.pending: collections.deque[tuple[Any, ...]] = collections.deque()
        self.bound = max_pending
        self._index = index
        self._match = index.match
        self._functions = functions
        self._when_full = when_full
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._idle = True  # the dispatcher sleeps (or was never started)
        self._busy = False  # the dispatcher holds an item it has not finished
        self._stopping = False
        # close(): 0 open, 1 under way, 2 done (self._drained tells how).
        self._close_state = 0
        self._drained = True
        self._writers_waiting = 0
        self._inflight: dict[asyncio.AbstractEventLoop, int] = {}
        self._inflight_total = 0
        self.handler_errors = 0
        self.delivered = 0
        self.dropped = 0

    def after_fork_in_child(self) -> None:
        """In a child made by fork(): the parent's dispatcher thread did not
        come along, and the events it had queued are the parent's to deliver
        (delivered here too, they would run twice). The child starts its own
        thread for its own writes."""
        self.pending.clear()
        self._cond = threading.Condition(threading.Lock())
        self._thread = None
        self._idle = True
        self._busy = False
        self._writers_waiting = 0
        self._inflight.clear()
        self._inflight_total = 0

    # ---- the writer's side ------------------------------------------------

    def emit(self, event_type: str, scope: str, key: str, old: bytes | None, new: bytes | None) -> None:
        """Queue the event of a write (called by the store, in write order)."""
        idx = self._index
        # Scope-only triggers (the common case) need one lookup, not a match.
        matched = idx.by_scope.get(scope) if idx.scopes_only else self._match(scope, key)
        if matched:
            if self._close_state == 2:
                # Only a store that does not refuse writes once closing
                # begins gets here; queued, the event would wait forever.
                self._lost(1, f"an event of ({scope!r}, {key!r}) came after close()")
                return
            self.pending.append((matched, event_type, scope, key, old, new))
            if self._idle:
                self._wake()

    def submit_call(self, fn: RegisteredFunction, payload: Any) -> None:
        """Queue a void call of a registered function.

        Raises:
            ClosedError: close() has begun; nothing would run the call.
        """
        if self._close_state:
            raise ClosedError("the store is closed")
        self.pending.append((None, fn, payload, None, None, None))
        if self._idle:
            self._wake()

    def admit(self) -> None:
        """Called before a watched write when the queue is full."""
        if threading.current_thread() is self._thread:
            return  # a handler's write: waiting for ourselves would never end
        if self._when_full == "raise":
            raise EventQueueFullError(
                f"the event queue is full ({len(self.pending)} events waiting for "
                f"handlers, max_pending_events={self.bound}); nothing was written"
            )
        if asyncio._get_running_loop() is not None:
            return  # never block a loop: its coroutine handlers may be what we wait for
        with self._cond:
            self._writers_waiting += 1
            try:
                while len(self.pending) >= self.bound and not self._stopping:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1

    def _wake(self) -> None:
        try:
            with self._cond:
                if self._thread is None and not self._stopping:
                    self._thread = threading.Thread(target=self._run, name="pystate-events", daemon=True)
                    self._thread.start()
                self._cond.notify_all()
        except Exception:  # e.g. no new thread at interpreter shutdown
            log.exception("pystate: cannot start the event dispatcher; %d events wait", len(self.pending))

    # ---- the dispatcher thread --------------------------------------------

    def _run(self) -> None:
        pending, cond = self.pending, self._cond
        while True:
            with cond:
                # Say we sleep before looking at the queue: a writer that
                # appends after our look sees the flag and wakes us.
                self._idle = True
                while not pending:
                    self._busy = False
                    cond.notify_all()  # flushers, close()
                    if self._stopping:
                        self._thread = None  # flush() must not wait for us
                        return
                    cond.wait()
                self._idle = False
                self._busy = True
            self._drain()

    def _drain(self) -> None:
        # The hot loop: locals only, and the common case (a plain handler
        # without condition or metadata) inline.
        pending, cond, popleft = self.pending, self._cond, self.pending.popleft
        functions = self._functions.table
        loads = _loads
        while pending:
            matched, event_type, scope, key, old, new = popleft()
            if self._writers_waiting and len(pending) < self.bound:
                with cond:  # room now, not after this item's handlers
                    cond.notify_all()
            try:
                if matched is None:  # a void call: (None, fn, payload, ...)
                    self._run_call(event_type, scope)
                    continue
                for t in matched:
                    if not t.active:
                        continue
                    fn = functions.get(t.function_id)
                    if fn is None or not fn.plain or t.condition_id is not None:
                        self._deliver_one(t, fn, event_type, scope, key, old, new)
                        continue
                    # Each call gets its own event, decoded from the stored
                    # texts: no handler sees another's changes, or the writer's.
                    event = {
                        "type": "state",
                        "event_type": event_type,
                        "scope": scope,
                        "key": key,
                        "old_value": None if old is None else loads(old),
                        "new_value": None if new is None else loads(new),
                    }
                    try:
                        fn.handler(event)
                    except Exception as e:
                        self._failed(t, event, e, "handler")
                        continue
                    self.delivered += 1
            except Exception:  # a bug of ours; never let it stop dispatch
                log.exception("pystate: event dispatch failed for %r", (event_type, scope, key))

    def _deliver_one(
        self,
        t: Trigger,
        fn: RegisteredFunction | None,
        event_type: str,
        scope: str,
        key: str,
        old: bytes | None,
        new: bytes | None,
    ) -> None:
        """One trigger's delivery, in general: condition, metadata, coroutines."""
        if t.condition_id is not None:
            if not self._condition_holds(t, event_type, scope, key, old, new):
                return
            fn = self._functions.get(t.function_id)  # the condition may have taken time
        event = _event(event_type, scope, key, old, new)
        if fn is None:
            self._failed(t, event, StateError(f"Function {t.function_id} not found", code="function_not_found"), "handler")
            return
        if fn.is_async:
            self._start(fn, event, t.metadata, t)
        else:
            try:
                fn.invoke(event, t.metadata)
            except Exception as e:
                self._failed(t, event, e, "handler")
                return
        self.delivered += 1

    def _condition_holds(
        self, t: Trigger, event_type: str, scope: str, key: str, old: bytes | None, new: bytes | None
    ) -> bool:
        cond_fn = self._functions.get(t.condition_id)  # type: ignore[arg-type]
        event = _event(event_type, scope, key, old, new)
        if cond_fn is None:
            self._failed(t, event, StateError(f"Function {t.condition_id} not found", code="function_not_found"), "condition")
            return False
        try:
            if cond_fn.is_async:
                verdict = self._wait_coroutine(cond_fn, event)
            else:
                verdict = cond_fn.invoke(event, None)
        except Exception as e:
            self._failed(t, event, e, "condition")
            return False
        return verdict is not False  # as the engine: only an explicit false skips

    def _run_call(self, fn: RegisteredFunction, payload: Any) -> None:
        if fn.is_async:
            self._start(fn, payload, None, None)
            return
        try:
            fn.invoke(payload, None)
        except Exception as e:
            self._failed(None, payload, e, f"void call of {fn.id}")

    def _wait_coroutine(self, fn: RegisteredFunction, data: Any) -> Any:
        coro = fn.invoke(data, None)
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self._functions.loop_for(fn))
        except Exception:
            coro.close()
            raise
        return future.result()

    def _start(self, fn: RegisteredFunction, data: Any, metadata: Any, t: Trigger | None) -> None:
        loop = self._functions.loop_for(fn)
        try:
            coro = fn.invoke(data, metadata)
        except Exception as e:  # e.g. a signature that cannot take the event
            self._failed(t, data, e, "handler")
            return
        with self._cond:
            self._inflight[loop] = self._inflight.get(loop, 0) + 1
            self._inflight_total += 1
        try:
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except Exception as e:  # the loop is closed
            coro.close()
            self._task_done(loop)
            self._failed(t, data, e, "handler")
            return

        def done(f: Any) -> None:
            self._task_done(loop)
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                self._failed(t, data, exc, "handler")

        future.add_done_callback(done)

    def _task_done(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._cond:
            n = self._inflight[loop] - 1
            if n:
                self._inflight[loop] = n
            else:
                del self._inflight[loop]
            self._inflight_total -= 1
            if not self._inflight_total:
                self._cond.notify_all()

    def _lost(self, n: int, why: str) -> None:
        with self._cond:
            self.dropped += n
        log.warning("pystate: %s; %d event(s) dropped", why, n)

    def _failed(self, t: Trigger | None, data: Any, exc: BaseException, what: str) -> None:
        with self._cond:
            self.handler_errors += 1
        fid = t.function_id if t is not None else "-"
        log.error("pystate: %s of trigger %s failed for event %r", what, fid, data, exc_info=exc)

    # ---- waiting and stopping ---------------------------------------------

    def flush(self, timeout: float | None = None, *, closing: bool = False) -> bool:
        """Wait until every queued event has been handled (coroutine handlers
        included); False if ``timeout`` seconds passed first. ``closing``:
        called by close() on an event loop, which cannot wait for its own
        coroutine handlers, so only the others are waited for."""
        if threading.current_thread() is self._thread:
            raise StateError(
                "flush_events: called from a trigger handler, which would wait for itself",
                code="would_block",
            )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.pending or self._busy or self._inflight_total - (
                self._inflight.get(running, 0) if closing and running is not None else 0
            ):
                if running is not None and self._inflight.get(running) and not closing:
                    raise StateError(
                        "flush_events: coroutine handlers of this event loop are running and "
                        "cannot finish while it waits; use pystate.AsyncState.flush_events",
                        code="would_block",
                    )
                if self.pending and self._thread is None:
                    if self._stopping:
                        break
                    self._cond.release()
                    try:
                        self._wake()
                    finally:
                        self._cond.acquire()
                    continue
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            return not self.pending

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue (up to ``timeout`` seconds), then stop the
        dispatcher thread and the store's own event loop. What is still
        queued when the time is up is discarded, logged and counted in
        ``dropped``. True when everything was handled.

        The store refuses writes before it calls this, so the queue only
        shrinks. Once: a second call, from any thread, waits for the first
        to finish (at most ``timeout`` seconds) and returns its outcome;
        from a handler or an event loop, which the first may be waiting
        for, it returns at once.
        """
        me = threading.current_thread()
        with self._cond:
            state = self._close_state
            if state == 0:
                self._close_state = 1
        if state:
            if state == 1 and me is not self._thread and asyncio._get_running_loop() is None:
                deadline = None if timeout is None else time.monotonic() + timeout
                with self._cond:
                    while self._close_state != 2:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            break
                        self._cond.wait(left)
            return self._drained
        if me is self._thread:
            # A handler closes the store: finish the queue, then exit.
            with self._cond:
                self._stopping = True
                self._close_state = 2
                self._cond.notify_all()
            return True
        drained = True
        try:
            if self._thread is not None or self.pending:
                drained = self.flush(timeout, closing=True)
        finally:
            with self._cond:
                self._stopping = True
                if self.pending and (not drained or self._thread is None):
                    drained = False
                    self.dropped += len(self.pending)
                    log.warning(
                        "pystate: closing with %d events not yet handled; they are dropped", len(self.pending)
                    )
                    self.pending.clear()
                self._cond.notify_all()
                thread = self._thread
        try:
            if thread is not None:
                thread.join(None if drained else 1.0)
            self._functions.loop_thread.stop(None if drained else 1.0)
        finally:
            with self._cond:
                self._drained = drained
                self._close_state = 2
                self._cond.notify_all()
        return drained

    def stats(self) -> dict[str, int]:
        return {
            "pending": len(self.pending),
            "delivered": self.delivered,
            "running_coroutines": self._inflight_total,
            "dropped": self.dropped,
        }


def _event(event_type: str, scope: str, key: str, old: bytes | None, new: bytes | None) -> dict[str, Any]:
    return {
        "type": "state",
        "event_type": event_type,
        "scope": scope,
        "key": key,
        "old_value": None if old is None else _loads(old),
        "new_value": None if new is None else _loads(new),
    }
