"""The bindings of the C core side by side: time per call for each backend
this interpreter has (CPython: Cython and cffi; PyPy: cffi), and with
``--python`` the same under another interpreter, such as a PyPy virtual
environment with pystate installed, in the same run.

Each store runs the workload twice and the second pass is timed, so PyPy's
JIT is measured warm, and so is everything else. Ratios are to CPython's
Cython binding.

    python bench/backends.py [--keys 100000] [--python /path/to/pypy-venv/bin/python]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time

from pystate.bench.workload import SCOPES, UPDATE_OPS, BoundStore, make_keys, make_value

OPS = ("insert", "overwrite", "get hit", "get miss", "update", "list", "delete")


def _stores() -> dict:
    out = {}
    try:
        from pystate._core import Store as CyStore

        out["cython"] = CyStore
    except ImportError:  # PyPy builds only the cffi binding
        pass
    from pystate._cffi.core import Store as CfStore

    out["cffi"] = CfStore
    return out


def _pass(store_cls: type, keys: list, values: list, values2: list) -> dict:
    st = BoundStore(store_cls)
    n = len(keys)
    scopes = sorted({s for s, _ in keys})
    timings = {}
    steps = [
        ("insert", lambda: [st.set(s, k, values[i]) for i, (s, k) in enumerate(keys)], n),
        ("overwrite", lambda: [st.set(s, k, values2[i]) for i, (s, k) in enumerate(keys)], n),
        ("get hit", lambda: [st.get(s, k) for s, k in keys], n),
        ("get miss", lambda: [st.get(s, "missing-" + k) for s, k in keys], n),
        ("update", lambda: [st.update(s, k, UPDATE_OPS) for s, k in keys], n),
        ("list", lambda: [st.list(s) for s in scopes], len(scopes)),
        ("delete", lambda: [st.delete(s, k) for s, k in keys], n),
    ]
    gc.collect()
    gc.disable()
    try:
        for name, run, calls in steps:
            t = time.perf_counter_ns()
            run()
            timings[name] = (time.perf_counter_ns() - t) / calls / 1000
    finally:
        gc.enable()
        st.close()
    return timings


def measure(n_keys: int) -> dict:
    keys = make_keys(n_keys, SCOPES)
    values = [make_value(i) for i in range(n_keys)]
    values2 = [make_value(i + 1) for i in range(n_keys)]
    impl = platform.python_implementation()
    rows = {}
    for backend, cls in _stores().items():
        _pass(cls, keys, values, values2)  # warm-up (PyPy's JIT), not reported
        rows[f"{impl} {platform.python_version()}, {backend}"] = _pass(cls, keys, values, values2)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--python", default=None, help="another interpreter with pystate installed (e.g. PyPy)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    rows = measure(args.keys)
    if args.child:
        print(json.dumps(rows))
        return 0
    if args.python:
        env = {k: v for k, v in os.environ.items() if k != "PYSTATE_BACKEND"}
        r = subprocess.run([args.python, os.path.abspath(__file__), "--child", "--keys", str(args.keys)],
                           capture_output=True, text=True, check=True, env=env, cwd="/")
        rows.update(json.loads(r.stdout))
    base = next((v for k, v in rows.items() if k.startswith("CPython") and k.endswith("cython")), None)
    print(f"\n{args.keys:,} keys over {SCOPES} scopes, µs per call (second pass, gc off)"
          + ("; in brackets: ratio to CPython's Cython binding" if base else "") + "\n")
    print(f"{'interpreter, backend':34}" + "".join(f"{op:>17}" for op in OPS))
    for name, t in rows.items():
        cells = "".join(
            f"{t[op]:>9.2f}" + (f" ({t[op] / base[op]:4.2f})" if base else " " * 7) + " " for op in OPS)
        print(f"{name:34}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
