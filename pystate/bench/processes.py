"""Several processes on one store (``pystate bench --processes``).

Three measurements, all in one run, each against what a Python program
would use instead:

- throughput: PROCESSES processes at once on one store of KEYS keys over 8
  scopes (~210-byte JSON objects), each op a separate call as a user makes
  it, for a 90% get / 10% set and a 50% / 50% mix; aggregate ops/s of
  pystate (default options: sync="interval"), lmdb (sync=False, one
  transaction per op), sqlite3 (WAL, synchronous=NORMAL) and diskcache;
- joining: a new process opening a JOIN_KEYS-key store that another process
  holds open and serving its first get, against a pure-Python append-log
  replay of the same data (and against opening the store alone, which
  recovers it);
- memory: what one more process holding every scope of a MEMORY_KEYS-key
  store costs (RSS), against the dict + orjson floor holding the same data.

Every process is started fresh (multiprocessing's "spawn"), so nothing is
inherited: each opens the store itself, as a gunicorn worker would.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any, Callable

from pystate.bench.durable_impls import DiskCache, Lmdb, PyLog, Sqlite
from pystate.bench.workload import SCOPES, make_keys, make_value

PROCESSES = 4
KEYS = 100_000
JOIN_KEYS = 200_000
MEMORY_KEYS = 1_000_000
DURATION = 3.0
MIXES = {"90% get / 10% set": 0.9, "50% get / 50% set": 0.5}


def _pystate(path: str) -> Any:
    import pystate

    return pystate.State(path)


#: name -> (factory(directory), module it needs or None)
STORES: dict[str, tuple[Callable[[str], Any], str | None]] = {
    "pystate (sync=interval)": (_pystate, None),
    "lmdb (sync=False)": (Lmdb, "lmdb"),
    "sqlite3 (WAL, NORMAL)": (Sqlite, None),
    "diskcache": (DiskCache, "diskcache"),
}
PYSTATE = "pystate (sync=interval)"


def _available(name: str) -> bool:
    module = STORES[name][1]
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _fill(name: str, path: str, n: int) -> None:
    st = STORES[name][0](path)
    for i, (scope, key) in enumerate(make_keys(n)):
        st.set(scope, key, make_value(i))
    st.close()


def _worker(name: str, path: str, n_keys: int, get_share: float, seed: int, duration: float,
            barrier: Any, out: Any) -> None:
    st = STORES[name][0](path)
    keys = make_keys(n_keys)
    rng = random.Random(seed)
    plan = [(rng.random() < get_share, keys[rng.randrange(n_keys)]) for _ in range(50_000)]
    value = make_value(seed)
    for s in range(SCOPES):  # each scope once, so every store has it at hand
        st.get(f"scope-{s}", f"key-{s:08d}")
    barrier.wait()
    done, t0 = 0, time.perf_counter()
    end = t0 + duration
    get, put = st.get, st.set
    while True:
        for is_get, (scope, key) in plan[done % 50_000:done % 50_000 + 500]:
            if is_get:
                get(scope, key)
            else:
                put(scope, key, value)
        done += 500
        if time.perf_counter() >= end:
            break
    out.put((done, time.perf_counter() - t0))
    st.close()


def throughput(name: str, tmp: str, n_keys: int, get_share: float, duration: float) -> float:
    """Aggregate ops/s of PROCESSES processes on one store of `name`."""
    path = os.path.join(tmp, "tp-" + str(abs(hash(name))))
    shutil.rmtree(path, ignore_errors=True)
    _fill(name, path, n_keys)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(name, path, n_keys, get_share, 1000 + i, duration, barrier, out))
             for i in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(timeout=120)
    shutil.rmtree(path, ignore_errors=True)
    return sum(n / t for n, t in results)


_HOLD = "import sys, pystate\nst = pystate.State(sys.argv[1])\nst.get('scope-0', 'key-00000000')\nprint('ready', flush=True)\nsys.stdin.read()\nst.close()\n"

_OPEN = textwrap.dedent(
    """
    import sys, time, json, resource
    kind, path = sys.argv[1], sys.argv[2]
    import pystate
    from pystate.bench.durable_impls import PyLog
    t = time.perf_counter()  # (imports done: what is timed is the open)
    st = PyLog(path) if kind == "pylog" else pystate.State(path)
    v = st.get("scope-7", "key-00000007")
    dt = time.perf_counter() - t
    assert v is not None
    print(json.dumps({"ms": dt * 1000}))
    """
)

_RSS = textwrap.dedent(
    """
    import sys, json, time
    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    kind, path = sys.argv[1], sys.argv[2]
    import pystate
    from pystate.bench.durable_impls import PyLog
    before = rss()
    if kind == "pystate":
        st = pystate.State(path)
        for s in st.list_groups():  # every scope in this process's memory
            st.get(s, "key-00000000")
    else:  # the floor: the same keys and values in a dict + orjson
        from pystate.bench.workload import DictFloor, make_keys, make_value
        keys = make_keys(int(path))
        before = rss()
        st = DictFloor()
        for i, (scope, key) in enumerate(keys):
            st.set(scope, key, make_value(i))
    print(json.dumps({"bytes": rss() - before}))
    """
)


def _child(code: str, *args: str) -> dict:
    import json

    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def join(tmp: str, n_keys: int) -> dict:
    """A new process's open + first get, with the store held open by another
    process, against a pure-Python append-log replay of the same data."""
    store, log = os.path.join(tmp, "join-store"), os.path.join(tmp, "join-log")
    for p in (store, log):
        shutil.rmtree(p, ignore_errors=True)
    _fill(PYSTATE, store, n_keys)
    pl = PyLog(log)
    for i, (scope, key) in enumerate(make_keys(n_keys)):
        pl.set(scope, key, make_value(i))
    pl.close()
    out: dict[str, Any] = {"keys": n_keys}
    out["pylog_replay_ms"] = min(_child(_OPEN, "pylog", log)["ms"] for _ in range(3))
    out["alone_open_ms"] = min(_child(_OPEN, "pystate", store)["ms"] for _ in range(3))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, store], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        out["join_ms"] = min(_child(_OPEN, "pystate", store)["ms"] for _ in range(3))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=120)
    out["join_ratio"] = out["join_ms"] / out["pylog_replay_ms"]
    out["alone_ratio"] = out["alone_open_ms"] / out["pylog_replay_ms"]
    for p in (store, log):
        shutil.rmtree(p, ignore_errors=True)
    return out


def memory(tmp: str, n_keys: int) -> dict:
    """RSS one more process takes to hold every scope of an n_keys store
    (another process holding it open), and the dict + orjson floor's for
    the same keys and values."""
    store = os.path.join(tmp, "mem-store")
    shutil.rmtree(store, ignore_errors=True)
    _fill(PYSTATE, store, n_keys)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, store], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        mine = _child(_RSS, "pystate", store)["bytes"]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=120)
    floor = _child(_RSS, "floor", str(n_keys))["bytes"]
    shutil.rmtree(store, ignore_errors=True)
    return {"keys": n_keys, "pystate_rss_mib": mine / 2**20, "floor_rss_mib": floor / 2**20,
            "ratio": mine / floor}


def run(quick: bool = False, only: list[str] | None = None) -> dict:
    n_keys = 5_000 if quick else KEYS
    duration = 0.5 if quick else DURATION
    tmp = tempfile.mkdtemp(prefix="pystate-bench-processes-")
    report: dict[str, Any] = {"processes": PROCESSES, "keys": n_keys, "scopes": SCOPES,
                              "duration_s": duration, "throughput": {}, "skipped": {}}
    try:
        for name in STORES:
            if only and name not in only and name != PYSTATE:
                continue
            if not _available(name):
                report["skipped"][name] = f"{STORES[name][1]} is not installed"
                print(f"{name}: skipped ({STORES[name][1]} is not installed)", file=sys.stderr, flush=True)
                continue
            row = {}
            for mix, share in MIXES.items():
                row[mix] = throughput(name, tmp, n_keys, share, duration)
                print(f"  {name:26} {mix:20} {row[mix]:>12,.0f} ops/s", flush=True)
            report["throughput"][name] = row
        report["join"] = join(tmp, 5_000 if quick else JOIN_KEYS)
        report["memory"] = memory(tmp, 5_000 if quick else MEMORY_KEYS)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def print_report(report: dict) -> None:
    tp = report["throughput"]
    base = tp.get(PYSTATE, {})
    print(f"\n{report['processes']} processes on one store of {report['keys']:,} keys over "
          f"{report['scopes']} scopes, aggregate ops/s (x: pystate's over it)")
    print(f"{'store':28}" + "".join(f"{mix:>26}" for mix in MIXES))
    for name, row in tp.items():
        cells = ""
        for mix in MIXES:
            ratio = "" if name == PYSTATE else f" ({base.get(mix, 0) / row[mix]:.1f}x)"
            cells += f"{row[mix]:>16,.0f}{ratio:>10}"
        print(f"{name:28}{cells}")
    j = report["join"]
    print(f"\njoining a {j['keys']:,}-key store another process holds open: open + first get "
          f"{j['join_ms']:.1f} ms = {j['join_ratio']:.3f} of a pure-Python append-log replay "
          f"({j['pylog_replay_ms']:.0f} ms); opening it alone (recovery): {j['alone_open_ms']:.0f} ms "
          f"= {j['alone_ratio']:.2f}")
    m = report["memory"]
    print(f"one more process holding all {m['keys']:,} keys: {m['pystate_rss_mib']:.0f} MiB RSS, "
          f"{m['ratio']:.2f} of the dict + orjson floor ({m['floor_rss_mib']:.0f} MiB)")


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tp = report["throughput"]
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / max(1, len(tp))
    for j, (name, row) in enumerate(tp.items()):
        xs = [i + j * width for i in range(len(MIXES))]
        ax.bar(xs, [row[m] for m in MIXES], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(MIXES))])
    ax.set_xticklabels(list(MIXES))
    ax.set_yscale("log")
    ax.set_ylabel("aggregate ops/s (log scale; higher is faster)")
    ax.set_title(f"{report['processes']} processes on one store, {report['keys']:,} keys, one run")
    ax.legend(fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
