"""``pystate bench`` as a user who installed pystate runs it: from a
non-editable install in a fresh virtual environment (``pip install
'<checkout>[bench]'``), in a directory outside the checkout, with nothing
of the checkout on PYTHONPATH; and from the development install the same
way. The runner is part of the package (pystate/bench/): the checkout's
top-level ``bench`` package must never be imported.

An alternative's module is made missing by a sitecustomize on PYTHONPATH
that refuses to import the modules named in $PYSTATE_TEST_BLOCK (and
notes each attempt in $PYSTATE_TEST_BLOCK_LOG). The fresh environment is
built once per version of the sources (about a minute) and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = "pip install 'pystate-store[bench]'"
# What `pip install .` builds from: a change to any of it is a new environment.
SOURCES = ["CMakeLists.txt", "pyproject.toml", "README.md", "LICENSE", "csrc", "pystate"]
OPS = ("insert", "overwrite", "get hit", "get miss", "update", "list", "delete")
PNG = b"\x89PNG\r\n\x1a\n"

BLOCKER = r'''
import os, sys

_blocked = set(filter(None, os.environ.get("PYSTATE_TEST_BLOCK", "").split(",")))
_log = os.environ.get("PYSTATE_TEST_BLOCK_LOG")


class _Block:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in _blocked:
            if _log:
                with open(_log, "a") as f:
                    f.write(top + "\n")
            raise ModuleNotFoundError(f"No module named {top!r} (blocked by the test)", name=top)
        return None


sys.meta_path.insert(0, _Block())
'''


def _sources_digest() -> str:
    h = hashlib.sha256()
    for top in SOURCES:
        p = ROOT / top
        files = [p] if p.is_file() else sorted(
            f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def installed_venv() -> Path:
    """A fresh venv with `pip install '<checkout>[bench]'` (not editable)."""
    base = Path(tempfile.gettempdir())
    venv = base / f"pystate-bench-venv-{_sources_digest()}"
    if not (venv / "installed").exists():
        for old in base.glob("pystate-bench-venv-*"):  # earlier versions of the sources
            shutil.rmtree(old, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        r = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             # The build directory of its own: not the checkout's build/,
             # which the development install uses. (Not -C: that is pip
             # 23.1+, and Debian 12's venv has pip 23.0.)
             f"--config-settings=build-dir={venv / 'build'}", f"{ROOT}[bench]"],
            capture_output=True, text=True, timeout=1200, cwd=str(base),
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        shutil.rmtree(venv / "build", ignore_errors=True)
        (venv / "installed").touch()
    return venv


def _env(tmp_path: Path, block: str) -> tuple[dict[str, str], Path]:
    """The environment of a user's shell (nothing of the checkout on
    PYTHONPATH) plus the blocker; and the file that logs what it refused."""
    site = tmp_path / "blocker"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    log = tmp_path / "blocked.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONPATH=str(site), PYSTATE_TEST_BLOCK=block, PYSTATE_TEST_BLOCK_LOG=str(log))
    return env, log


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _lines(text: str, *words: str) -> list[str]:
    return [line for line in text.splitlines() if all(w in line for w in words)]


def _blocked(log: Path) -> set[str]:
    return set(log.read_text().split()) if log.exists() else set()


@pytest.mark.timeout(1500)
def test_installed_pystate_bench_writes_the_chart_and_results_under_out(installed_venv, tmp_path):
    home = tmp_path / "somewhere"
    home.mkdir()
    env, log = _env(tmp_path, block="lmdb,bench")
    py = str(installed_venv / "bin" / "python")
    where = _run([py, "-c", "import pystate; print(pystate.__file__)"], home, env)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed_venv)), where.stdout  # the installed copy, not the checkout
    assert "site-packages" in where.stdout

    r = _run([str(installed_venv / "bin" / "pystate"), "bench", "--quick", "--out", "results/"], home, env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    out = home / "results"
    assert (out / "compare.png").read_bytes()[:8] == PNG
    assert "chart: results/compare.png" in r.stdout
    report = json.loads((out / "compare.json").read_text())
    assert report["keys"] == 1000
    stores = report["stores"]
    assert all(stores["dict + orjson (floor)"]["ratio"][op] == 1.0 for op in OPS)
    # The blocked alternative: one line naming it and how to install it,
    # and its row skipped; the others of the extra are measured.
    assert _blocked(log) == {"lmdb"}  # the blocker did refuse lmdb; `bench` was never asked for
    assert len(_lines(r.stderr, "lmdb", INSTALL)) == 1, r.stderr
    assert stores["lmdb (sync=False)"] == {"skipped": f"lmdb is not installed ({INSTALL})"}
    for name in ("pystate, memory", "pystate, file, sync=interval", "pystate cffi, memory",
                 "sqlite3 (WAL, NORMAL)", "diskcache", "rocksdict"):
        assert all(stores[name]["ratio"][op] > 0 for op in OPS), name
    redis = stores["redis-py + redis-server"]
    if shutil.which("redis-server"):
        assert "ratio" in redis, redis
    else:
        assert "redis-server" in redis["skipped"]
    # Nothing written beside the package, nor left in the working directory
    # but what --out asked for.
    assert not [p for name in ("compare.png", "compare.json") for p in installed_venv.rglob(name)]
    assert sorted(p.name for p in home.iterdir()) == ["results"]


def test_bench_from_the_dev_install_outside_the_checkout_skips_a_missing_chart(tmp_path):
    env, log = _env(tmp_path, block="matplotlib,lmdb,rocksdict,bench")
    r = _run([sys.executable, "-m", "pystate", "bench", "--quick", "--out", str(tmp_path / "o" / "chart.png"),
              "--json", str(tmp_path / "o" / "r.json")], tmp_path, env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert _lines(r.stderr, "chart skipped: matplotlib is not installed", INSTALL) != []
    assert not (tmp_path / "o" / "chart.png").exists()
    stores = json.loads((tmp_path / "o" / "r.json").read_text())["stores"]
    for module, name in (("lmdb", "lmdb (sync=False)"), ("rocksdict", "rocksdict")):
        assert len(_lines(r.stderr, f"{name}: skipped: {module} is not installed ({INSTALL})")) == 1, r.stderr
        assert stores[name]["skipped"] == f"{module} is not installed ({INSTALL})"
        assert f"skipped: {module} is not installed" in r.stdout  # and in the table
    assert "bench" not in _blocked(log)  # the checkout's bench/ package was never imported
    assert {"lmdb", "rocksdict"} <= _blocked(log)
    assert all(stores["pystate, memory"]["ratio"][op] > 0 for op in OPS)


def test_bench_scaling_runs_its_children_from_the_package(tmp_path):
    env, log = _env(tmp_path, block="matplotlib,bench")
    r = _run([sys.executable, "-m", "pystate", "bench", "--scaling", "--sizes", "1000,2000", "--out",
              str(tmp_path / "o") + "/"], tmp_path, env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "o" / "scaling.json").read_text())
    assert [(row["impl"], row["keys"]) for row in rows] == [
        ("dict_floor", 1000), ("pystate", 1000), ("dict_floor", 2000), ("pystate", 2000)]
    assert all(row["insert_us"] > 0 and row["get_us"] > 0 for row in rows)
    assert "bench" not in _blocked(log)


def test_bench_help_lists_its_own_options(tmp_path):
    r = _run([sys.executable, "-m", "pystate", "bench", "--help"], tmp_path, dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: pystate bench")
    for option in ("--quick", "--out PATH", "--json FILE", "--keys", "--only", "--scaling", INSTALL):
        assert option in r.stdout, option


def test_bench_refuses_an_out_it_cannot_write_before_running(tmp_path):
    (tmp_path / "a-file").write_text("")
    r = _run([sys.executable, "-m", "pystate", "bench", "--out", str(tmp_path / "a-file" / "chart.png")],
             tmp_path, dict(os.environ), timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("pystate bench: cannot write"), r.stderr
    assert r.stdout == ""  # refused before anything was measured


def test_python_m_bench_in_the_checkout_runs_the_package_runner(tmp_path):
    r = _run([sys.executable, "-m", "bench", "--quick", "--only", "sqlite", "--json", str(tmp_path / "r.json")],
             ROOT, dict(os.environ))
    assert r.returncode == 0, r.stderr[-3000:]
    stores = json.loads((tmp_path / "r.json").read_text())["stores"]
    assert sorted(stores) == ["dict + orjson (floor)", "sqlite3 (WAL, NORMAL)"]
    assert all(stores["sqlite3 (WAL, NORMAL)"]["ratio"][op] > 0 for op in OPS)
