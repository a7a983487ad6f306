"""pystate/_codec.py's decode: the one-pass decoder of stored texts
(pystate/_decode.c) gives exactly orjson's value, in type and sign too, for
every text it takes, and leaves every other text to orjson, which then
gives its own value or error."""

from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import sysconfig
import tracemalloc
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from pystate import _codec
from pystate.bench.workload import make_value
from test_c_core import need
from test_model import json_values

ROOT = Path(__file__).resolve().parent.parent

fast = _codec._fast_decode
compiled = fast(b"1") is not NotImplemented
needs_compiled = pytest.mark.skipif(not compiled, reason="the one-pass decoder is compiled code (CPython)")


def same(a, b):
    """a == b, and of the same types all the way down (True is not 1, 1.0
    is not 1, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def orjson_outcome(text):
    try:
        return ("value", orjson.loads(text))
    except orjson.JSONDecodeError as e:
        return ("error", str(e))


def codec_outcome(text):
    try:
        return ("value", _codec.decode(text))
    except orjson.JSONDecodeError as e:
        return ("error", str(e))


def assert_as_orjson(text):
    want, got = orjson_outcome(text), codec_outcome(text)
    assert want[0] == got[0], (text, want, got)
    if want[0] == "value":
        assert same(got[1], want[1]), (text, want, got)
    else:
        assert got[1] == want[1]


# Texts of the form pystate stores: the decoder must take each one itself.
STORED = [
    make_value(7),
    make_value(123456),
    {},
    [],
    {"a": {"b": {"c": [1, [2, [3, {}]]]}}},
    {"é": "ünïcödé", "日本": "語", "emoji": "\U0001f600", "mixed": "a\u00e9b\u4e2dc\U0001f600d"},
    [0, -0.0, 0.0, 1.5, -1.5, 0.1, 1e-7, 123.456, 300000.0, 1e22, -2.5e-10],
    [0, 1, -1, 999_999_999_999_999_999, -999_999_999_999_999_999, 2**53, -(2**53)],
    [True, False, None, "", " ", "\x7f", "/"],
    {"k": "v" * 1000, "x" * 40: 1, "": 2},
    list(range(200)),
    {f"key{i}": i for i in range(100)},
    [{"id": i, "tags": ["t"] * 3} for i in range(100)],
]


FLOAT_TEXTS = [b"1e23", b"5e-324", b"1e-400", b"1.7976931348623157e308", b"9007199254740993.0",
               b"0.1234567890123456789", b"0.30000000000000004", b"-2.5e-10", b"123456789012345678901234.5"]

WHITESPACE = [b' { "a" : [ 1 , 2.5 , "x" ] ,\n\t"b" : { } }\r\n', b"[ ]", b"{ }", b" 1 ", b'"s"', b"true", b"null"]

ESCAPED = [
    b'"a\\nb"', b'"\\u00e9"', b'{"a\\"b":1}', b'"\\ud83d\\ude00"', b'"\\uD83D\\uDE00"', b'"\\u0000"',
    b'"\\"\\\\\\/\\b\\f\\n\\r\\t"', b'"\\u4e2d\\u00e9x\\u007f"', b'"\xc3\xa9\\n\xe4\xb8\xad"',
    b'"' + b"x\\n" * 300 + b'"', b'{"k\\u00e9y":"v","k":[1,"a\\"b"]}',
]

# What the one-pass decoder must take itself: every form the store writes,
# floats outside the exact fast path (read by strtod), whitespace and bare
# scalars, strings with the escapes JSON defines.
TAKEN = (
    [pytest.param(orjson.dumps(v), id=f"stored-{i}") for i, v in enumerate(STORED)]
    + [pytest.param(t, id=f"float-{i}") for i, t in enumerate(FLOAT_TEXTS)]
    + [pytest.param(t, id=f"space-{i}") for i, t in enumerate(WHITESPACE)]
    + [pytest.param(t, id=f"escaped-{i}") for i, t in enumerate(ESCAPED)]
)


@needs_compiled
@pytest.mark.parametrize("text", TAKEN)
def test_a_text_in_the_fast_forms_is_decoded_in_one_pass_to_orjsons_value(text):
    got = fast(text)
    assert got is not NotImplemented
    assert same(got, orjson.loads(text))


DECLINED = [
    # escapes orjson refuses, control characters, not UTF-8
    b'"\\ud800"', b'"\\udc00"', b'"\\ud83dx"', b'"\\ud83d\\u0041"', b'"\\U00e9"', b'"\\x41"',
    b'"\\u12"', b'"\\u12G4"', b'"a\\', b'"a\\"', b'"\\u\xc3\xa9"', b'"a\\nb\x01"', b'"a\tb"', b'"a\x00b"',
    b'"\xff"', b'"\xc0\xaf"', b'"\xed\xa0\x80"', b'"\xf4\x90\x80\x80"', b'"\xe2\x82"', b'{"\xff":1}',
    # numbers outside the fast forms, and not numbers
    b"1234567890123456789", b"-9223372036854775808", b"18446744073709551615", b"18446744073709551616",
    b"1e400", b"-1e400", b"1." + b"1" * 80, b"01", b"-01", b"1.", b".5", b"-", b"1e", b"1e+", b"+1", b"NaN",
    b"Infinity", b"-Infinity", b"0x10",
    # not JSON
    b"", b" ", b"{", b"[", b"[1,]", b"[,1]", b"[1 2]", b'{"a"}', b'{"a":}', b'{"a":1,}', b'{"a" 1}',
    b"{1:2}", b"tru", b"nul", b"fals", b'"abc', b'{"a":1}x', b"1 2", b"\x00", b'{"a":1}\x00',
    b"\xef\xbb\xbf{}", b"[1]\x0c", b"\x0c[1]",
    # deeper than the decoder goes
    b"[" * 200 + b"]" * 200, b'{"a":' * 150 + b"1" + b"}" * 150,
]


@needs_compiled
@pytest.mark.parametrize("text", DECLINED, ids=range(len(DECLINED)))
def test_a_text_outside_the_fast_forms_is_left_to_orjson(text):
    assert fast(text) is NotImplemented


@pytest.mark.parametrize("text", DECLINED, ids=range(len(DECLINED)))
def test_a_declined_text_gets_orjsons_value_or_error(text):
    assert_as_orjson(text)


@needs_compiled
def test_containers_larger_than_the_decoders_own_stack():
    values = [list(range(10_000)), {f"k{i}": [i, {"i": i}] for i in range(5_000)},
              [[[i] * 70 for i in range(70)]]]
    for value in values:
        text = orjson.dumps(value)
        got = fast(text)
        assert got is not NotImplemented and same(got, value)


@needs_compiled
def test_keys_that_share_a_cache_slot_keep_their_own_names():
    # 20,000 distinct keys over 1,024 cache slots: every slot is shared.
    for start in (0, 10_000):
        value = {f"field-{i}": i for i in range(start, start + 10_000)}
        got = fast(orjson.dumps(value))
        assert same(got, value)


@needs_compiled
def test_a_repeated_key_keeps_its_last_value_as_in_orjson():
    text = b'{"a":1,"b":2,"a":3}'
    assert same(fast(text), orjson.loads(text)) and fast(text) == {"a": 3, "b": 2}


@needs_compiled
@pytest.mark.skipif(sys.version_info < (3, 11), reason="str-only key tables came with 3.11")
@pytest.mark.parametrize("n", [1, 5, 6, 10, 40])
def test_decoded_objects_get_the_compact_str_keyed_table(n):
    # The comprehension inserts str keys into an empty dict, which gives
    # 3.11's str-only key table; a presized dict (orjson's) takes a third more.
    value = {f"k{i}": i for i in range(n)}
    got = fast(orjson.dumps(value))
    assert same(got, value)
    assert sys.getsizeof(got) == sys.getsizeof(value)


def test_two_decodes_of_one_text_share_no_container():
    text = orjson.dumps({"tags": ["a"], "o": {"n": 1}})
    a, b = _codec.decode(text), _codec.decode(text)
    assert a == b and a is not b and a["tags"] is not b["tags"] and a["o"] is not b["o"]
    a["tags"].append("b")
    assert b["tags"] == ["a"]


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_encoded_value_decodes_to_itself(value):
    text = orjson.dumps(value)
    got = _codec.decode(text)
    assert same(got, orjson.loads(text))


digits = hs.text("0123456789", min_size=1, max_size=22)


@settings(max_examples=1500, deadline=None)
@given(hs.booleans(), digits, hs.one_of(hs.none(), digits), hs.one_of(hs.none(), hs.integers(-400, 400)))
def test_any_number_text_decodes_as_orjson_decodes_it(neg, whole, frac, exp):
    text = ("-" if neg else "") + whole
    if frac is not None:
        text += "." + frac
    if exp is not None:
        text += f"e{exp}"
    assert_as_orjson(text.encode())


@settings(max_examples=1500, deadline=None)
@given(hs.floats(allow_nan=False, allow_infinity=False))
def test_any_float_comes_back_exactly(x):
    got = _codec.decode(orjson.dumps([x]))[0]
    assert got == x and math.copysign(1, got) == math.copysign(1, x)



@needs_compiled
def test_decoding_leaks_nothing():
    texts = [orjson.dumps(v) for v in STORED] + DECLINED
    def decode_all():
        for t in texts:
            try:
                _codec.decode(t)
            except orjson.JSONDecodeError:
                pass
    decode_all()  # the key cache and orjson's settle
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            decode_all()
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # One object kept per decode would be 200 x 70 x 32 bytes and more.
    assert grown < 64 * 1024, grown


RUNNER = """
import importlib.machinery, importlib.util, sys
so = sys.argv[1]
class Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pystate._codec":
            loader = importlib.machinery.ExtensionFileLoader(name, so)
            return importlib.util.spec_from_file_location(name, so, loader=loader)
        return None
sys.meta_path.insert(0, Finder)
import pystate._codec
assert pystate._codec.__file__ == so, pystate._codec.__file__
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[2], "-k", "not sanitizers"]))
"""


@needs_compiled
def test_this_file_passes_with_the_codec_built_under_the_sanitizers(tmp_path):
    # The codec module (its Cython C, pystate/_decode.c, and the C check it
    # calls) compiled with AddressSanitizer and UndefinedBehaviorSanitizer,
    # loaded in place of the installed one, runs the tests above.
    gcc = need("gcc")
    c_out = tmp_path / "_codec.c"
    r = subprocess.run([sys.executable, "-m", "cython", str(ROOT / "pystate" / "_codec.py"), "-o", str(c_out),
                        "-I", str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    so = tmp_path / ("_codec" + sysconfig.get_config_var("EXT_SUFFIX"))
    flags = ["-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=undefined", "-DXXH_INLINE_ALL", "-D_GNU_SOURCE"]
    # csrc/ first: CPython has a pystate.h of its own.
    includes = ["-I", str(ROOT / "csrc"), "-I", str(ROOT / "pystate"), "-I", sysconfig.get_paths()["include"]]
    r = subprocess.run([gcc, *flags, *includes, str(c_out), str(ROOT / "pystate" / "_decode.c"),
                        str(ROOT / "csrc" / "ps_json.c"), "-o", str(so)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    runtimes = [subprocess.run([gcc, f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
                for lib in ("libasan.so", "libubsan.so")]
    env = dict(os.environ, LD_PRELOAD=":".join(runtimes), PYTHONMALLOC="malloc",  # objects in ASan's sight
               # CPython keeps memory to its exit on purpose: leaks are the
               # test above's to find.
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    r = subprocess.run([sys.executable, "-c", RUNNER, str(so), __file__], capture_output=True, text=True,
                       timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert " passed" in r.stdout, r.stdout
