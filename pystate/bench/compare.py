"""pystate against the alternatives, on one generated workload, in one run.

Every store offers State's calls with State's return values (the old value
from set and delete, old and new from update). Each operation is timed call
by call over the whole workload (200,000 keys over 8 scopes, ~210-byte JSON
objects; ``--keys`` to change it), giving mean, p50 and p99; the table shows
each store's mean as a ratio to the dict + orjson floor measured in the same
run. ``sync="always"`` pays an fdatasync per write, so its writes are timed
on the first 2,000 keys only (marked ``*``). Each row says what an
acknowledged write survives.

    pystate bench [--keys 200000 | --quick] [--out DIR | --out FILE.png] [--json FILE]
    pystate bench --scaling [--out DIR | --out FILE.png]

(``python -m pystate.bench``, and ``python -m bench`` in a source checkout,
are the same.) An alternative whose module is not installed is skipped with
a line saying how to install it; redis is measured when ``redis-server`` is
on PATH (this run starts its own, on a free loopback port).
"""

from __future__ import annotations

import gc
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from pystate.bench import INSTALL
from pystate.bench.durable_impls import DiskCache, Lmdb, PyLog, Rocks, Sqlite
from pystate.bench.workload import (
    KEYS,
    SCOPES,
    UPDATE_OPS,
    BoundStore,
    DictFloor,
    apply_update_ops,
    make_keys,
    make_value,
)

OPS = ("insert", "overwrite", "get hit", "get miss", "update", "list", "delete")
SLOW_SAMPLE = 2_000


class _Redis:
    """redis-py to a redis-server of this run: one hash per scope, as the
    engine lays it out; set/delete read the old value in the same pipeline."""

    def __init__(self, url: str) -> None:
        import orjson
        import redis

        self.r = redis.Redis.from_url(url)
        self.r.flushall()
        self._loads, self._dumps = orjson.loads, orjson.dumps

    def set(self, scope, key, value):
        p = self.r.pipeline()
        p.hget("state:" + scope, key)
        p.hset("state:" + scope, key, self._dumps(value))
        old = p.execute()[0]
        return None if old is None else self._loads(old)

    def get(self, scope, key, default=None):
        b = self.r.hget("state:" + scope, key)
        return default if b is None else self._loads(b)

    def delete(self, scope, key):
        p = self.r.pipeline()
        p.hget("state:" + scope, key)
        p.hdel("state:" + scope, key)
        old = p.execute()[0]
        return None if old is None else self._loads(old)

    def update(self, scope, key, ops):
        old, new = apply_update_ops(self.r.hget("state:" + scope, key))
        self.r.hset("state:" + scope, key, self._dumps(new))
        return (old, new, [])

    def list(self, scope):
        return [self._loads(v) for v in self.r.hvals("state:" + scope)]

    def close(self):
        self.r.close()


def _pystate(binding: str, **kw: Any) -> Callable[[str], Any]:
    # A binding's Store ("pystate._core": Cython, "pystate._cffi.core": cffi)
    # under the write path, whatever PYSTATE_BACKEND chose for this process,
    # so both are measured in the same run.
    store = importlib.import_module(binding).Store
    return lambda d: BoundStore(store, d, **kw) if kw.get("sync") else BoundStore(store)


_CY, _CF = "pystate._core", "pystate._cffi.core"


# name -> (factory(directory), durable on disk?, what an acknowledged write survives)
STORES: dict[str, tuple[Callable[[str], Any], bool, str]] = {
    "dict + orjson (floor)": (lambda d: DictFloor(), False, "nothing: process memory"),
    "pystate, memory": (_pystate(_CY), False, "nothing: process memory"),
    "pystate, file, sync=never": (_pystate(_CY, sync="never"), True, "a killed process"),
    "pystate, file, sync=interval": (_pystate(_CY, sync="interval"), True,
                                     "a killed process; a machine crash loses up to 5 s"),
    "pystate, file, sync=always": (_pystate(_CY, sync="always"), True, "a killed process and a machine crash"),
    "pystate cffi, memory": (_pystate(_CF), False, "nothing: process memory"),
    "pystate cffi, file, sync=interval": (_pystate(_CF, sync="interval"), True,
                                          "a killed process; a machine crash loses up to 5 s"),
    "Python append log": (PyLog, True, "a killed process (flushed, not synced)"),
    "lmdb (sync=False)": (Lmdb, True, "a killed process"),
    "sqlite3 (WAL, NORMAL)": (Sqlite, True, "a killed process; a machine crash may lose the last commits"),
    "diskcache": (DiskCache, True, "a killed process"),
    "rocksdict": (Rocks, True, "a killed process (WAL not synced)"),
    "redis-py + redis-server": (None, False, "a killed client; nothing if the server stops (no persistence)"),  # type: ignore[dict-item]
}
FLOOR, REDIS = "dict + orjson (floor)", "redis-py + redis-server"

#: The module each alternative needs beyond pystate's own dependencies: the
#: bench extra brings them; one that is missing skips its row.
NEEDS = {"lmdb (sync=False)": "lmdb", "diskcache": "diskcache", "rocksdict": "rocksdict", REDIS: "redis"}


def missing(name: str) -> str | None:
    """Why the store `name` cannot run here (a module it needs is not
    installed), or None."""
    module = NEEDS.get(name)
    if module is None:
        return None
    try:
        importlib.import_module(module)
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name == module:
            return f"{module} is not installed ({INSTALL})"
        return f"{module} cannot be imported: {e} ({INSTALL})"
    return None


def _timed(calls: Callable[[int], Any], n: int) -> list[int]:
    now = time.perf_counter_ns
    lat = [0] * n
    for i in range(n):
        t = now()
        calls(i)
        lat[i] = now() - t
    return lat


def _summary(lat: list[int], sampled: bool = False) -> dict[str, Any]:
    s = sorted(lat)
    return {
        "mean_us": statistics.fmean(s) / 1000,
        "p50_us": s[len(s) // 2] / 1000,
        "p99_us": s[min(len(s) - 1, int(len(s) * 0.99))] / 1000,
        "calls": len(s),
        "sampled": sampled,
    }


def _disk_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def run_store(name: str, keys: list, values: list, values2: list, tmp: str, redis_url: str | None) -> dict:
    make, durable, survives = STORES[name]
    if make is None:  # redis: compare() started its server
        assert redis_url is not None
        make = lambda d: _Redis(redis_url)  # noqa: E731
    d = os.path.join(tmp, "".join(c if c.isalnum() else "-" for c in name))
    n = len(keys)
    w = min(n, SLOW_SAMPLE) if "always" in name else n  # writes that fdatasync each
    if w < n:
        # The keys not timed go in first, without a sync per write, so that
        # every store ends up holding the same data.
        import pystate

        with pystate.State(d, sync="never") as pre:
            for i in range(w, n):
                pre.set(*keys[i], values[i])
    st = make(d)
    out: dict[str, Any] = {"survives": survives}
    gc.disable()
    try:
        out["insert"] = _summary(_timed(lambda i: st.set(*keys[i], values[i]), w), w < n)
        out["overwrite"] = _summary(_timed(lambda i: st.set(*keys[i], values2[i]), w), w < n)
        out["get hit"] = _summary(_timed(lambda i: st.get(*keys[i]), n))
        out["get miss"] = _summary(_timed(lambda i: st.get(keys[i][0], "missing-" + keys[i][1]), n))
        out["update"] = _summary(_timed(lambda i: st.update(*keys[i], UPDATE_OPS), w), w < n)
        scopes = sorted({s for s, _ in keys})
        out["list"] = _summary(_timed(lambda i: st.list(scopes[i % len(scopes)]), 3 * len(scopes)))
        if durable:
            st.close()
            out["disk_bytes"] = _disk_bytes(d)
            t = time.perf_counter_ns()
            st = make(d)  # replays or maps what is on disk
            out["reopen_ms"] = (time.perf_counter_ns() - t) / 1e6
            assert st.get(*keys[-1]) is not None, f"{name}: lost data across reopen"
        out["delete"] = _summary(_timed(lambda i: st.delete(*keys[i]), w), w < n)
    finally:
        gc.enable()
        close = getattr(st, "close", None)
        if close is not None:
            close()
    return out


def compare(n_keys: int, only: list[str] | None = None) -> dict:
    keys = make_keys(n_keys, SCOPES)
    values = [make_value(i) for i in range(n_keys)]
    values2 = [make_value(i + 1) for i in range(n_keys)]
    selected = [name for name in STORES
                if not only or name == FLOOR or any(o.lower() in name.lower() for o in only)]
    skipped = {name: why for name, why in ((name, missing(name)) for name in selected) if why}
    tmp = tempfile.mkdtemp(prefix="pystate-compare-")
    redis_proc, redis_url = None, None
    results: dict[str, Any] = {}
    try:
        if REDIS in selected and REDIS not in skipped:
            if shutil.which("redis-server") is None:
                skipped[REDIS] = "redis-server is not on PATH (Debian: apt-get install redis-server)"
            else:
                from pystate.bench.redis_server import start_redis

                try:
                    redis_proc, redis_url = start_redis(tmp)
                except Exception as e:  # noqa: BLE001 - the row is skipped, saying why
                    skipped[REDIS] = f"redis-server did not start: {e}"
        for name in selected:
            if name in skipped:
                print(f"  {name}: skipped: {skipped[name]}", file=sys.stderr, flush=True)
                results[name] = {"skipped": skipped[name]}
                continue
            print(f"  {name} ...", file=sys.stderr, flush=True)
            results[name] = run_store(name, keys, values, values2, tmp, redis_url)
    finally:
        if redis_proc is not None:
            redis_proc.kill()
            redis_proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    floor = results[FLOOR]
    for r in results.values():
        if "skipped" not in r:
            r["ratio"] = {op: r[op]["mean_us"] / floor[op]["mean_us"] for op in OPS}
    return {"keys": n_keys, "scopes": SCOPES, "stores": results}


def print_table(report: dict) -> None:
    stores = report["stores"]
    sampled = any(isinstance(r.get(op), dict) and r[op]["sampled"] for r in stores.values() for op in OPS)
    print(f"\n{report['keys']:,} keys over {report['scopes']} scopes; mean time per call as a ratio to "
          f"the dict + orjson floor (same run)"
          + (f"; * = writes timed on the first {SLOW_SAMPLE:,} keys\n" if sampled else "\n"))
    head = f"{'store':30}" + "".join(f"{op:>11}" for op in OPS) + f"{'reopen ms':>11}{'disk MiB':>10}"
    print(head)
    print("-" * len(head))
    for name, r in stores.items():
        if "skipped" in r:
            print(f"{name:30}  skipped: {r['skipped']}")
            continue
        cells = "".join(f"{r['ratio'][op]:>10.2f}{'*' if r[op]['sampled'] else ' '}" for op in OPS)
        reopen = f"{r['reopen_ms']:>11.0f}" if "reopen_ms" in r else f"{'-':>11}"
        disk = f"{r['disk_bytes'] / 2**20:>10.1f}" if "disk_bytes" in r else f"{'-':>10}"
        print(f"{name:30}{cells}{reopen}{disk}")
    pairs = [("memory", "pystate, memory", "pystate cffi, memory"),
             ("file, sync=interval", "pystate, file, sync=interval", "pystate cffi, file, sync=interval")]
    pairs = [p for p in pairs if "ratio" in stores.get(p[1], {}) and "ratio" in stores.get(p[2], {})]
    if pairs:
        print("\nthe two backends: cffi mean ÷ Cython mean (same run; above 1: cffi slower)")
        for label, cy, cf in pairs:
            print(f"  {label:28}" + "".join(
                f"{op} {stores[cf][op]['mean_us'] / stores[cy][op]['mean_us']:.2f}  " for op in OPS))
    floor = stores["dict + orjson (floor)"]
    print("\nfloor, mean µs per call: " + ", ".join(f"{op} {floor[op]['mean_us']:.2f}" for op in OPS))
    print("\nwhat an acknowledged write survives:")
    for name, r in stores.items():
        if "skipped" not in r:
            print(f"  {name:30} {r['survives']}")


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stores = {k: v for k, v in report["stores"].items() if "skipped" not in v}
    fig, ax = plt.subplots(figsize=(13, 7))
    width = 0.8 / len(stores)
    colours = plt.get_cmap("tab20")
    for j, (name, r) in enumerate(stores.items()):
        xs = [i + j * width for i in range(len(OPS))]
        ax.bar(xs, [r["ratio"][op] for op in OPS], width, label=name, color=colours(j % 20))
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(OPS))])
    ax.set_xticklabels(OPS)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("mean time per call / dict + orjson floor (log scale; lower is faster)")
    ax.set_title(f"pystate and the alternatives, {report['keys']:,} keys over {report['scopes']} scopes, one run")
    # Below the axes: inside, it would hide the tallest bars.
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.07))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


# ---- scaling ---------------------------------------------------------------------------

SCALING_SIZES = (10_000, 100_000, 500_000, 1_000_000, 2_000_000)


def _scaling_child(impl: str, n: int) -> dict:
    import pystate

    st = pystate.State() if impl == "pystate" else DictFloor()
    keys = make_keys(n, SCOPES)
    value = make_value(7)
    gc.collect()
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * 4096
    gc.disable()
    t = time.perf_counter_ns()
    for s, k in keys:
        st.set(s, k, value)
    insert = (time.perf_counter_ns() - t) / n / 1000
    t = time.perf_counter_ns()
    for s, k in keys:
        st.get(s, k)
    get = (time.perf_counter_ns() - t) / n / 1000
    gc.enable()
    with open("/proc/self/statm") as f:
        grown = int(f.read().split()[1]) * 4096 - before
    return {"impl": impl, "keys": n, "insert_us": insert, "get_us": get, "bytes_per_key": grown / n}


def scaling(sizes: tuple[int, ...] = SCALING_SIZES) -> list[dict]:
    import json

    rows = []
    for n in sizes:
        for impl in ("dict_floor", "pystate"):
            r = subprocess.run(
                [sys.executable, "-m", "pystate.bench", "--scaling-child", impl, str(n)],
                capture_output=True, text=True, check=True,
            )
            rows.append(json.loads(r.stdout))
            x = rows[-1]
            print(f"{impl:10} {n:>10,} keys: insert {x['insert_us']:.2f} µs, get {x['get_us']:.2f} µs, "
                  f"{x['bytes_per_key']:.0f} B/key", flush=True)
    return rows


def plot_scaling(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    for impl, label in (("dict_floor", "dict + orjson"), ("pystate", "pystate, memory")):
        rs = [r for r in rows if r["impl"] == impl]
        xs = [r["keys"] for r in rs]
        for ax, field, title in zip(axes, ("insert_us", "get_us", "bytes_per_key"),
                                    ("insert, µs per call", "get, µs per call", "memory, bytes per key (RSS)")):
            ax.plot(xs, [r[field] for r in rs], marker="o", label=label)
            ax.set_xscale("log")
            ax.set_title(title)
            ax.set_xlabel("keys in the store")
    axes[0].legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
