"""The exception hierarchy and the C return-code table."""

from __future__ import annotations

import errno

import pytest

import pystate
from pystate._backend import core as _core
from pystate.errors import error_for_rc


def test_every_c_status_code_has_a_python_class():
    # The header's sentinel bounds the block: a code added to the C core
    # without a mapping here fails this test.
    codes = _core.RC_CODES
    assert set(codes) == {"PS_OK", "PS_NOTFOUND", "PS_CONFLICT", "PS_TOOBIG", "PS_CORRUPT",
                          "PS_LOCKED", "PS_BADVERSION", "PS_NOTSTORE", "PS_READONLY", "PS_RANGE"}
    for rc in range(codes["PS_NOTFOUND"], _core.RC_END):
        assert rc in codes.values(), f"C code {rc} is missing from RC_CODES"
        err = error_for_rc(rc, codes, "op")
        assert type(err) is not pystate.StateError, f"C code {rc} maps to no specific class"
        assert _core.strerror(rc) != "unknown pystate error code"


@pytest.mark.parametrize(
    "rc, cls, code",
    [
        ("PS_NOTFOUND", pystate.NotFoundError, "not_found"),
        ("PS_CONFLICT", pystate.ConflictError, "conflict"),
        ("PS_TOOBIG", pystate.ValueTooLargeError, "VALUE_TOO_LARGE"),
        ("PS_CORRUPT", pystate.CorruptError, "corrupt"),
        ("PS_BADVERSION", pystate.CorruptError, "corrupt"),
        ("PS_LOCKED", pystate.LockedError, "locked"),
        ("PS_NOTSTORE", pystate.NotAStoreError, "not_a_store"),
        ("PS_READONLY", pystate.ReadOnlyError, "read_only"),
    ],
)
def test_status_codes_map_to_classes(rc, cls, code):
    err = error_for_rc(_core.RC_CODES[rc], _core.RC_CODES, "get")
    assert type(err) is cls and err.code == code
    assert err.rc == _core.RC_CODES[rc]
    assert err.message.startswith("get: ")


def test_errno_codes_map_to_os_and_memory_errors():
    e = error_for_rc(errno.ENOMEM, _core.RC_CODES, "set")
    assert isinstance(e, pystate.StoreMemoryError) and isinstance(e, MemoryError)
    e = error_for_rc(errno.EIO, _core.RC_CODES, "set")
    assert isinstance(e, pystate.StoreOSError) and e.errno == errno.EIO and isinstance(e, OSError)


@pytest.mark.parametrize(
    "cls, base",
    [
        (pystate.PayloadError, ValueError),
        (pystate.InvalidValueError, ValueError),
        (pystate.ValueTooLargeError, ValueError),
        (pystate.FunctionNotFoundError, LookupError),
        (pystate.ClosedError, ValueError),
        (pystate.ConfigError, ValueError),
        (pystate.NotFoundError, KeyError),
        (pystate.StoreMemoryError, MemoryError),
        (pystate.StoreOSError, OSError),
    ],
)
def test_every_error_is_a_state_error_and_a_builtin(cls, base):
    assert issubclass(cls, pystate.StateError) and issubclass(cls, base)
    e = cls("what went wrong")
    assert str(e) == f"{cls.code}: what went wrong"
    assert e.message == "what went wrong"


def test_codes_are_stable():
    assert {c.code for c in (pystate.PayloadError, pystate.FunctionNotFoundError, pystate.ValueTooLargeError)} == {
        "deserialization_error",
        "function_not_found",
        "VALUE_TOO_LARGE",
    }


def test_library_version_matches_header():
    assert _core.version()[:2] == (0, 1)
