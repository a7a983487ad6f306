"""The public API's type hints: a program written as README teaches passes
``mypy --strict``, a typo in an option is flagged by it (and refused at run
time), and ``inspect.signature`` shows the options."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pystate

PROGRAM = Path(__file__).parent / "typing" / "readme_program.py"


def _mypy(tmp_path: Path, source: Path) -> subprocess.CompletedProcess[str]:
    # From a directory of its own: no mypy.ini or cache of the checkout's.
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--no-error-summary",
         "--cache-dir", os.devnull, str(source)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )


def test_a_program_written_as_readme_teaches_passes_mypy_strict(tmp_path):
    done = _mypy(tmp_path, PROGRAM)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_typed_program_runs(tmp_path):
    done = subprocess.run([sys.executable, str(PROGRAM)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == pystate.ConfigError("x").code


@pytest.mark.parametrize(
    "call, flagged",
    [
        ('pystate.State("d", synch="always")', "synch"),
        ('pystate.State("d", sync="sometimes")', "sync"),
        ('pystate.State(adapter="redis", sync="always")', "sync"),
        ('pystate.State(adapter="bridge", redis_url="redis://x")', "redis_url"),
        ('pystate.AsyncState("d", save_interval_ms="5")', "save_interval_ms"),
    ],
)
def test_a_wrong_option_is_flagged_by_mypy(tmp_path, call, flagged):
    source = tmp_path / "wrong.py"
    source.write_text(f"import pystate\n\n{call}\n")
    done = _mypy(tmp_path, source)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "wrong.py:3" in done.stdout and "error" in done.stdout, done.stdout


def test_a_misspelt_option_is_refused_at_run_time_naming_it(tmp_path):
    with pytest.raises(pystate.ConfigError, match="synch: not an option of the kv adapter") as e:
        pystate.State(str(tmp_path / "d"), synch="always")  # type: ignore[call-overload]
    assert "sync" in e.value.message.split("takes", 1)[1]
    assert not (tmp_path / "d").exists()


def test_the_signature_of_state_shows_the_kv_options():
    params = inspect.signature(pystate.State).parameters
    assert {"path", "adapter", "sync", "save_interval_ms", "repair", "read_only", "max_value_bytes"} <= set(params)
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
