"""Event dispatch: asynchrony, ordering, the bounded queue, failures,
flush_events and close, threads and asyncio loops."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import pystate
from conftest import drain

WAIT = 10  # seconds; a bound on every wait, never expected to be reached


def dispatch_threads():
    return [t for t in threading.enumerate() if t.name in ("pystate-events", "pystate-loop")]


def wait_until(predicate, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


# ---- asynchrony and failures -------------------------------------------------


def test_the_write_returns_before_the_handler_runs(st):
    gate = threading.Event()
    ran = threading.Event()

    def handler(event):
        gate.wait(WAIT)
        ran.set()

    st.register_function("h", handler)
    st.register_trigger({"type": "state", "function_id": "h"})
    st.set("s", "k", 1)  # would hang here if dispatch were synchronous
    assert not ran.is_set()
    gate.set()
    drain(st)
    assert ran.is_set()


def test_plain_handlers_run_on_the_dispatcher_thread(st):
    names = []
    st.register_function("h", lambda e: names.append(threading.current_thread().name))
    st.register_trigger({"type": "state", "function_id": "h"})
    st.set("s", "k", 1)
    drain(st)
    assert names == ["pystate-events"]


def test_a_failing_handler_never_undoes_the_write_or_reaches_the_writer(st, caplog):
    def boom(event):
        raise RuntimeError("handler exploded")

    st.register_function("boom", boom)
    st.register_trigger({"type": "state", "function_id": "boom"})
    assert st.set("s", "k", {"v": 1}) is None
    st.update("s", "k", [{"type": "set", "path": "v", "value": 2}])
    drain(st)
    assert st.get("s", "k") == {"v": 2}
    assert st.stats()["handler_errors"] == 2
    assert "handler exploded" in caplog.text
    assert "'scope': 's'" in caplog.text  # the log names the event


def test_other_handlers_still_run_after_one_fails(st, watch):
    watch(handler=lambda e: 1 / 0)
    seen = watch()
    st.set("s", "k", 1)
    drain(st)
    assert len(seen) == 1


def test_flush_events_returns_false_when_the_timeout_comes_first(st):
    gate = threading.Event()
    st.register_function("slow", lambda e: gate.wait(WAIT))
    st.register_trigger({"type": "state", "function_id": "slow"})
    st.set("s", "k", 1)
    assert st.flush_events(timeout=0.05) is False
    gate.set()
    assert st.flush_events(timeout=WAIT) is True


def test_flush_events_from_a_handler_refuses_to_wait_for_itself(st):
    errors = []

    def handler(event):
        try:
            st.flush_events()
        except pystate.StateError as e:
            errors.append(e.code)

    st.register_function("h", handler)
    st.register_trigger({"type": "state", "function_id": "h"})
    st.set("s", "k", 1)
    drain(st)
    assert errors == ["would_block"]


# ---- ordering ------------------------------------------------------------------


def test_events_of_one_key_arrive_in_write_order_under_concurrent_writers(st):
    seen = []
    st.register_function("h", lambda e: seen.append(e["new_value"]))
    st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s"}})
    n_threads, per_thread = 4, 2000

    def writer(t):
        for i in range(per_thread):
            st.update("s", "counter", [{"type": "increment", "path": "n", "by": 1}])
            st.set("s", f"own{t}", i)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drain(st)
    counters = [v["n"] for v in seen if isinstance(v, dict)]
    # Each counter event carries the value that write produced: write
    # order means they arrive as 1, 2, 3, ... with none missing.
    assert counters == list(range(1, n_threads * per_thread + 1))
    for t in range(n_threads):
        own = [e for e in seen if not isinstance(e, dict)]
        assert len(own) == n_threads * per_thread
    assert st.get("s", "counter") == {"n": n_threads * per_thread}


def test_events_of_one_key_arrive_in_write_order_on_a_file_store(tmp_path):
    st = pystate.State(tmp_path / "db", sync="never")
    try:
        seen = []
        st.register_function("h", lambda e: seen.append(e["new_value"]["n"]))
        st.register_trigger({"type": "state", "function_id": "h"})

        def writer():
            for _ in range(500):
                st.update("s", "c", [{"type": "increment", "path": "n", "by": 1}])

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        drain(st)
        assert seen == list(range(1, 2001))
    finally:
        st.close()


# ---- the bounded queue ----------------------------------------------------------


def blocked_store(bound, policy="block"):
    """A store whose one handler blocks until the returned gate is set."""
    st = pystate.State(max_pending_events=bound, event_queue_full=policy)
    gate = threading.Event()
    seen = []

    def handler(event):
        gate.wait(WAIT)
        seen.append(event["new_value"])

    st.register_function("slow", handler)
    st.register_trigger({"type": "state", "function_id": "slow", "config": {"scope": "s"}})
    return st, gate, seen


def test_a_slow_handler_does_not_hold_writers_back_below_the_bound():
    st, gate, seen = blocked_store(bound=100)
    try:
        for i in range(100):  # one is taken by the handler, 99 wait in the queue
            st.set("s", "k", i)
        assert st.stats()["events"]["pending"] >= 99
        gate.set()
        drain(st)
        assert seen == list(range(100))
    finally:
        st.close()


def test_a_full_queue_blocks_the_writer_until_there_is_room():
    st, gate, seen = blocked_store(bound=10)
    try:
        for i in range(11):  # the handler holds the first; ten fill the queue
            st.set("s", "k", i)
        assert wait_until(lambda: st.stats()["events"]["pending"] == 10), st.stats()["events"]
        done = threading.Event()

        def writer():
            st.set("s", "k", 11)
            done.set()

        t = threading.Thread(target=writer)
        t.start()
        assert not done.wait(0.3)  # held back: the queue is full
        assert st.get("s", "k") == 10  # and held back before writing
        gate.set()
        assert done.wait(WAIT)
        t.join()
        drain(st)
        assert seen == list(range(12))  # nothing dropped, in order
    finally:
        gate.set()
        st.close()


def test_a_full_queue_with_raise_policy_refuses_the_write_and_changes_nothing():
    st, gate, seen = blocked_store(bound=5, policy="raise")
    try:
        st.set("s", "k", 0)
        assert wait_until(lambda: st.stats()["events"]["pending"] == 0)  # the handler holds it
        for i in range(1, 6):
            st.set("s", "k", i)
        with pytest.raises(pystate.EventQueueFullError) as e:
            st.set("s", "k", 99)
        assert e.value.code == "event_queue_full"
        assert "max_pending_events=5" in e.value.message
        assert st.get("s", "k") == 5
        st.set("other", "k", 1)  # unwatched writes are never held back
        gate.set()
        drain(st)
        assert seen == list(range(6))
        st.set("s", "k", 100)  # room again
        drain(st)
        assert seen[-1] == 100
    finally:
        gate.set()
        st.close()


def test_handlers_that_write_never_deadlock_on_a_full_queue():
    st = pystate.State(max_pending_events=4)
    try:
        # Each event on "chain" writes the next one from inside the handler.
        def forward(event):
            n = event["new_value"]
            if n < 200:
                st.set("chain", "k", n + 1)

        st.register_function("forward", forward)
        st.register_trigger({"type": "state", "function_id": "forward", "config": {"scope": "chain"}})
        for _ in range(20):
            st.set("chain", "other", 10**6)  # fill the queue from outside too
        st.set("chain", "k", 0)
        drain(st)
        assert st.get("chain", "k") == 200
    finally:
        st.close()


@pytest.mark.parametrize("kwargs", [{"max_pending_events": 0}, {"max_pending_events": "10"}, {"event_queue_full": "drop"}, {"triggers_enabled": "yes"}])
def test_bad_dispatch_options_are_refused(kwargs):
    with pytest.raises(pystate.ConfigError):
        pystate.State(**kwargs)


# ---- close and threads ------------------------------------------------------------


def test_close_runs_queued_events_and_leaves_no_thread():
    before = set(dispatch_threads())
    st = pystate.State()
    seen = []

    async def coro_handler(event):
        await asyncio.sleep(0.001)
        seen.append(("async", event["new_value"]))

    st.register_function("sync", lambda e: seen.append(("sync", e["new_value"])))
    st.register_function("async", coro_handler)  # no loop here: runs on the store's loop
    for fid in ("sync", "async"):
        st.register_trigger({"type": "state", "function_id": fid})
    for i in range(50):
        st.set("s", "k", i)
    st.close()
    assert sorted(seen) == sorted([("sync", i) for i in range(50)] + [("async", i) for i in range(50)])
    assert set(dispatch_threads()) <= before


def test_close_with_a_timeout_drops_what_is_left_and_counts_it(caplog):
    st = pystate.State()
    gate = threading.Event()
    st.register_function("slow", lambda e: gate.wait(WAIT))
    st.register_trigger({"type": "state", "function_id": "slow"})
    for i in range(5):
        st.set("s", "k", i)
    events = st._events
    st.close(timeout=0.1)
    gate.set()
    assert events.dropped == 4
    assert "dropped" in caplog.text
    assert wait_until(lambda: not dispatch_threads())


def test_a_store_dropped_without_close_stops_its_threads():
    import gc

    seen = []
    st = pystate.State()
    st.register_function("h", seen.append)
    st.register_trigger({"type": "state", "function_id": "h"})
    st.set("s", "k", 1)
    del st
    gc.collect()
    assert wait_until(lambda: not dispatch_threads())
    assert len(seen) == 1  # the queued event still ran


def test_writes_after_close_raise_and_emit_nothing(watch, st):
    seen = watch()
    st.close()
    with pytest.raises(pystate.ClosedError):
        st.set("s", "k", 1)
    assert seen == []


# close() under load: writers, several closers, a dropped store. Every loop
# is bounded in count and time; a watchdog thread bounds each close().

STORES = ["memory", "file", "redis"]


@pytest.fixture
def open_store(request, tmp_path):
    """open_store(kind, sub): a fresh store of that kind (memory, file or redis)."""

    def open_store(kind, sub=""):
        if kind == "memory":
            return pystate.State()
        if kind == "file":
            return pystate.State(tmp_path / sub / "db", sync="never")
        server = request.getfixturevalue("redis_server")
        server.flush()
        return pystate.State(adapter="redis", redis_url=server.url)

    return open_store


def watched_store(st, handler_delay=0.0):
    """st with one trigger that counts events per key: (st, counts)."""
    counts = {}
    lock = threading.Lock()

    def count(event):
        if handler_delay:
            time.sleep(handler_delay)
        with lock:
            counts[event["key"]] = counts.get(event["key"], 0) + 1

    st.register_function("count", count)
    st.register_trigger({"type": "state", "function_id": "count"})
    return st, counts


def start_writers(st, n, limit=1_000_000, seconds=60.0):
    """n threads writing key w<i> until a write raises ClosedError (or the
    count or time bound is hit); acked[i] counts the writes that returned."""
    acked = [0] * n
    errors = []
    stop = threading.Event()

    def write(i):
        deadline = time.monotonic() + seconds
        while acked[i] < limit and not stop.is_set() and time.monotonic() < deadline:
            try:
                st.set("s", f"w{i}", acked[i])
            except pystate.ClosedError:
                return
            except Exception as e:  # noqa: BLE001 - reported by the test
                errors.append(e)
                return
            acked[i] += 1

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return threads, acked, errors, stop


def call_with_watchdog(fn, timeout=WAIT):
    """Run fn in a thread; True if it returned within timeout."""
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


@pytest.mark.parametrize("kind", STORES)
def test_close_returns_while_writers_keep_writing(kind, open_store):
    st, counts = watched_store(open_store(kind), handler_delay=0.0005)
    threads, acked, errors, stop = start_writers(st, 3)
    assert wait_until(lambda: sum(acked) > 200)
    try:
        assert call_with_watchdog(st.close), "close() did not return while writers wrote"
    finally:
        stop.set()
        for t in threads:
            t.join(WAIT)
    assert not errors
    assert st.closed
    # Writes were refused from close() on, and each acknowledged one ran
    # its handler: nothing queued was left behind or dropped.
    assert {f"w{i}": acked[i] for i in range(3) if acked[i]} == counts
    assert st._events.dropped == 0


@pytest.mark.parametrize("kind", STORES)
def test_two_threads_closing_at_once_both_return(kind, open_store):
    for round_ in range(8):
        st, counts = watched_store(open_store(kind, str(round_)))
        threads, acked, errors, stop = start_writers(st, 2, limit=20_000, seconds=WAIT)
        assert wait_until(lambda: sum(acked) > 50)
        closers = [threading.Thread(target=st.close, daemon=True) for _ in range(2)]
        for c in closers:
            c.start()
        for c in closers:
            c.join(WAIT)
        stop.set()
        for t in threads:
            t.join(WAIT)
        assert not any(c.is_alive() for c in closers), f"a close() hung in round {round_}"
        assert not errors
        assert {f"w{i}": acked[i] for i in range(2) if acked[i]} == counts
        assert st._events.stats()["pending"] == 0


@pytest.mark.parametrize("kind", STORES)
def test_dropping_a_store_closed_under_writes_never_blocks(kind, open_store):
    import gc

    st, counts = watched_store(open_store(kind))
    threads, acked, errors, stop = start_writers(st, 2, limit=20_000, seconds=WAIT)
    assert wait_until(lambda: sum(acked) > 50)
    st.close()
    stop.set()
    for t in threads:
        t.join(WAIT)
    events = st._events
    assert events.stats()["pending"] == 0

    def drop():
        nonlocal st
        del st
        gc.collect()

    assert call_with_watchdog(drop), "dropping the closed store blocked"
    assert {f"w{i}": acked[i] for i in range(2) if acked[i]} == counts


def test_a_void_call_after_close_is_refused():
    st = pystate.State()
    seen = []
    st.register_function("f", seen.append)
    st.close()
    with pytest.raises(pystate.ClosedError):
        st.trigger({"function_id": "f", "payload": 1, "action": {"type": "void"}})
    assert seen == []


def test_an_event_that_comes_after_close_is_counted_not_kept(caplog):
    # A store whose writes are not refused once closing begins (the remote
    # adapters' own write paths) must not leave an event queued forever.
    st = pystate.State()
    st.register_function("h", lambda e: None)
    st.register_trigger({"type": "state", "function_id": "h"})
    events = st._events
    st.close()
    events.emit("state:created", "s", "k", None, b"1")
    assert events.stats()["pending"] == 0
    assert events.dropped == 1
    assert "after close()" in caplog.text


def test_a_handler_may_close_the_store():
    st = pystate.State()
    st.register_function("closer", lambda e: st.close())
    st.register_trigger({"type": "state", "function_id": "closer"})
    st.set("s", "k", 1)
    assert wait_until(lambda: st.closed)
    assert wait_until(lambda: not dispatch_threads())


def test_events_of_a_file_store_are_delivered(tmp_path):
    with pystate.State(tmp_path / "db") as st:
        seen = []
        st.register_function("h", seen.append)
        st.register_trigger({"type": "state", "function_id": "h"})
        st.set("s", "k", 1)
        st.delete("s", "k")
        drain(st)
        assert [e["event_type"] for e in seen] == ["state:created", "state:deleted"]


# ---- asyncio ---------------------------------------------------------------------


def test_coroutine_handlers_run_on_the_loop_they_were_registered_on():
    async def main():
        loop = asyncio.get_running_loop()
        st = pystate.State()
        ran_on = []

        async def handler(event):
            ran_on.append((asyncio.get_running_loop() is loop, event["new_value"]))

        st.register_function("h", handler)
        st.register_trigger({"type": "state", "function_id": "h"})
        for i in range(20):
            st.set("s", "k", i)
        assert await asyncio.to_thread(st.flush_events, WAIT)
        await asyncio.to_thread(st.close)
        return ran_on

    ran_on = asyncio.run(main())
    assert ran_on == [(True, i) for i in range(20)]  # started in write order


def test_plain_handlers_never_block_the_loop():
    async def main():
        st = pystate.AsyncState()
        gate = threading.Event()
        st.register_function("slow", lambda e: gate.wait(WAIT))
        st.register_trigger({"type": "state", "function_id": "slow"})
        await st.set("s", "k", 1)
        # The handler blocks its thread; the loop still runs.
        ticks = 0
        for _ in range(5):
            await asyncio.sleep(0.001)
            ticks += 1
        gate.set()
        await st.close()
        return ticks

    assert asyncio.run(main()) == 5


def test_async_state_mirrors_state():
    async def main():
        async with pystate.AsyncState() as st:
            assert await st.set("s", "k", {"n": 1}) is None
            assert await st.get("s", "k") == {"n": 1}
            r = await st.update("s", "k", [{"type": "increment", "path": "n", "by": 2}])
            assert r.new_value == {"n": 3}
            assert await st.list("s") == [{"n": 3}]
            assert await st.list_groups() == ["s"]
            assert await st.trigger("state::get", {"scope": "s", "key": "k"}) == {"n": 3}
            assert await st.delete("s", "k") == {"n": 3}
            seen = []

            async def h(event):
                seen.append(event["event_type"])

            st.register_function("h", h)
            assert await st.trigger("h", {"event_type": "direct"}) is None
            st.register_trigger({"type": "state", "function_id": "h"})
            await st.set("s", "k", 1)
            assert await st.flush_events(WAIT)
            return seen, st

    seen, st = asyncio.run(main())
    assert seen == ["direct", "state:created"]
    assert st.closed


def test_async_state_writes_wait_for_room_without_blocking_the_loop():
    async def main():
        st = pystate.AsyncState(max_pending_events=3)
        gate = threading.Event()
        st.register_function("slow", lambda e: gate.wait(WAIT))
        st.register_trigger({"type": "state", "function_id": "slow"})
        for i in range(4):
            await st.set("s", "k", i)
        writer = asyncio.create_task(st.set("s", "k", 99))
        await asyncio.sleep(0.1)
        assert not writer.done()  # waiting for room, while the loop runs this
        gate.set()
        await asyncio.wait_for(writer, WAIT)
        assert await st.get("s", "k") == 99
        await st.close()

    asyncio.run(main())


def test_async_state_file_store_with_sync_always(tmp_path):
    async def main():
        async with pystate.AsyncState(tmp_path / "db", sync="always") as st:
            await st.set("s", "k", 1)
            await st.flush()
            assert (await st.check())["ok"]
            await st.compact()
            return await st.get("s", "k")

    assert asyncio.run(main()) == 1


# ---- events tell the whole story ---------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

_ops = hs.lists(
    hs.tuples(
        hs.sampled_from(["set", "update", "delete"]),
        hs.sampled_from(["a", "b", "c"]),
        hs.one_of(hs.none(), hs.integers(-5, 5), hs.lists(hs.integers(0, 3), max_size=3)),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(per_thread=hs.lists(_ops, min_size=1, max_size=3))
def test_replaying_the_events_of_concurrent_writers_rebuilds_the_store(per_thread):
    """Whatever threads write, each key's events chain (each old_value is the
    previous new_value) and replaying them gives exactly the store."""
    st = pystate.State()
    try:
        events = []
        st.register_function("h", events.append)
        st.register_trigger({"type": "state", "function_id": "h", "config": {"scope": "s"}})

        def writer(ops):
            for kind, key, value in ops:
                if kind == "set":
                    st.set("s", key, value)
                elif kind == "update":
                    st.update("s", key, [{"type": "set", "path": "v", "value": value}])
                else:
                    st.delete("s", key)

        threads = [threading.Thread(target=writer, args=(ops,)) for ops in per_thread]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        drain(st)
        assert len(events) == sum(len(ops) for ops in per_thread)
        current: dict = {}
        for e in events:
            k = e["key"]
            assert e["old_value"] == current.get(k)
            exists = k in current
            if e["event_type"] == "state:deleted":
                current.pop(k, None)
                assert e["new_value"] is None
            else:
                assert e["event_type"] == ("state:updated" if exists else "state:created")
                current[k] = e["new_value"]
        assert current == {k: st.get("s", k) for k in ("a", "b", "c") if st.get("s", k, KeyError) is not KeyError}
    finally:
        st.close()


def test_close_with_a_timeout_cancels_coroutine_handlers_that_never_finish():
    st = pystate.State()
    started = threading.Event()
    cancelled = threading.Event()

    async def forever(event):
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    st.register_function("forever", forever)  # runs on the store's own loop
    st.register_trigger({"type": "state", "function_id": "forever"})
    st.set("s", "k", 1)
    assert started.wait(WAIT)
    st.close(timeout=0.2)
    assert cancelled.wait(WAIT)
    assert wait_until(lambda: not dispatch_threads())


def test_close_on_a_loop_does_not_wait_for_that_loops_own_handlers():
    async def main():
        st = pystate.State()
        done = []

        async def handler(event):
            await asyncio.sleep(0.01)
            done.append(event["key"])

        st.register_function("h", handler)  # a handler of this loop
        st.register_trigger({"type": "state", "function_id": "h"})
        st.set("s", "k", 1)
        st.close()  # from the loop itself: must not deadlock waiting for it
        assert st.closed
        await asyncio.sleep(0.1)  # the loop runs the handler afterwards
        return done

    assert asyncio.run(main()) == ["k"]
