"""Paired rounds: the one timing discipline every benchmark here uses.

This machine's load drifts by tens of percent over minutes, so pystate and
the alternative it is compared with are measured in pairs: each round times
one pass of the alternative (by hand, in pytest-benchmark's setup) and then
one pass of pystate (by pytest-benchmark), back to back, garbage collector
off for both. pytest-benchmark's statistics are pystate's; the
alternative's times ride along in ``extra_info`` under ``times_key``, and
bench/ratios.py divides them round by round.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable


def gc_off(run: Callable[[Any], Any], arg: Any) -> None:
    """``run(arg)`` with the garbage collector off (the timed pass)."""
    gc.disable()
    try:
        run(arg)
    finally:
        gc.enable()


def no_gc(run: Callable[[Any], Any], arg: Any) -> float:
    """Seconds ``run(arg)`` takes with the garbage collector off."""
    gc.collect()
    t = time.perf_counter()
    gc_off(run, arg)
    return time.perf_counter() - t


def paired(
    benchmark: Any,
    *,
    rounds: int,
    make_base: Callable[[], Any],
    run_base: Callable[[Any], Any],
    make_ours: Callable[[], Any],
    run_ours: Callable[[Any], Any],
    times_key: str = "floor_times",
    fresh: bool = True,
    **extra_info: Any,
) -> None:
    """Benchmark ``run_ours(make_ours())`` against ``run_base(make_base())``,
    one of each per round. ``fresh``: each round's stores are new and are
    closed once used (pystate's when the next round starts, so closing is
    never timed); otherwise they are shared and left open."""
    base_times: list[float] = []
    benchmark.extra_info.update(extra_info)
    benchmark.extra_info[times_key] = base_times
    opened: list[Any] = []

    def setup():
        while opened:
            opened.pop().close()
        base = make_base()
        base_times.append(no_gc(run_base, base))
        if fresh and hasattr(base, "close"):
            base.close()
        ours = make_ours()
        if fresh and hasattr(ours, "close"):
            opened.append(ours)
        gc.collect()
        return (ours,), {}

    benchmark.pedantic(lambda ours: gc_off(run_ours, ours), setup=setup, rounds=rounds)
    while opened:
        opened.pop().close()
