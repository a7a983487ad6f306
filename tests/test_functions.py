"""Registered functions: register_function, and trigger routing to them."""

from __future__ import annotations

import asyncio
import threading

import pytest

import pystate

# Part of the shared adapter contract (see tests/conftest.py).
CONTRACT = True


def test_trigger_calls_a_registered_function_and_returns_its_result(st):
    st.register_function("math::add", lambda data: data["a"] + data["b"])
    assert st.trigger("math::add", {"a": 2, "b": 3}) == 5
    assert st.trigger({"function_id": "math::add", "payload": {"a": 1, "b": 1}}) == 2


def test_trigger_of_an_unknown_function_raises_function_not_found(st):
    with pytest.raises(pystate.FunctionNotFoundError) as e:
        st.trigger("nobody::home", {})
    assert e.value.code == "function_not_found"
    assert "nobody::home" in e.value.message


def test_a_raising_handler_surfaces_as_invocation_failed(st):
    def boom(data):
        raise RuntimeError("kaput")

    st.register_function("boom", boom)
    with pytest.raises(pystate.InvocationError) as e:
        st.trigger("boom", {})
    assert e.value.code == "invocation_failed"
    assert isinstance(e.value.__cause__, RuntimeError)
    assert "kaput" in e.value.message


def test_a_coroutine_function_registered_without_a_loop_runs_on_the_stores_loop(st):
    threads = []

    async def handler(data):
        await asyncio.sleep(0)
        threads.append(threading.current_thread().name)
        return data * 2

    st.register_function("double", handler)
    assert st.trigger("double", 21) == 42
    assert threads == ["pystate-loop"]


def test_a_raising_coroutine_function_surfaces_as_invocation_failed(st):
    async def boom(data):
        raise ValueError("no")

    st.register_function("boom", boom)
    with pytest.raises(pystate.InvocationError) as e:
        st.trigger("boom", None)
    assert isinstance(e.value.__cause__, ValueError)


def test_void_call_returns_none_and_runs_the_function_later(st):
    seen = []
    st.register_function("note", seen.append)
    assert st.trigger({"function_id": "note", "payload": {"n": 1}, "action": {"type": "void"}}) is None
    assert st.flush_events(timeout=10)
    assert seen == [{"n": 1}]


def test_void_call_errors_are_counted_not_raised(st):
    def boom(data):
        raise RuntimeError("x")

    st.register_function("boom", boom)
    assert st.trigger({"function_id": "boom", "payload": 1, "action": {"type": "void"}}) is None
    assert st.flush_events(timeout=10)
    assert st.stats()["handler_errors"] == 1


def test_registering_a_taken_id_fails_and_keeps_the_first(st):
    st.register_function("f", lambda d: "first")
    with pytest.raises(pystate.StateError) as e:
        st.register_function("f", lambda d: "second")
    assert e.value.code == "function_exists"
    assert st.trigger("f", None) == "first"


def test_builtin_ids_cannot_be_registered(st):
    with pytest.raises(pystate.StateError) as e:
        st.register_function("state::set", lambda d: None)
    assert e.value.code == "function_exists"


@pytest.mark.parametrize("bad_id", [None, 3, "", "   "])
def test_bad_function_ids_are_refused(st, bad_id):
    with pytest.raises(pystate.PayloadError):
        st.register_function(bad_id, lambda d: None)


def test_a_handler_that_is_not_callable_is_refused(st):
    with pytest.raises(pystate.PayloadError) as e:
        st.register_function("f", "not a function")
    assert "callable" in e.value.message


def test_unregister_removes_the_function(st):
    ref = st.register_function("f", lambda d: 1)
    assert ref.id == "f"
    ref.unregister()
    ref.unregister()  # twice is fine
    with pytest.raises(pystate.FunctionNotFoundError):
        st.trigger("f", None)
    st.register_function("f", lambda d: 2)  # the id is free again
    assert st.trigger("f", None) == 2


def test_metadata_reaches_only_handlers_that_declare_it(st):
    from pystate.functions import RegisteredFunction

    def positional(data, metadata=None):
        return ("pos", data, metadata)

    def keyword(data, *, metadata=None):
        return ("kw", data, metadata)

    def plain(data, extra=None):
        return ("plain", data, extra)

    assert RegisteredFunction("a", positional, None, None, None).invoke(1, {"m": 1}) == ("pos", 1, {"m": 1})
    assert RegisteredFunction("b", keyword, None, None, None).invoke(1, {"m": 1}) == ("kw", 1, {"m": 1})
    assert RegisteredFunction("c", plain, None, None, None).invoke(1, {"m": 1}) == ("plain", 1, None)


def test_trigger_from_the_loop_of_a_coroutine_function_refuses_to_deadlock():
    async def main():
        st = pystate.State()
        try:

            async def handler(data):
                return data

            st.register_function("h", handler)  # belongs to this loop
            with pytest.raises(pystate.StateError) as e:
                st.trigger("h", 1)
            assert e.value.code == "would_block"
        finally:
            st.close()

    asyncio.run(main())
