"""The exception hierarchy and the C return-code table."""

from __future__ import annotations

import errno

import pytest

import pystate
from pystate._backend import core as _core
from pystate.errors import RC_ERRORS, error_for_rc


def test_every_c_status_code_has_a_python_class():
    # The header's sentinel bounds the block: a code added to the C core
    # without a mapping in errors.RC_ERRORS fails this test.
    codes = _core.RC_CODES
    assert set(codes) == {"PS_OK", "PS_NOTFOUND", "PS_CONFLICT", "PS_TOOBIG", "PS_CORRUPT",
                          "PS_LOCKED", "PS_BADVERSION", "PS_NOTSTORE", "PS_READONLY", "PS_RANGE"}
    names = {rc: name for name, rc in codes.items()}
    for rc in range(codes["PS_NOTFOUND"], _core.RC_END):
        assert rc in names, f"C code {rc} is missing from RC_CODES"
        assert names[rc] in RC_ERRORS, f"C code {names[rc]} maps to no class"
        err = error_for_rc(rc, names[rc], "op", _core.strerror(rc))
        assert type(err) is RC_ERRORS[names[rc]] is not pystate.StateError
        assert _core.strerror(rc) != "unknown pystate error code"


def test_the_c_core_names_the_closed_code_too():
    # The cffi binding's calls pass ps_guard, whose PSG_CLOSED reaches
    # Python through the same table as the store's own codes.
    from pystate._cffi import core as cf

    st = cf.Store()
    st.close()
    with pytest.raises(pystate.ClosedError) as e:
        st.get("s", "k")
    assert e.value.message == "the store is closed"
    assert cf.strerror(cf._CLOSED_RC) != "unknown pystate error code"


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
    n = _core.RC_CODES[rc]
    err = error_for_rc(n, rc, "get", _core.strerror(n))
    assert type(err) is cls and err.code == code
    assert err.rc == n
    assert err.message == f"get: {_core.strerror(n)}"


def test_errno_codes_map_to_os_and_memory_errors():
    e = error_for_rc(errno.ENOMEM, None, "set", "Cannot allocate memory")
    assert isinstance(e, pystate.StoreMemoryError) and isinstance(e, MemoryError)
    e = error_for_rc(errno.EIO, None, "set", "Input/output error")
    assert isinstance(e, pystate.StoreOSError) and e.errno == errno.EIO and isinstance(e, OSError)
    assert e.message == "set: Input/output error"


def test_the_error_table_imports_nothing_else_of_pystate():
    import ast
    import inspect

    import pystate.errors

    tree = ast.parse(inspect.getsource(pystate.errors))
    imported = [n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [None])]
    assert not [m for m in imported if m and m.split(".")[0] == "pystate"], imported


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
