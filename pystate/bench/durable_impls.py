"""The durable stores pystate's file store is compared with, each offering
State's calls with the same return values, each surviving the kill of its
process after every acknowledged write (none of them fsyncs per write):

- PyLog: the obvious pure-Python design, a dict in memory plus an append
  log of one JSON line per operation, flushed (not synced) per write.
- Lmdb: lmdb with sync=False, one write transaction per operation.
- Sqlite: sqlite3 in WAL mode with synchronous=NORMAL, one (immediate) transaction
  per operation.
- DiskCache: diskcache, one Cache (SQLite underneath) per scope.
- Rocks: rocksdict (RocksDB), keys prefixed by their scope, WAL not synced.
"""

from __future__ import annotations

import os
import sqlite3

import orjson

from pystate.bench.workload import DictFloor, apply_update_ops

_loads, _dumps = orjson.loads, orjson.dumps


class PyLog(DictFloor):
    """DictFloor plus a JSON-lines log; replayed when reopened."""

    def __init__(self, path: str):
        super().__init__()
        os.makedirs(path, exist_ok=True)
        self.file = os.path.join(path, "log.jsonl")
        if os.path.exists(self.file):
            self._replay()
        self.f = open(self.file, "ab")

    def _replay(self):
        with open(self.file, "rb") as f:
            for line in f:
                op = _loads(line)
                if op[0] == "set":
                    self.d.setdefault(op[1], {})[op[2]] = _dumps(op[3])
                else:
                    t = self.d.get(op[1])
                    if t is not None:
                        t.pop(op[2], None)

    def _log(self, line: bytes) -> None:
        self.f.write(line)
        self.f.flush()

    def set(self, scope, key, value):
        self._log(_dumps(["set", scope, key, value]) + b"\n")
        return super().set(scope, key, value)

    def delete(self, scope, key):
        self._log(_dumps(["del", scope, key]) + b"\n")
        return super().delete(scope, key)

    def update(self, scope, key, ops):
        t = self.d[scope]
        old, new = apply_update_ops(t[key])
        data = _dumps(new)
        self._log(b'["set",' + _dumps(scope) + b"," + _dumps(key) + b"," + data + b"]\n")
        t[key] = bytes(memoryview(data))
        return (old, new, [])

    def close(self):
        self.f.close()


class Lmdb:
    def __init__(self, path: str):
        import lmdb

        os.makedirs(path, exist_ok=True)
        self.env = lmdb.open(path, map_size=8 << 30, sync=False, metasync=False, max_dbs=0)

    @staticmethod
    def _k(scope, key):
        return scope.encode() + b"\0" + key.encode()

    def set(self, scope, key, value):
        with self.env.begin(write=True) as txn:
            old = txn.replace(self._k(scope, key), _dumps(value))
        return None if old is None else _loads(old)

    def get(self, scope, key, default=None):
        with self.env.begin() as txn:
            b = txn.get(self._k(scope, key))
        return default if b is None else _loads(b)

    def delete(self, scope, key):
        with self.env.begin(write=True) as txn:
            old = txn.pop(self._k(scope, key))
        return None if old is None else _loads(old)

    def list(self, scope):
        prefix = scope.encode() + b"\0"
        out = []
        with self.env.begin() as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for k, v in cur:
                    if not k.startswith(prefix):
                        break
                    out.append(_loads(v))
        return out

    def update(self, scope, key, ops):
        k = self._k(scope, key)
        with self.env.begin(write=True) as txn:
            old, new = apply_update_ops(txn.get(k))
            txn.put(k, _dumps(new))
        return (old, new, [])

    def close(self):
        self.env.close()


class Sqlite:
    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        # A writer waits for another process's write instead of failing.
        self.db = sqlite3.connect(os.path.join(path, "kv.sqlite"), isolation_level=None, timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS kv (scope TEXT, key TEXT, value BLOB, "
            "PRIMARY KEY (scope, key)) WITHOUT ROWID"
        )

    def set(self, scope, key, value):
        c = self.db
        c.execute("BEGIN IMMEDIATE")
        row = c.execute("SELECT value FROM kv WHERE scope=? AND key=?", (scope, key)).fetchone()
        c.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (scope, key, _dumps(value)))
        c.execute("COMMIT")
        return None if row is None else _loads(row[0])

    def get(self, scope, key, default=None):
        row = self.db.execute("SELECT value FROM kv WHERE scope=? AND key=?", (scope, key)).fetchone()
        return default if row is None else _loads(row[0])

    def delete(self, scope, key):
        c = self.db
        c.execute("BEGIN IMMEDIATE")
        row = c.execute("SELECT value FROM kv WHERE scope=? AND key=?", (scope, key)).fetchone()
        c.execute("DELETE FROM kv WHERE scope=? AND key=?", (scope, key))
        c.execute("COMMIT")
        return None if row is None else _loads(row[0])

    def list(self, scope):
        return [_loads(r[0]) for r in self.db.execute("SELECT value FROM kv WHERE scope=?", (scope,))]

    def update(self, scope, key, ops):
        c = self.db
        c.execute("BEGIN IMMEDIATE")
        raw = c.execute("SELECT value FROM kv WHERE scope=? AND key=?", (scope, key)).fetchone()[0]
        old, new = apply_update_ops(raw)
        c.execute("UPDATE kv SET value=? WHERE scope=? AND key=?", (_dumps(new), scope, key))
        c.execute("COMMIT")
        return (old, new, [])

    def close(self):
        self.db.close()


class DiskCache:
    def __init__(self, path: str):
        import diskcache

        self._mk = lambda scope: diskcache.Cache(os.path.join(path, scope.encode().hex()))
        self.caches: dict = {}
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            scope = bytes.fromhex(name).decode()
            self.caches[scope] = self._mk(scope)

    def _c(self, scope):
        c = self.caches.get(scope)
        if c is None:
            c = self.caches[scope] = self._mk(scope)
        return c

    def set(self, scope, key, value):
        c = self._c(scope)
        with c.transact():
            old = c.get(key)
            c.set(key, _dumps(value))
        return None if old is None else _loads(old)

    def get(self, scope, key, default=None):
        c = self.caches.get(scope)
        b = None if c is None else c.get(key)
        return default if b is None else _loads(b)

    def delete(self, scope, key):
        c = self._c(scope)
        with c.transact():
            old = c.pop(key, None)
        return None if old is None else _loads(old)

    def update(self, scope, key, ops):
        c = self._c(scope)
        with c.transact():
            old, new = apply_update_ops(c.get(key))
            c.set(key, _dumps(new))
        return (old, new, [])

    def list(self, scope):
        c = self.caches.get(scope)
        return [] if c is None else [_loads(c[k]) for k in c.iterkeys()]

    def close(self):
        for c in self.caches.values():
            c.close()


class Rocks:
    def __init__(self, path: str):
        import rocksdict

        self.db = rocksdict.Rdict(path, options=rocksdict.Options(raw_mode=True))

    @staticmethod
    def _k(scope, key):
        return scope.encode() + b"\0" + key.encode()

    def set(self, scope, key, value):
        k = self._k(scope, key)
        old = self.db.get(k)
        self.db[k] = _dumps(value)
        return None if old is None else _loads(old)

    def get(self, scope, key, default=None):
        b = self.db.get(self._k(scope, key))
        return default if b is None else _loads(b)

    def delete(self, scope, key):
        k = self._k(scope, key)
        old = self.db.get(k)
        if old is not None:
            del self.db[k]
        return None if old is None else _loads(old)

    def update(self, scope, key, ops):
        k = self._k(scope, key)
        old, new = apply_update_ops(self.db[k])
        self.db[k] = _dumps(new)
        return (old, new, [])

    def list(self, scope):
        prefix = scope.encode() + b"\0"
        out = []
        for k, v in self.db.items(from_key=prefix):
            if not k.startswith(prefix):
                break
            out.append(_loads(v))
        return out

    def close(self):
        self.db.close()
