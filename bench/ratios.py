"""Print pystate's time ratios against the dict floor from a
pytest-benchmark JSON file, next to the targets of the core issue, and
optionally measure memory (bench/memory.py) in the same run.

    python -m pytest bench/test_core.py --benchmark-json=bench-core.json
    python bench/ratios.py bench-core.json --memory
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TARGETS = {
    "get_hit": 1.1,
    "get_miss": 1.5,
    "insert": 1.2,
    "overwrite": 1.1,
    "delete": 1.1,
    "update": 0.8,
    "list": 1.0,
}


def table(path: str) -> list[tuple]:
    """(op, floor ns/op, pystate ns/op, ratio of the best passes, median of
    the per-round ratios, target) for each operation benchmarked."""
    data = json.loads(Path(path).read_text())
    out = []
    by_op = {b["extra_info"]["op"]: b for b in data["benchmarks"]}
    for op, target in TARGETS.items():
        b = by_op.get(op)
        if b is None:
            continue
        n = b["extra_info"]["ops_per_round"]
        ours, floor = b["stats"]["data"], b["extra_info"]["floor_times"]
        paired = sorted(p / f for p, f in zip(ours, floor))
        out.append((op, min(floor) / n * 1e9, min(ours) / n * 1e9, min(ours) / min(floor),
                    paired[len(paired) // 2], target))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="pytest-benchmark --benchmark-json output")
    ap.add_argument("--memory", action="store_true", help="also measure memory for --keys keys")
    ap.add_argument("--keys", type=int, default=1_000_000)
    a = ap.parse_args()
    print(f"{'op':10s} {'floor ns/op':>12s} {'pystate ns/op':>14s} {'best/best':>11s} {'paired med':>11s} {'target':>7s}")
    for op, f, p, rmin, rmed, target in table(a.json):
        mark = "met" if rmed <= target else "MISSED"
        print(f"{op:10s} {f:12.0f} {p:14.0f} {rmin:11.2f} {rmed:11.2f} {'<=' + str(target):>7s}  {mark}")
    if a.memory:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import memory

        r = memory.run(a.keys)
        print(
            f"memory     {r['dict_floor']['bytes_per_key']:9.1f} B/key {r['pystate']['bytes_per_key']:10.1f} B/key "
            f"{r['ratio']:11.2f} {'':11s} {'<=0.75':>7s}  {'met' if r['ratio'] <= 0.75 else 'MISSED'}"
            f"   ({a.keys:,} keys, RSS growth)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
