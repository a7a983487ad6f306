"""Set (insert) of the benchmark workload: this build against another build
of pystate, in alternating subprocesses, paired by round.

One process cannot import two builds of the same extension, so each pass
runs in a fresh interpreter; rounds alternate A, B, A, B... so the drift of
a noisy machine hits both alike. Used for "set with no triggers against the
core issue's set": build the commit before triggers into a directory and
pass it as --other.

    git worktree add /tmp/pystate-old <commit>
    pip install --no-build-isolation --no-deps --target /tmp/pystate-old-site /tmp/pystate-old
    python bench/ab_set.py --other /tmp/pystate-old-site
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# The workload module is read from this checkout's file, not imported from
# the pystate being measured: the other build may predate it.
WORKLOAD = HERE.parent / "pystate" / "bench" / "workload.py"

PASS = """
import gc, importlib.util, os, sys, time
other = os.environ.get("PYSTATE_AB_OTHER")
if other:
    # An editable install answers imports before sys.path is searched.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__]
    sys.path.insert(0, other)
spec = importlib.util.spec_from_file_location("workload", {workload!r})
workload = importlib.util.module_from_spec(spec)
spec.loader.exec_module(workload)
make_keys, make_value = workload.make_keys, workload.make_value
import pystate
keys = make_keys({n})
values = [make_value(i) for i in range({n})]
best = None
for _ in range(3):
    st = pystate.State()
    set_ = st.set
    gc.collect(); gc.disable()
    t = time.perf_counter()
    for (s, k), v in zip(keys, values):
        set_(s, k, v)
    dt = time.perf_counter() - t
    gc.enable(); st.close()
    best = dt if best is None else min(best, dt)
print(pystate.__file__, best)
"""


def one_pass(pythonpath: str | None, n: int) -> tuple[str, float]:
    env = dict(os.environ)
    env.pop("PYSTATE_AB_OTHER", None)
    if pythonpath:
        env["PYSTATE_AB_OTHER"] = pythonpath
    out = subprocess.run(
        [sys.executable, "-c", PASS.format(workload=str(WORKLOAD), n=n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd="/",  # never import the source tree by accident
    ).stdout.split()
    return out[0], float(out[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other", required=True, help="a directory holding another build of pystate")
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=9)
    a = ap.parse_args()
    ratios, ours, theirs = [], [], []
    for _ in range(a.rounds):
        where_b, b = one_pass(a.other, a.keys)
        where_a, t = one_pass(None, a.keys)
        ours.append(t)
        theirs.append(b)
        ratios.append(t / b)
    print(f"this build:  {where_a}\nother build: {where_b}")
    print(
        f"insert {a.keys:,} keys: {min(ours) / a.keys * 1e9:.0f} vs {min(theirs) / a.keys * 1e9:.0f} ns/op; "
        f"this / other: paired median {statistics.median(ratios):.3f}, best/best {min(ours) / min(theirs):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
