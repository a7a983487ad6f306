"""Which binding of the C core pystate runs on, chosen once at import.

``PYSTATE_BACKEND=cython`` (the default on CPython): the Cython module
``pystate._core``. ``PYSTATE_BACKEND=cffi`` (the default on PyPy, where
only it is built): the same C core through cffi (``pystate._cffi``). Both
behave the same, to the error message; the parity tests hold them to it.
Both use the one codec and op engine, ``pystate._codec`` and
``pystate._ops``: compiled by Cython on CPython, plain Python on PyPy.
Everything in pystate reaches the binding through ``core``, ``codec`` and
``ops`` here.

>>> from pystate import _backend
>>> _backend.name in ("cython", "cffi")
True
"""

from __future__ import annotations

import os
import sys

from pystate.errors import ConfigError

#: The backends, by the name PYSTATE_BACKEND takes.
CHOICES = ("cython", "cffi")


def _choose() -> str:
    raw = os.environ.get("PYSTATE_BACKEND", "")
    name = raw.strip().lower()
    if not name:
        return "cffi" if sys.implementation.name == "pypy" else "cython"
    if name not in CHOICES:
        raise ConfigError(f"PYSTATE_BACKEND: expected one of {', '.join(CHOICES)}, got {raw!r}")
    return name


#: The backend loaded: "cython" or "cffi".
name = _choose()

try:
    from pystate import _codec as codec
    from pystate import _ops as ops

    if name == "cython":
        from pystate import _core as core
    else:
        from pystate._cffi import core
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        f"pystate's {name} binding could not be loaded. Build and install the "
        "package with `pip install .` (see README.md); from a source checkout, "
        "install it (`pip install -e .`) so the uncompiled tree does not shadow "
        f"the built modules. ({e})"
    ) from e

__all__ = ["CHOICES", "name", "core", "codec", "ops"]
