"""Type stubs for the update op engine (pystate/_ops.py)."""

from typing import Any

DOC_URL: str

def apply(current: Any, missing: bool, ops: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]: ...
def apply_into(current: Any, missing: bool, ops: list[dict[str, Any]], errors: list[dict[str, Any]]) -> Any: ...
