"""pystate: a durable JSON key-value state store with the iii-state API.

>>> import pystate
>>> st = pystate.State()
>>> st.set("orders", "o1", {"total": 10}) is None
True
>>> st.update("orders", "o1", [{"type": "increment", "path": "total", "by": 5}]).new_value
{'total': 15}
"""

from __future__ import annotations

from pystate import _backend

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
    NotAStoreError,
    NotFoundError,
    PayloadError,
    ReadOnlyError,
    RecoveryWarning,
    StateError,
    StoreMemoryError,
    StoreOSError,
    TriggerConfigError,
    UnsupportedActionError,
    UnsupportedError,
    ValueTooLargeError,
)
from pystate.state import State, Subscription, UpdateResult
from pystate.triggers import Trigger
from pystate.functions import FunctionRef
from pystate.aio import AsyncState
from pystate.config import ConfigWarning

__version__ = "0.1.0"

#: Which binding of the C core is loaded: "cython" or "cffi" (chosen by the
#: PYSTATE_BACKEND environment variable; see pystate._backend).
backend = _backend.name

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
    "UnsupportedError",
    "ClosedError",
    "ConfigError",
    "CorruptError",
    "LockedError",
    "NotAStoreError",
    "ReadOnlyError",
    "RecoveryWarning",
    "NotFoundError",
    "ConflictError",
    "StoreMemoryError",
    "StoreOSError",
    "backend",
    "__version__",
]
