"""The two bindings of the C core, Cython and cffi: choosing one, and
parity. The whole suite runs once per backend (PYSTATE_BACKEND, see
README); the tests here put both side by side in one process and require
the same answers, the same errors (type and message) and the same files.

Both bindings use one codec and one op engine, ``pystate/_codec.py`` and
``pystate/_ops.py``: compiled by Cython on CPython, imported as plain
Python on PyPy. The tests here hold the two builds of that source to the
same answers, the plain-Python one imported here as PyPy imports it
(tests/plain.py).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import functools
import importlib.machinery
import os
import subprocess
import sys
import uuid

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

import plain
import pystate
from pystate import _codec as cy_codec
from pystate import _core as cy_core
from pystate import _ops as cy_ops
from pystate._cffi import core as cf_core
from pystate import writes
from pystate.writes import UpdateResult, Writes
from test_model import bad_ops, json_values, keys_, names, not_json, op_lists, short_ops, wire_ops

BACKENDS = {"cython": cy_core, "cffi": cf_core}
#: The plain-Python import of the codec and op engine, with orjson as
#: CPython has it, and the codec again without orjson, as PyPy has it.
py_codec, py_ops = plain.modules()
pypy_codec, pypy_ops = plain.modules(orjson=False)
#: The cffi binding as PyPy runs it: pystate/_cffi/core.py, not compiled.
py_cffi_core = plain.cffi_core()


def outcome(fn, *args):
    """What a call gives: ("ok", result) or ("raised", type name, message)."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001 - the comparison is the point
        return ("raised", type(e).__name__, str(e))


def import_in_subprocess(env_value):
    env = {k: v for k, v in os.environ.items() if k != "PYSTATE_BACKEND"}
    if env_value is not None:
        env["PYSTATE_BACKEND"] = env_value
    code = "import pystate; print(pystate.backend, type(pystate.State().set).__qualname__)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)


# ---- choosing ---------------------------------------------------------------

def test_backend_names_the_binding_the_environment_chose():
    want = os.environ.get("PYSTATE_BACKEND", "").strip().lower() or "cython"
    assert pystate.backend == want
    core = BACKENDS[want]
    assert isinstance(pystate.State().storage, core.Store)
    assert pystate.UpdateResult is writes.UpdateResult


@pytest.mark.parametrize("value, want", [(None, "cython"), ("cython", "cython"), ("cffi", "cffi"),
                                         (" CFFI ", "cffi")])
def test_pystate_backend_variable_selects_the_binding(value, want):
    r = import_in_subprocess(value)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == want


def test_unknown_backend_is_refused_with_a_clear_error():
    r = import_in_subprocess("rust")
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "ConfigError" in last and "PYSTATE_BACKEND" in last and "'rust'" in last
    assert "cython, cffi" in last


# ---- the codec and the op engine: one source, two builds ------------------------

def test_the_codec_and_op_engine_are_compiled_and_used_by_both_bindings():
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for module in (cy_codec, cy_ops):
        assert module.__file__.endswith(suffixes), module.__file__
    assert cf_core.decode is cy_codec.decode
    assert writes.__file__.endswith(suffixes), writes.__file__  # it cimports them
    assert pystate._backend.codec is cy_codec and pystate._backend.ops is cy_ops


def test_the_cffi_binding_is_compiled_on_cpython_from_its_one_source():
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert cf_core.__file__.endswith(suffixes), cf_core.__file__
    assert py_cffi_core.__file__.endswith("core.py"), py_cffi_core.__file__
    assert py_cffi_core.Store is not cf_core.Store


def test_the_plain_python_import_runs_the_plain_python_branches():
    for module in (py_codec, py_ops, pypy_codec, pypy_ops):
        assert module.__file__.endswith(".py"), module.__file__
        assert module.cython.compiled is False
    assert py_ops.to_json is py_codec.to_json and pypy_ops.to_json is pypy_codec.to_json
    assert py_codec._dumps is cy_codec.orjson.dumps
    assert pypy_codec.orjson is None and pypy_codec._dumps is pypy_codec.json_dumps


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Text(str):
    pass


odd_values = hs.sampled_from([
    (1, 2), {"t": (1, [2])}, Text("sub"), {Text("k"): 1}, {1: "int key"}, {None: 1},
    datetime.datetime(2024, 5, 6, 7, 8, 9, 10), datetime.date(2024, 1, 2),
    uuid.UUID(int=7), Colour.RED, Point(1, 2.5), Point(1, float("nan")), {1, 2}, object(),
    b"bytes", 2**64, -(2**63) - 1, float("inf"), [float("nan")], True, False, None, "",
])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=hs.one_of(json_values, not_json, odd_values))
def test_codecs_encode_alike(value):
    assert outcome(py_codec.dumps, value) == outcome(cy_codec.dumps, value)
    assert outcome(py_codec.json_copy, value) == outcome(cy_codec.json_copy, value)
    assert outcome(pypy_codec.json_copy, value) == outcome(cy_codec.json_copy, value)
    # Without orjson the text may spell a float differently (1e+16): the
    # same value, or the same refusal.
    got, want = outcome(pypy_codec.dumps, value), outcome(cy_codec.dumps, value)
    if want[0] == "ok":
        assert got[0] == "ok" and orjson.loads(got[1]) == orjson.loads(want[1])
    else:
        assert got == want


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=hs.one_of(json_values, not_json, odd_values, hs.text().map(lambda t: t + "\ud800")))
def test_json_module_codec_matches_orjson(value):
    # The codec PyPy runs (orjson has no PyPy build), checked here against
    # orjson itself: same values decoded, same refusals with the same words.
    try:
        want = orjson.loads(orjson.dumps(value))
    except TypeError as e:
        with pytest.raises(TypeError) as got:
            pypy_codec.json_dumps(value)
        assert str(got.value) == str(e)
    else:
        data = pypy_codec.json_dumps(value)
        assert pypy_codec.json_loads(data) == want == orjson.loads(data)


@pytest.mark.parametrize("text", [b"NaN", b"[Infinity]", b"-Infinity", b"{", b"\xff"])
def test_json_module_codec_refuses_what_orjson_refuses(text):
    with pytest.raises(ValueError):
        orjson.loads(text)
    with pytest.raises(ValueError):
        pypy_codec.json_loads(text)
    with pytest.raises(ValueError):
        pypy_codec.loads(text)


@pytest.mark.parametrize("text", [
    "18446744073709551616", "-9223372036854775809", '{"a": [1, 1180591620717411303424]}',
    b"[" + b"9" * 300 + b"]", bytearray(b'["\xc3\xa9", 18446744073709551616]'),
    memoryview(b'{"k": -99999999999999999999}'),
])
def test_loads_text_refuses_integers_beyond_64_bits(text):
    got = [outcome(codec.loads_text, text) for codec in (py_codec, cy_codec)]
    assert got[0] == got[1] == outcome(pypy_codec.loads_text, text)
    assert got[0][:2] == ("raised", "InvalidValueError")
    assert "64-bit range" in got[0][2]


@pytest.mark.parametrize("text, want", [
    ("18446744073709551615", 2**64 - 1), ("-9223372036854775808", -(2**63)),
    ('{"18446744073709551616": "99999999999999999999"}',
     {"18446744073709551616": "99999999999999999999"}),
    (r'["\\", "\"", "1234567890123456789012", 1.5e300]',
     ["\\", '"', "1234567890123456789012", 1.5e300]),
    (b"[18446744073709551616.0, 1e30]", [1.8446744073709552e19, 1e30]),
])
def test_loads_text_keeps_what_fits(text, want):
    assert py_codec.loads_text(text) == cy_codec.loads_text(text) == want
    assert pypy_codec.loads_text(text) == want


@settings(max_examples=300)
@given(value=hs.recursive(
    hs.integers(min_value=-(2**70), max_value=2**70) | hs.text(alphabet="0123456789\\\"-e. "),
    lambda inner: hs.lists(inner, max_size=4) | hs.dictionaries(hs.text(max_size=3), inner, max_size=3),
    max_leaves=12))
def test_loads_text_refuses_exactly_what_does_not_fit(value):
    import json

    text = json.dumps(value)

    def ints(v):
        if isinstance(v, int):
            yield v
        elif isinstance(v, list):
            for x in v:
                yield from ints(x)
        elif isinstance(v, dict):
            for x in v.values():
                yield from ints(x)

    fits = all(-(2**63) <= i < 2**64 for i in ints(value))
    for codec in (py_codec, pypy_codec, cy_codec):
        if fits:
            assert codec.loads_text(text) == value
        else:
            with pytest.raises(pystate.InvalidValueError):
                codec.loads_text(text)


@settings(max_examples=200)
@given(value=json_values)
def test_codecs_decode_what_they_encode(value):
    data = cy_codec.dumps(value)
    assert py_codec.loads(data) == cy_codec.loads(data) == pypy_codec.loads(data) == value or value != value
    assert py_codec.copy_containers(value) == cy_codec.copy_containers(value) == value or value != value


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(current=json_values, missing=hs.booleans(),
       ops=hs.lists(hs.one_of(wire_ops, wire_ops, short_ops, bad_ops), max_size=6))
def test_op_engines_apply_alike(current, missing, ops):
    cy = outcome(cy_ops.apply, cy_codec.loads(cy_codec.dumps(current)), missing, ops)
    py = outcome(py_ops.apply, cy_codec.loads(cy_codec.dumps(current)), missing, ops)
    assert py == cy
    assert outcome(pypy_ops.apply, cy_codec.loads(cy_codec.dumps(current)), missing, ops) == cy


@pytest.mark.parametrize("ops", [
    "not a list",
    [{"type": Text("increment"), "path": "n", "by": 1}],
    [{"type": "increment", "path": "n", "by": True}],
    [{"type": "increment", "path": "n", "by": 2**63}],
    [{"type": "append", "path": ["a", "\ud800"], "value": 1}],
    [{"type": "merge", "path": [Text("a"), "b"], "value": {"x": 1}}],
    [{"type": "set", "path": "a", "value": float("nan")}],
    [{"type": "set", "path": "a", "value": {"deep": (1, datetime.date(2020, 1, 1))}}],
    [{"increment": {"field": "n"}}],
    [{"decrement": 5}],
    [{"a": 1, "b": 2}],
    # Where the compiled build takes its own road (the C API) to the
    # same answer: keys read off the dict, byte counts, 64-bit arithmetic.
    [collections.OrderedDict(type="increment", path="n", by=1)],
    [{Text("type"): "append", Text("path"): "t", Text("value"): "x"}],
    [{"type": "set", "path": "é" * 128, "value": 1}, {"type": "set", "path": "é" * 129, "value": 2}],
    [{"type": "set", "path": "\ud800", "value": 1}],
    [{"type": "merge", "path": ["a", "x" * 257], "value": {}}],
    [{"type": "increment", "path": "n", "by": 2**63 - 1}, {"type": "increment", "path": "n", "by": 2**63 - 1}],
    [{"type": "decrement", "path": "n", "by": -(2**63)}, {"type": "increment", "path": "n", "by": 2**63}],
    [{"type": "increment", "path": "f", "by": 2**53 + 1}, {"type": "decrement", "path": "f", "by": -(2**63)}],
    [{"type": "set", "path": "f", "value": 1.7e308}, {"type": "increment", "path": "f", "by": 2**63 - 1}],
    [{"type": "set", "path": "big", "value": 2**64 - 1}, {"type": "increment", "path": "big", "by": 1}],
    [{"type": "set", "path": "big", "value": 2**64}],
])
def test_op_engines_agree_on_odd_requests(ops):
    want = outcome(cy_ops.apply, {"n": 1, "f": 0.5}, False, ops)
    assert outcome(py_ops.apply, {"n": 1, "f": 0.5}, False, ops) == want
    assert outcome(pypy_ops.apply, {"n": 1, "f": 0.5}, False, ops) == want


# ---- the store binding ----------------------------------------------------------

class Bound:
    """A binding's Store under the one write path, as a State holds it: the
    writes go through :class:`pystate.writes.Writes`, the reads straight to
    the Store."""

    def __init__(self, core, *args, **kwargs):
        self.store = core.Store(*args, **kwargs)
        self.writes = Writes(self.store)

    def __getattr__(self, name):
        if name in ("set", "delete", "update"):
            return getattr(self.writes, name)
        return getattr(self.store, name)


def run_calls(core, path, calls):
    """Each call's outcome on a fresh store of ``core`` (in memory when
    ``path`` is None), then the final contents."""
    st = Bound(core, path) if path is None else Bound(core, path, sync="never")
    out = []
    for name, args in calls:
        r = outcome(getattr(st, name), *args)
        if r[0] == "ok" and isinstance(r[1], UpdateResult):
            r = ("ok", tuple(r[1]))
        out.append(r)
    groups = st.list_groups()
    out.append(("final", groups, [st.list(g) for g in groups],
                [list(st.items(g)) for g in groups]))
    s = st.stats()
    out.append(("stats", {k: s[k] for k in ("scopes", "keys", "key_bytes", "value_bytes")}))
    st.close()
    return out


calls = hs.lists(hs.one_of(
    hs.tuples(hs.just("set"), hs.tuples(names, keys_, hs.one_of(json_values, not_json))),
    hs.tuples(hs.just("get"), hs.tuples(names, keys_)),
    hs.tuples(hs.just("delete"), hs.tuples(names, keys_)),
    hs.tuples(hs.just("update"), hs.tuples(names, keys_, op_lists)),
    hs.tuples(hs.just("list"), hs.tuples(names)),
    hs.tuples(hs.just("set"), hs.tuples(hs.sampled_from([1, None, "\udcff"]), keys_, json_values)),
), max_size=25)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(calls=calls)
def test_stores_answer_alike_in_memory(calls):
    want = run_calls(cy_core, None, calls)
    assert run_calls(cf_core, None, calls) == want
    assert run_calls(py_cffi_core, None, calls) == want


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=calls)
def test_stores_answer_alike_on_file(tmp_path_factory, calls):
    a = run_calls(cf_core, tmp_path_factory.mktemp("cffi"), calls)
    b = run_calls(cy_core, tmp_path_factory.mktemp("cython"), calls)
    assert a == b


@pytest.mark.parametrize("writer, reader", [(cy_core, cf_core), (cf_core, cy_core)])
def test_a_store_written_by_one_binding_opens_in_the_other(tmp_path, writer, reader):
    st = Bound(writer, tmp_path / "s")
    for i in range(200):
        st.set(f"scope{i % 3}", f"k{i}", {"i": i, "s": "é" * (i % 5)})
    st.update("scope0", "k0", [{"type": "append", "path": "tags", "value": "x"}])
    st.delete("scope1", "k1")
    st.compact("scope2")
    before = {g: list(st.items(g)) for g in st.list_groups()}
    st.close()
    other = reader.Store(tmp_path / "s")
    assert {g: list(other.items(g)) for g in other.list_groups()} == before
    assert other.check()["ok"]
    other.close()


def test_bindings_report_the_same_damage(tmp_path):
    st = Bound(cy_core, tmp_path / "s", sync="always")
    for i in range(20):
        st.set("s", f"k{i}", i)
    st.close()
    log = next((tmp_path / "s").glob("*.log"))
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF  # damage before the end: opening refuses
    log.write_bytes(bytes(data))
    assert cf_core.inspect(tmp_path / "s") == cy_core.inspect(tmp_path / "s")
    assert cf_core.inspect(tmp_path / "s")["problem"]
    errors = [outcome(core.Store, tmp_path / "s") for core in (cf_core, cy_core)]
    assert errors[0] == errors[1] and errors[0][1] == "CorruptError"


@pytest.mark.parametrize("call, args", [
    ("set", ("s", "k", 1)), ("get", ("s", "k")), ("delete", ("s", "k")),
    ("update", ("s", "k", [])), ("list", ("s",)), ("list_groups", ()), ("stats", ()),
    ("flush", ()), ("compact", ()), ("check", ()), ("items_page", ("s",)),
])
def test_closed_stores_refuse_alike(call, args):
    got = []
    for core in (cf_core, cy_core):
        st = Bound(core)
        st.close()
        got.append(outcome(getattr(st, call), *args))
    assert got[0] == got[1] and got[0][1] == "ClosedError"


@pytest.mark.parametrize("call, args", [("get_seen", ("s", "k")), ("put_seen", (0, b"1")),
                                        ("put_seen", (7, b"1")), ("put_if", ("s", "k", b"1", None))])
def test_closed_stores_refuse_the_update_calls_alike(call, args):
    got = []
    for core in (cf_core, cy_core):
        st = core.Store()
        st.close()
        got.append(outcome(getattr(st, call), *args))
    assert got[0] == got[1] and got[0][1] == "ClosedError"


def test_options_are_refused_alike(tmp_path):
    cases = [((tmp_path / "a",), {"sync": "sometimes"}),
             ((tmp_path / "b",), {"save_interval_ms": 5}), ((), {"repair": True}), (("",), {})]
    for args, kwargs in cases:
        got = [outcome(functools.partial(core.Store, *args, **kwargs)) for core in (cf_core, cy_core)]
        assert got[0] == got[1] and got[0][0] == "raised", (args, kwargs)


def test_module_level_helpers_agree():
    assert cf_core.RC_CODES == cy_core.RC_CODES
    assert cf_core.RC_END == cy_core.RC_END
    assert cf_core.SYNC_MODES == cy_core.SYNC_MODES
    assert cf_core.version() == cy_core.version()
    for rc in [*cy_core.RC_CODES.values(), 5, 28]:
        assert cf_core.strerror(rc) == cy_core.strerror(rc)
    assert py_ops.DOC_URL == cy_ops.DOC_URL


@pytest.mark.parametrize("core", [cf_core, py_cffi_core], ids=["compiled", "plain"])
def test_cffi_reads_from_many_threads_never_see_each_others_values(core):
    # Each thread reads through buffers of its own (found by thread ident
    # once compiled), values in place and spilled alike; short-lived
    # threads may reuse a finished one's ident, and so its buffers.
    import threading

    st = core.Store()
    sizes = [3, 4000, 4094, 4095, 4200, 70_000]  # around PSG_INLINE and _KEEP
    for t in range(4):
        for n in sizes:
            st.put("s", f"{t}-{n}", orjson.dumps(f"{t}" * (n - 2)))
    bad = []

    def reader(t, rounds):
        for _ in range(rounds):
            for n in sizes:
                want = orjson.dumps(f"{t}" * (n - 2))
                if st.get_seen("s", f"{t}-{n}")[0] != want or st.get("s", f"{t}-{n}") != f"{t}" * (n - 2):
                    bad.append((t, n))

    long_lived = [threading.Thread(target=reader, args=(t, 300)) for t in range(2)]
    for th in long_lived:
        th.start()
    for i in range(40):
        th = threading.Thread(target=reader, args=(2 + i % 2, 5))
        th.start()
        th.join()
    for th in long_lived:
        th.join()
    assert bad == []
    assert st.get_seen("s", "nobody")[0] is None


def _seen_script(st):
    # What put_seen answers after each kind of call in between.
    st.put("s", "k", b"1")
    st.put("s", "j", b"2")
    out = []
    data, seen = st.get_seen("s", "k")
    out += [data, seen != 0, st.put_seen(seen, b"3"), st.put_seen(seen, b"4")]
    data, seen = st.get_seen("s", "k")
    st.get_seen("s", "j")[0]
    out += [data, st.put_seen(seen, b"5")]
    older, newer = st.get_seen("s", "k")[1], st.get_seen("s", "k")[1]
    out += [st.put_seen(older, b"6")]
    older, newer = st.get_seen("s", "k")[1], st.get_seen("s", "k")[1]
    out += [st.put_seen(newer, b"7")]
    out += [st.get_seen("s", "nobody"), st.get_seen("nowhere", "k"), st.put_seen(0, b"8")]
    return out + [st.get_seen("s", "k")[0], st.get_seen("s", "j")[0]]


def test_put_seen_answers_alike_in_both_bindings():
    got = [_seen_script(core.Store()) for core in (cf_core, cy_core)]
    assert got[0] == got[1] == [b"1", True, True, False, b"3", False, False, True,
                                (None, 0), (None, 0), False, b"7", b"2"]


def test_a_file_stores_reads_vouch_for_nothing(tmp_path):
    for core in (cf_core, cy_core):
        st = core.Store(str(tmp_path / core.__name__))
        st.put("s", "k", b"1")
        data, seen = st.get_seen("s", "k")
        assert (data, seen, st.put_seen(seen, b"2"), st.get_seen("s", "k")[0]) == (b"1", 0, False, b"1")
        st.close()


@pytest.mark.parametrize("args", [("s", -1), ("s", "10"), (1,)])
def test_items_refuses_bad_arguments_alike_when_called(args):
    got = []
    for core in (cf_core, cy_core):
        st = core.Store()
        r = outcome(st.items, *args)
        got.append(r[:2] if r[0] == "raised" else ("ok", outcome(list, r[1])))
    assert got[0] == got[1]


def test_backend_benchmark_measures_both_bindings():
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "backends.py")
    r = subprocess.run([sys.executable, bench, "--keys", "2000"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("CPython")]
    assert [row.split(",")[1].split()[0] for row in rows] == ["cython", "cffi"]
    assert rows[0].count("(1.00)") == 7  # the Cython row is the baseline of every column
