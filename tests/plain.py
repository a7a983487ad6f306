"""``pystate._codec``, ``pystate._ops`` and the cffi binding's
``pystate._cffi.core`` imported as plain Python from their one source,
beside the compiled modules that CPython imports: what PyPy runs, on this interpreter, so that tests can hold the two builds of
the same source to the same answers.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pystate

PACKAGE = Path(pystate.__file__).resolve().parent


def _exec(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def modules(orjson: bool = True) -> tuple[ModuleType, ModuleType]:
    """(codec, ops) from pystate/_codec.py and pystate/_ops.py, the op
    engine bound to this codec rather than to the compiled one. With
    ``orjson=False`` the codec is imported as if orjson were not installed,
    as on PyPy, and falls back to the json module."""
    names = ("pystate._codec", "orjson")
    saved = {name: sys.modules.get(name) for name in names}
    try:
        if not orjson:
            sys.modules["orjson"] = None  # type: ignore[assignment]  # import orjson now fails
        codec = _exec("pystate._codec", PACKAGE / "_codec.py")
        # _ops.py takes to_json from whatever `pystate._codec` is at import.
        sys.modules["pystate._codec"] = codec
        ops = _exec("pystate._ops", PACKAGE / "_ops.py")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return codec, ops


@functools.cache
def cffi_core() -> ModuleType:
    """pystate/_cffi/core.py as plain Python (its own module object, over
    the same compiled ``_native``): the cffi binding as PyPy runs it."""
    return _exec("pystate._cffi.core", PACKAGE / "_cffi" / "core.py")
