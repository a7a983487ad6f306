"""pystate: a durable JSON key-value state store with the iii-state API.

>>> import pystate
>>> st = pystate.State()
>>> st.set("orders", "o1", {"total": 10}) is None
True
>>> st.update("orders", "o1", [{"type": "increment", "path": "total", "by": 5}]).new_value
{'total': 15}
"""

from __future__ import annotations

try:
    from pystate import _core
except ImportError as e:  # pragma: no cover - only on a broken install
    raise ImportError(
        "pystate's compiled core could not be loaded. Build and install the "
        "package with `pip install .` (see README.md); when running from a "
        "source checkout, run pytest via the `pytest` command, not "
        "`python -m pytest`, so the uncompiled source tree does not shadow the "
        f"installed package. ({e})"
    ) from e

from pystate.errors import (
    AdapterUnavailableError,
    ClosedError,
    ConfigError,
    ConflictError,
    CorruptError,
    EventQueueFullError,
    FunctionNotFoundError,
    InvocationError,
    InvalidValueError,
    LockedError,
    NotFoundError,
    PayloadError,
    RecoveryWarning,
    StateError,
    StoreMemoryError,
    StoreOSError,
    TriggerConfigError,
    UnsupportedActionError,
    ValueTooLargeError,
)
from pystate.state import State, Subscription, UpdateResult
from pystate.triggers import Trigger
from pystate.functions import FunctionRef
from pystate.aio import AsyncState
from pystate.config import ConfigWarning

__version__ = "0.1.0"

#: Which binding of the C core is loaded.
backend = "cython"

__all__ = [
    "State",
    "AsyncState",
    "UpdateResult",
    "Trigger",
    "FunctionRef",
    "Subscription",
    "InvocationError",
    "TriggerConfigError",
    "EventQueueFullError",
    "AdapterUnavailableError",
    "ConfigWarning",
    "StateError",
    "PayloadError",
    "InvalidValueError",
    "ValueTooLargeError",
    "FunctionNotFoundError",
    "UnsupportedActionError",
    "ClosedError",
    "ConfigError",
    "CorruptError",
    "LockedError",
    "RecoveryWarning",
    "NotFoundError",
    "ConflictError",
    "StoreMemoryError",
    "StoreOSError",
    "backend",
    "__version__",
]
