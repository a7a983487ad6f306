"""Exceptions raised by pystate.

Every exception pystate raises on purpose derives from :class:`StateError`
and carries a stable, machine-readable ``code``. Where the iii engine has a
code for the same failure, the code is the engine's (``deserialization_error``,
``function_not_found``, ``VALUE_TOO_LARGE``, ...), so programs written against
the engine can keep matching on it. Each class also derives from the Python
built-in that best describes it (``ValueError``, ``LookupError``,
``MemoryError``), so generic ``except`` clauses keep working.

>>> import pystate
>>> try:
...     pystate.State().set("scope", 1, "v")
... except pystate.StateError as e:
...     print(e.code)
deserialization_error
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "StateError",
    "PayloadError",
    "InvalidValueError",
    "ValueTooLargeError",
    "FunctionNotFoundError",
    "UnsupportedActionError",
    "UnsupportedError",
    "InvocationError",
    "TriggerConfigError",
    "EventQueueFullError",
    "AdapterUnavailableError",
    "ClosedError",
    "ConfigError",
    "NotFoundError",
    "ConflictError",
    "StoreMemoryError",
    "StoreOSError",
    "CorruptError",
    "LockedError",
    "NotAStoreError",
    "ReadOnlyError",
    "RecoveryWarning",
    "RC_ERRORS",
    "error_for_rc",
    "recovery_findings",
    "recovery_message",
]


class StateError(Exception):
    """Base class of every pystate error.

    ``code`` is stable across releases; ``message`` is for humans and may
    change. ``rc`` is the C core's return code when the error came from it.
    """

    code: str = "state_error"

    def __init__(self, message: str, *, code: str | None = None, rc: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.rc = rc

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class PayloadError(StateError, ValueError):
    """A request is malformed: a missing or mistyped field, an unknown op.

    Same code as the engine gives when it cannot deserialize a request.
    Nothing was changed.
    """

    code = "deserialization_error"


class InvalidValueError(StateError, ValueError):
    """A value cannot be stored as JSON (NaN, a set, an int beyond 64 bits...).

    Nothing was changed.
    """

    code = "invalid_value"


class ValueTooLargeError(StateError, ValueError):
    """A value is longer than the store accepts (``max_value_bytes``)."""

    code = "VALUE_TOO_LARGE"


class FunctionNotFoundError(StateError, LookupError):
    """``trigger`` was given a function id nobody registered."""

    code = "function_not_found"


class InvocationError(StateError):
    """A registered function raised (or its event loop is gone) while
    ``trigger`` waited for it. The handler's exception is ``__cause__``."""

    code = "invocation_failed"


class TriggerConfigError(StateError, ValueError):
    """``register_trigger`` was given a trigger it cannot register: an
    unknown ``type`` (code ``trigger_type_not_found``) or a malformed
    ``config``. Nothing was registered."""

    code = "invalid_trigger_config"


class EventQueueFullError(StateError):
    """A watched write found the event queue full and the store was opened
    with ``event_queue_full="raise"``. The write was not made."""

    code = "event_queue_full"


class AdapterUnavailableError(StateError, ConnectionError):
    """The storage server (Redis) could not be reached, or stopped answering,
    during this call. The call may not have been applied (an ``update``
    never half-applies); the adapter reconnects by itself on the next call."""

    code = "adapter_unavailable"


class UnsupportedActionError(StateError, ValueError):
    """``trigger`` was asked for an action this store cannot perform.

    The code is the engine's answer to an enqueue without a queue provider.
    """

    code = "enqueue_error"


class UnsupportedError(StateError, NotImplementedError):
    """The adapter cannot do this at all: the bridge cannot list a scope's
    keys (``keys``, ``items``), for the engine's state API has no such call."""

    code = "unsupported"


class ClosedError(StateError, ValueError):
    """The store was used after ``close()``."""

    code = "closed"


class ConfigError(StateError, ValueError):
    """A configuration value is missing, mistyped or out of range."""

    code = "invalid_config"


class NotFoundError(StateError, KeyError):
    """A scope or key does not exist (C core: ``PS_NOTFOUND``)."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError would print the repr
        return StateError.__str__(self)


class ConflictError(StateError):
    """A compare-and-set lost a race (C core: ``PS_CONFLICT``).

    pystate retries internally; users only see it from custom loops.
    """

    code = "conflict"


class StoreMemoryError(StateError, MemoryError):
    """The store could not allocate memory. Nothing was changed."""

    code = "out_of_memory"


class StoreOSError(StateError, OSError):
    """The operating system refused an operation; ``errno`` says why."""

    code = "os_error"


class CorruptError(StateError):
    """A log file is damaged before its end, or its header is, so opening
    it would lose data silently; or a file sits where a log should be that
    is not one (a symbolic link). The message names the file and the byte
    offset. Nothing on disk was changed; ``State(path, repair=True)``
    salvages every valid record and keeps the damaged file aside."""

    code = "corrupt"


class LockedError(StateError):
    """Another process has the store directory open (one writer at a time)."""

    code = "locked"


class NotAStoreError(StateError):
    """The directory is not a pystate store: it is not empty and has no
    ``PYSTATE`` marker (or, opening read-only, it has none at all). A store
    is created only in a new or empty directory; nothing in this one was
    created, changed or removed."""

    code = "not_a_store"


class ReadOnlyError(StateError):
    """A write (``set``, ``update``, ``delete``, ``compact``) to a store
    opened with ``read_only=True``. Nothing was changed."""

    code = "read_only"


class RecoveryWarning(UserWarning):
    """Opening a file-based store found damage: a torn tail (the end of a
    log cut short by a crash, or records the log says it held that are
    gone) was cut off, or a damaged log was salvaged by ``repair=True``;
    opened ``read_only``, it was found and left as it is. The message names
    the first file and offset; ``stats()["recovery"]`` has the counts."""


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def recovery_findings(report: dict, *, read_only: bool = False) -> list[str]:
    """What opening a store found and did, as short phrases (``report``: the
    ``stats()["recovery"]`` counts). Written once for the warning and for
    ``pystate check --fix``."""
    found = []
    if report["torn_tails"]:
        verb = "found" if read_only else "cut"
        found.append(f"{verb} {_n(report['torn_tails'], 'torn tail')} "
                     f"({_n(report['bytes_cut'], 'byte')} of records lost)")
    salvaged = report["repaired"] - report["logs_lost"]
    if salvaged:
        lost = f" ({_n(report['records_lost'], 'record')} lost)" if report["records_lost"] else ""
        found.append(f"salvaged {_n(salvaged, 'damaged log')}{lost}")
    if report["logs_lost"]:
        found.append(f"kept {_n(report['logs_lost'], 'unreadable log')} aside (its records are lost)")
    return found


def recovery_message(path: str, report: dict, detail: str, *, read_only: bool = False) -> str | None:
    """The text of the :class:`RecoveryWarning` for what opening ``path``
    found (``report``: the ``stats()["recovery"]`` counts; ``detail``: the
    C core's line about the first fix), or None when there is nothing to
    warn about. Both bindings use it, so the wording is written once."""
    found = recovery_findings(report, read_only=read_only)
    if not found:
        return None
    if read_only:
        what = f"pystate: store {path}: {'; '.join(found)}; left as it is (opened read-only)"
    else:
        what = f"pystate: recovered store {path}: {'; '.join(found)}"
    return f"{what}. {detail}" if detail else what


def bad_name(what: str, value: object) -> PayloadError:
    """The error for a scope or key (``what`` says which) that is not a
    str, or, given a str, that cannot be UTF-8 (a lone surrogate): every
    storage refuses the same names with the same words.

    >>> bad_name("scope", 1).message
    'scope: expected a string, got int'
    >>> bad_name("key", "\\ud800").message
    'key: not valid Unicode text (it contains a lone surrogate)'
    """
    if isinstance(value, str):
        return PayloadError(f"{what}: not valid Unicode text (it contains a lone surrogate)")
    return PayloadError(f"{what}: expected a string, got {type(value).__name__}")


def not_a_pair(item: object) -> PayloadError:
    """The error for ``item in st`` when ``item`` is no (scope, key) tuple."""
    return PayloadError(f"in: expected a (scope, key) pair, got {type(item).__name__}")


def wide_integer(literal: bytes, at: int) -> InvalidValueError:
    """The error for JSON text holding, at offset ``at``, an integer
    ``literal`` outside the 64-bit range (found by the C core's
    ``ps_json_check_ints``, for ``pystate._codec.loads_text``)."""
    text = literal.decode("ascii")
    if len(text) > 40:
        text = f"{text[:20]}...{text[-8:]} ({len(text)} characters)"
    return InvalidValueError(
        f"value is not JSON pystate can store: integer {text} at byte {at} is outside "
        "the 64-bit range JSON values can hold", rc=None)


#: The exception for each of the C core's negative status codes, by the
#: code's name in ``pystate.h`` (``PSG_CLOSED``: ``ps_guard.h``). The one
#: table: both bindings raise through :func:`error_for_rc`.
RC_ERRORS: dict[str, type[StateError]] = {
    "PS_NOTFOUND": NotFoundError,
    "PS_CONFLICT": ConflictError,
    "PS_TOOBIG": ValueTooLargeError,
    "PS_CORRUPT": CorruptError,
    "PS_BADVERSION": CorruptError,
    "PS_LOCKED": LockedError,
    "PS_NOTSTORE": NotAStoreError,
    "PS_READONLY": ReadOnlyError,
    "PS_RANGE": InvalidValueError,
    "PSG_CLOSED": ClosedError,
}


def error_for_rc(rc: int, name: str | None, what: str, detail: str) -> StateError:
    """Build the exception for a non-zero C return code.

    ``name`` is the code's name in the C headers (the binding maps codes to
    names from the header's own constants, so this table cannot drift from
    them), or None for an ``errno`` value; ``what`` names the operation and
    ``detail`` is the C core's ``ps_strerror(rc)``.

    >>> e = error_for_rc(-30800, "PS_NOTFOUND", "get", "no such scope or key")
    >>> type(e).__name__, e.message
    ('NotFoundError', 'get: no such scope or key')
    """
    cls = RC_ERRORS.get(name) if name is not None else None
    if cls is ClosedError:
        # The same whatever the call was: the store is gone.
        return ClosedError("the store is closed", rc=rc)
    if cls is not None:
        return cls(f"{what}: {detail}", rc=rc)
    if rc == _errno.ENOMEM:
        return StoreMemoryError(f"{what}: out of memory", rc=rc)
    if rc > 0:
        err = StoreOSError(f"{what}: {detail}", rc=rc)
        err.errno = rc
        return err
    return StateError(f"{what}: {detail} (code {rc})", code="internal", rc=rc)
