"""SIGKILL: a writer process is killed at random moments; every write it
acknowledged must be there after reopening, and nothing else but at most
the one write that was in flight. Kills also land at each step of a
compaction. Bounded in count and in time."""

from __future__ import annotations

import copy
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import pytest

import crashkit
import pystate

KIT = os.path.join(os.path.dirname(__file__), "crashkit.py")


def writer(path, sync, seed, start, hook=None):
    args = [sys.executable, KIT, path, sync, str(seed), str(start)] + ([hook] if hook else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def last_ack(lines, start):
    # A line cut short by the kill was never fully acknowledged.
    acks = [int(line.split()[1]) for line in lines if line.startswith("ack ") and line.endswith("\n")]
    assert acks == list(range(start, start + len(acks))), "acks out of order"
    return acks[-1] if acks else start - 1


def reopen_and_compare(path, sync, acked, in_flight):
    """The store must hold `acked`, or `in_flight` (acked plus the write the
    kill interrupted). Returns what it holds."""
    # A kill inside a pwrite that crosses a page boundary can leave part of
    # a record behind (the kernel checks for fatal signals between pages):
    # a torn tail, cut off at open. That write was never acknowledged.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pystate.RecoveryWarning)
        st = pystate.State(path, sync=sync)
    try:
        actual = crashkit.snapshot(st)
        assert actual in (acked, in_flight), "acknowledged write lost or unwritten change present"
        chk = st.check()
        assert chk["ok"], chk["problem"]
        assert st.stats()["recovery"]["torn_tails"] <= 1
    finally:
        st.close()
    leftovers = [f for f in os.listdir(path) if ".tmp-" in f]  # temporaries are removed at open
    assert leftovers == []
    return actual


def kill_cycles(path, sync, seed, kills, budget_s):
    rng = random.Random(seed)
    model, start, done = {}, 0, 0
    t0 = time.monotonic()
    while done < kills and time.monotonic() - t0 < budget_s:
        p = writer(path, sync, seed, start)
        want = rng.randrange(1, 150)
        lines = []
        for line in p.stdout:
            lines.append(line)
            if len(lines) >= want:
                break
        time.sleep(rng.random() * 0.003)  # land anywhere in the next write
        p.send_signal(signal.SIGKILL)
        lines += p.stdout.read().splitlines(keepends=True)  # acks already in the pipe count
        p.wait()
        err = p.stderr.read()
        p.stdout.close()
        p.stderr.close()
        assert p.returncode == -signal.SIGKILL, err
        last = last_ack(lines, start)
        for i in range(start, last + 1):
            crashkit.apply_model(model, crashkit.op(seed, i))
        flight = copy.deepcopy(model)
        crashkit.apply_model(flight, crashkit.op(seed, last + 1))
        model = reopen_and_compare(path, sync, model, flight)
        start = last + 2  # the in-flight write is settled either way
        done += 1
    return done


@pytest.mark.parametrize(
    "sync, seed, kills",
    [("never", 1, 60), ("never", 2, 40), ("interval", 3, 40), ("always", 4, 30), ("always", 5, 20)],
)
def test_sigkill_loses_no_acknowledged_write(tmp_path, sync, seed, kills):
    # Odd seeds make the writer compact every few KiB of dead data, so
    # kills also land inside automatic compactions.
    done = kill_cycles(str(tmp_path / "store"), sync, seed, kills, budget_s=90)
    assert done >= min(kills, 15), f"only {done} kill cycles fit in the time budget"


@pytest.mark.parametrize("step", ["written", "synced", "renamed", "done"])
@pytest.mark.parametrize("round_", range(3))
def test_sigkill_at_each_step_of_a_compaction(tmp_path, step, round_):
    path = str(tmp_path / "store")
    seed = 100 + round_
    p = writer(path, "never", seed, 0, hook=step)
    lines = []
    for line in p.stdout:
        lines.append(line)
        if line.startswith("hook"):
            break
    p.send_signal(signal.SIGKILL)
    p.wait()
    err = p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    assert lines and lines[-1].startswith("hook " + step), err
    last = last_ack(lines, 0)
    assert last == 29  # the compaction ran after the 30th acknowledged write
    model = {}
    for i in range(last + 1):
        crashkit.apply_model(model, crashkit.op(seed, i))
    # Nothing was in flight: only the compaction, which must not show.
    reopen_and_compare(path, "never", model, model)
