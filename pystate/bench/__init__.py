"""``pystate bench`` (also ``python -m pystate.bench``): pystate against the
alternatives on one generated workload, in one run (see compare.py).

Part of the installed package, so it runs wherever pystate is installed.
The alternatives are not dependencies of pystate: they come with the
``bench`` extra (``pip install 'pystate-store[bench]'``); one that is not
installed is skipped, with a line saying so, and so is the chart without
matplotlib. The source checkout's ``bench/`` directory keeps what needs
the sources: the pytest-benchmark suites, the A/B and backend scripts.

This module imports nothing heavy: ``pystate --help`` builds the bench
parser from it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, NoReturn

__all__ = ["INSTALL", "main", "parser"]

#: How to get every alternative (and matplotlib for the chart).
INSTALL = "pip install 'pystate-store[bench]'"
#: --quick: a smoke run of a few seconds (every store, every op, the chart).
QUICK_KEYS = 1_000
QUICK_SIZES = (1_000, 5_000)


class _Parser(argparse.ArgumentParser):
    # One line and exit 2 for a bad option, as every other pystate command.
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help` for usage\n")


def parser(prog: str = "python -m pystate.bench") -> argparse.ArgumentParser:
    ap = _Parser(
        prog=prog,
        description="pystate in memory and on file (each sync mode) against a dict + orjson floor, a "
        "Python append log, lmdb, sqlite3, diskcache, rocksdict and redis-py + redis-server, on one "
        "workload, in one run. The alternatives come with the bench extra "
        f"({INSTALL}); one that is missing is skipped, and says so.",
    )
    ap.add_argument("--keys", type=int, default=None, help="keys in the workload (default 200,000; at least 1,000)")
    ap.add_argument("--quick", action="store_true",
                    help=f"a smoke run of a few seconds: {QUICK_KEYS:,} keys (with --scaling: "
                    f"{', '.join(f'{n:,}' for n in QUICK_SIZES)} keys)")
    ap.add_argument("--only", default=None, help="comma-separated store names to run (the floor always runs)")
    ap.add_argument("--out", default=None, metavar="PATH",
                    help="where the chart goes: a FILE.png, or a directory (existing, or given with a "
                    "trailing /) that gets compare.png and compare.json (scaling.png, scaling.json with "
                    "--scaling); relative to the working directory. Without it no chart is drawn")
    ap.add_argument("--json", default=None, metavar="FILE", help="write every figure here")
    ap.add_argument("--scaling", action="store_true", help="per-op time and memory from 10,000 to 2,000,000 keys")
    ap.add_argument("--sizes", default=None, help="with --scaling: comma-separated key counts")
    ap.add_argument("--processes", action="store_true",
                    help="several processes on one store: 4 processes' aggregate ops/s against lmdb, "
                    "sqlite3 and diskcache; a new process joining a store another holds open; the "
                    "memory each process holds")
    ap.add_argument("--scaling-child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    return ap


def _outputs(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(chart path, JSON path) that the arguments ask for."""
    name = "scaling" if args.scaling else "processes" if args.processes else "compare"
    chart, report = args.out, args.json
    if chart is not None and (chart.endswith(("/", os.sep)) or os.path.isdir(chart)):
        chart, report = os.path.join(chart, f"{name}.png"), report or os.path.join(chart, f"{name}.json")
    return chart, report


def _writable(path: str) -> str | None:
    """Why `path` cannot be written (its directory is made if missing), or None.
    Asked before the run, which takes minutes, not after it."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        return f"cannot write {path}: {e.strerror or e}"
    if os.path.isdir(path):
        return f"cannot write {path}: it is a directory"
    if not os.access(directory, os.W_OK):
        return f"cannot write {path}: {directory} is not writable"
    return None


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None, prog: str = "python -m pystate.bench") -> int:
    ap = parser(prog)
    args = ap.parse_args(argv)
    from pystate.bench import compare

    if args.scaling_child:
        print(json.dumps(compare._scaling_child(args.scaling_child[0], int(args.scaling_child[1]))))
        return 0
    if args.keys is not None and args.keys < 1000:
        ap.error("--keys: at least 1,000")
    chart, report_path = _outputs(args)
    for path in (chart, report_path):
        problem = path and _writable(path)
        if problem:
            print(f"{prog}: {problem}", file=sys.stderr)
            return 2
    if chart is not None and not _have_matplotlib():
        print(f"chart skipped: matplotlib is not installed ({INSTALL})", file=sys.stderr, flush=True)
        chart = None
    report: Any
    if args.processes:
        from pystate.bench import processes

        report = processes.run(args.quick, args.only.split(",") if args.only else None)
        processes.print_report(report)
        print()
        if chart is not None:
            processes.plot(report, chart)
    elif args.scaling:
        if args.sizes:
            sizes = tuple(int(s) for s in args.sizes.split(","))
        else:
            sizes = QUICK_SIZES if args.quick else compare.SCALING_SIZES
        report = compare.scaling(sizes)
        if chart is not None:
            compare.plot_scaling(report, chart)
    else:
        keys = args.keys or (QUICK_KEYS if args.quick else compare.KEYS)
        report = compare.compare(keys, args.only.split(",") if args.only else None)
        compare.print_table(report)
        print()
        if chart is not None:
            compare.plot(report, chart)
    if report_path is not None:
        with open(report_path, "w") as f:
            json.dump(report, f, indent=2)
        print(f"results: {report_path}")
    if chart is not None:
        print(f"chart: {chart}")
    elif args.out is None:
        print("no chart: give --out DIR or --out FILE.png")
    return 0
