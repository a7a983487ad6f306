"""Print pystate's ratios against the alternatives from a pytest-benchmark
JSON file, next to the issues' targets: the in-memory core against the
dict floor (bench/test_core.py, optionally with memory from
bench/memory.py), the file store against the durable alternatives
(bench/test_durable.py).

    python -m pytest bench/test_core.py --benchmark-json=bench-core.json
    python bench/ratios.py bench-core.json --memory
    python -m pytest bench/test_durable.py --benchmark-json=bench-durable.json
    python bench/ratios.py bench-durable.json
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
    "update": 0.75,
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


def durable(path: str) -> None:
    data = json.loads(Path(path).read_text())
    ours, paired, alone, disk = {}, {}, {}, None
    for b in data["benchmarks"]:
        ei = b["extra_info"]
        n = ei["ops_per_round"]
        if ei["op"] == "disk":
            disk = ei
        elif "other" in ei:
            mine, theirs = b["stats"]["data"], ei["other_times"]
            ratios = sorted(m / t for m, t in zip(mine, theirs))
            ours[ei["op"]] = min(mine) / n
            paired[ei["op"]] = (ei["other"], min(theirs) / n, ratios[len(ratios) // 2])
        else:
            alone[(ei["op"], ei["impl"])] = b["stats"]["min"] / n

    def line(what, ratio, target, higher=False):
        ok = ratio >= target if higher else ratio <= target
        print(f"{what:52s} {ratio:6.2f}   target {'>=' if higher else '<='} {target:<4}  "
              f"{'met' if ok else 'MISSED'}")

    print(f"{'us/op':10s}{'pystate':>10s}{'pylog':>10s}{'lmdb':>10s}{'sqlite':>10s}")
    for op in ("insert", "overwrite", "update", "delete"):
        if op in ours:
            row = [ours[op], paired[op][1], alone.get((op, "lmdb"), float("nan")),
                   alone.get((op, "sqlite"), float("nan"))]
            print(f"{op:10s}" + "".join(f"{x * 1e6:10.2f}" for x in row))
    print()
    targets = {"insert": 0.6, "overwrite": 0.6, "delete": 0.6, "update": 0.5}
    for op, target in targets.items():
        if op in paired:
            line(f"{op}: pystate / pure-Python log (paired median)", paired[op][2], target)
    for op in ("insert", "overwrite", "delete"):
        if (op, "lmdb") in alone:
            line(f"{op}: pystate / lmdb (best / best)", ours[op] / alone[(op, "lmdb")], 0.3)
    if "get" in paired:
        line("get: file store / in memory (paired median)", paired["get"][2], 1.1)
    if "reopen" in paired:
        line("reopen of all keys: pystate / pure-Python log replay", paired["reopen"][2], 0.2)
    if "always_1" in paired:
        line("sync=always, one writer: pystate / write+fdatasync", paired["always_1"][2], 1.1)
    for scopes in ("shared", "separate"):
        p = paired.get(f"always_4_{scopes}")
        if p:  # time with 4 threads / time with 1 -> throughput gain is its inverse
            line(f"sync=always: throughput of 4 threads / 1, {scopes} scope", 1 / p[2], 2.0, higher=True)
    if disk:
        line("disk after compaction / live keys and values", disk["ratio"], 1.1)


def triggers(path: str) -> None:
    """The trigger suite: set with many triggers elsewhere against set with
    none, and the end-to-end event rate."""
    data = json.loads(Path(path).read_text())
    for b in data["benchmarks"]:
        ei = b["extra_info"]
        n, ours, base = ei["ops_per_round"], b["stats"]["data"], ei["floor_times"]
        paired = sorted(p / f for p, f in zip(ours, base))
        med = paired[len(paired) // 2]
        if ei["op"] == "set_other_triggers":
            print(
                f"set, 10,000 triggers on other scopes / set, none: paired median {med:.3f}, "
                f"best/best {min(ours) / min(base):.3f} (target <= 1.10: {'met' if med <= 1.10 else 'MISSED'}); "
                f"{min(base) / n * 1e9:.0f} vs {min(ours) / n * 1e9:.0f} ns/op"
            )
        elif ei["op"] == "events_end_to_end":
            rates = sorted(n / t for t in ours)
            print(
                f"events to one no-op handler, end to end: median {rates[len(rates) // 2]:,.0f}/s, "
                f"best {rates[-1]:,.0f}/s (target >= 200,000: {'met' if rates[len(rates) // 2] >= 200_000 else 'MISSED'}); "
                f"write+dispatch / write alone: paired median {med:.2f}"
            )


REDIS_TARGETS = {"set": 1.15, "get": 1.15, "update": 1.3, "list_25000": 1.1}


def redis_suite(path: str) -> None:
    """The redis adapter against plain redis-py, paired rounds."""
    data = json.loads(Path(path).read_text())
    print(f"{'op':12s} {'redis-py us/op':>15s} {'pystate us/op':>14s} {'paired med':>11s} {'target':>7s}")
    for b in data["benchmarks"]:
        ei = b["extra_info"]
        n, ours, base = ei["ops_per_round"], b["stats"]["data"], ei["floor_times"]
        paired = sorted(p / f for p, f in zip(ours, base))
        med = paired[len(paired) // 2]
        target = REDIS_TARGETS[ei["op"]]
        print(
            f"{ei['op']:12s} {min(base) / n * 1e6:15.2f} {min(ours) / n * 1e6:14.2f} {med:11.2f} "
            f"{'<=' + str(target):>7s}  {'met' if med <= target else 'MISSED'}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="pytest-benchmark --benchmark-json output")
    ap.add_argument("--memory", action="store_true", help="also measure memory for --keys keys")
    ap.add_argument("--keys", type=int, default=1_000_000)
    a = ap.parse_args()
    suites = {b["extra_info"].get("suite") for b in json.loads(Path(a.json).read_text())["benchmarks"]}
    if "durable" in suites:
        durable(a.json)
        return 0
    if "triggers" in suites:
        triggers(a.json)
        return 0
    if "redis" in suites:
        redis_suite(a.json)
        return 0
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
