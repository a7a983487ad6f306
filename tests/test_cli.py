"""`python -m pystate demo`: the first command README gives."""

from __future__ import annotations

import subprocess
import sys


def test_demo_writes_updates_lists_and_reads_back(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pystate", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert 'update users/ada         -> {"name":"Ada","visits":1,"tags":["math"]}' in out
    assert "op 2 skipped: increment.not_number" in out
    assert 'list_groups              -> ["users"]' in out
    assert "trigger state::get" in out
    assert 'trigger on users/ada     -> state:created users/ada -> {"name":"Ada","visits":0,"tags":[]}' in out
    assert 'trigger on users/ada     -> state:updated users/ada -> {"name":"Ada","visits":1,"tags":["math"]}' in out
    assert "grace" not in "".join(line for line in out.splitlines() if line.startswith("trigger on"))


def test_unknown_command_exits_with_usage(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pystate", "nope"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "usage" in r.stderr


def test_demo_file_store_keeps_writes_across_runs(tmp_path):
    store = tmp_path / "store"
    outs = []
    for _ in range(2):
        r = subprocess.run(
            [sys.executable, "-m", "pystate", "demo", "--path", str(store)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert "reopened, counters/runs  -> 1" in outs[0]
    assert "reopened, counters/runs  -> 2" in outs[1]
    assert '"ok":true' in outs[1]
