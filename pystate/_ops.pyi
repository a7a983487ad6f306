"""Type stubs for the compiled update op engine."""

from typing import Any

DOC_URL: str

def apply(current: Any, missing: bool, ops: list[dict[str, Any]]) -> tuple[Any, list[dict[str, Any]]]: ...
