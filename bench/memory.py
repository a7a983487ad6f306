"""Memory for N keys of the core workload: pystate against the dict floor.

Each store is filled in a fresh subprocess and measured as growth of the
process's resident set size (RSS), the memory the operating system really
gives it, from just before the first insert to just after the last.

    python bench/memory.py [--keys 1000000]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure(impl: str, n: int) -> dict:
    import pystate
    from pystate.bench.workload import DictFloor, make_value

    st = pystate.State() if impl == "pystate" else DictFloor()
    gc.collect()
    before = rss_bytes()
    for i in range(n):
        # Keys and values are made on the fly, so the floor pays for the key
        # strings it keeps and pystate (which copies them) does not.
        st.set(f"scope-{i % 8}", f"key-{i:08d}", make_value(i))
    gc.collect()
    grown = rss_bytes() - before
    return {"impl": impl, "keys": n, "rss_growth": grown, "bytes_per_key": grown / n}


def run(n: int) -> dict:
    out = {}
    for impl in ("dict_floor", "pystate"):
        r = subprocess.run(
            [sys.executable, __file__, "--child", impl, "--keys", str(n)],
            capture_output=True, text=True, check=True,
        )
        out[impl] = json.loads(r.stdout)
    out["ratio"] = out["pystate"]["rss_growth"] / out["dict_floor"]["rss_growth"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--child", choices=["dict_floor", "pystate"])
    a = p.parse_args()
    if a.child:
        print(json.dumps(measure(a.child, a.keys)))
        return
    r = run(a.keys)
    for impl in ("dict_floor", "pystate"):
        m = r[impl]
        print(f"{impl:10s} {m['rss_growth'] / 2**20:8.1f} MiB  {m['bytes_per_key']:6.1f} B/key")
    print(f"ratio pystate / dict floor: {r['ratio']:.2f}  (target <= 0.75)")


if __name__ == "__main__":
    main()
