"""``python -m bench``: pystate against the alternatives (see bench/compare.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import compare  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=compare.__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200_000, help="keys in the workload (default 200,000)")
    ap.add_argument("--only", default=None, help="comma-separated store names to run (the floor always runs)")
    ap.add_argument("--out", default=None, help="write the chart (PNG) here")
    ap.add_argument("--json", default=None, help="write every figure here")
    ap.add_argument("--scaling", action="store_true", help="per-op time and memory from 10,000 to 2,000,000 keys")
    ap.add_argument("--sizes", default=None, help="with --scaling: comma-separated key counts")
    ap.add_argument("--scaling-child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.scaling_child:
        print(json.dumps(compare._scaling_child(args.scaling_child[0], int(args.scaling_child[1]))))
        return 0
    if args.keys < 1000:
        ap.error("--keys: at least 1,000")
    if args.scaling:
        sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else compare.SCALING_SIZES
        rows = compare.scaling(sizes)
        if args.out:
            compare.plot_scaling(rows, args.out)
            print(f"chart: {args.out}")
        report: object = rows
    else:
        report = compare.compare(args.keys, args.only.split(",") if args.only else None)
        compare.print_table(report)  # type: ignore[arg-type]
        if args.out:
            compare.plot(report, args.out)  # type: ignore[arg-type]
            print(f"\nchart: {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
