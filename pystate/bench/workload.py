"""The core benchmark workload and its floor.

Workload (issue "Compiled core"): 200,000 keys over 8 scopes, values ~210-byte
JSON objects of 10 fields. The floor is the least a Python program can do
to offer the same calls with the same return values: a dict of dicts
holding ``orjson.dumps`` output as exact-size ``bytes`` copies (orjson
returns over-allocated buffers), decoding on the way out.
"""

from __future__ import annotations

try:
    import orjson
except ImportError:  # PyPy (bench/backends.py runs there): only the floor needs it
    orjson = None  # type: ignore[assignment]

SCOPES = 8
KEYS = 200_000

_loads = orjson.loads if orjson else None
_dumps = orjson.dumps if orjson else None


def make_value(i: int) -> dict:
    """A 10-field object of about 210 bytes of JSON."""
    return {
        "id": i,
        "name": f"user-{i:08d}",
        "email": f"user{i:08d}@example.com",
        "age": 20 + i % 60,
        "active": i % 2 == 0,
        "score": i * 1.5,
        "tags": ["alpha", "beta", "gamma"],
        "city": "Amsterdam",
        "balance": 1000 + i,
        "note": "lorem ipsum dolor sit",
    }


def make_keys(n: int = KEYS, scopes: int = SCOPES) -> list[tuple[str, str]]:
    return [(f"scope-{i % scopes}", f"key-{i:08d}") for i in range(n)]


#: The update every benchmarked update applies: one increment, one append.
UPDATE_OPS = [
    {"type": "increment", "path": "age", "by": 1},
    {"type": "append", "path": "tags", "value": "delta"},
]


def apply_update_ops(raw: bytes) -> tuple[dict, dict]:
    """UPDATE_OPS by hand on a stored JSON text: (old, new), independent
    values. The alternatives' update, the cheapest correct one."""
    old = _loads(raw)
    new = _loads(raw)
    new["age"] += 1
    new["tags"].append("delta")
    return old, new


class DictFloor:
    """dict of dicts of exact-size orjson bytes, with State's return values."""

    def __init__(self) -> None:
        self.d: dict[str, dict[str, bytes]] = {}

    def set(self, scope, key, value):
        t = self.d.get(scope)
        if t is None:
            t = self.d[scope] = {}
        old = t.get(key)
        t[key] = bytes(memoryview(_dumps(value)))
        return None if old is None else _loads(old)

    def get(self, scope, key, default=None):
        t = self.d.get(scope)
        if t is None:
            return default
        b = t.get(key)
        return default if b is None else _loads(b)

    def delete(self, scope, key):
        t = self.d.get(scope)
        if t is None:
            return None
        b = t.pop(key, None)
        if not t:
            del self.d[scope]
        return None if b is None else _loads(b)

    def update(self, scope, key, ops):
        # Specialised to UPDATE_OPS: the cheapest possible correct update
        # that returns independent old and new values.
        t = self.d[scope]
        old, new = apply_update_ops(t[key])
        t[key] = bytes(memoryview(_dumps(new)))
        return (old, new, [])

    def list(self, scope):
        t = self.d.get(scope)
        return [] if t is None else [_loads(b) for b in t.values()]

    def list_groups(self):
        return sorted(self.d)


class BoundStore:
    """A binding's ``Store`` under the one write path, wired as
    :class:`pystate.State` wires them (State adds only trigger plumbing,
    idle here), so both bindings can be measured in one run whichever one
    ``PYSTATE_BACKEND`` chose.

    >>> from pystate._cffi.core import Store
    >>> st = BoundStore(Store)
    >>> st.set("s", "k", 1) is None, st.get("s", "k")
    (True, 1)
    """

    def __init__(self, store_cls: type, *args: object, **kwargs: object) -> None:
        from pystate.writes import Writes

        self.store = store = store_cls(*args, **kwargs)
        writes = Writes(store)
        self.set, self.delete, self.update = writes.set, writes.delete, writes.update
        self.get, self.list, self.close = store.get, store.list, store.close
