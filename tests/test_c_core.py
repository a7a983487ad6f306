"""Build the C core's unit tests (csrc/tests) with CMake and run them:
plain, under AddressSanitizer + UndefinedBehaviorSanitizer, and under
valgrind's leak checker.

They need a C compiler, CMake and libxxhash-dev, which building pystate
needs anyway, and valgrind for the last one. A missing tool skips a test on
a developer machine and fails it in CI (CI=true), so CI cannot pass without
having run them.
"""

from __future__ import annotations

import os
import resource
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
C_TESTS = ["test_table", "test_store", "test_disk", "test_dir", "test_guard", "test_json", "test_processes"]


def _which(tool: str) -> str | None:
    # The test extra installs cmake and ninja into the environment running
    # the tests, whose bin/ need not be on PATH (README's commands call
    # .venv/bin/python without activating it): look there first.
    here = os.path.dirname(sys.executable)
    return shutil.which(tool, path=here) or shutil.which(tool)


def need(tool: str) -> str:
    path = _which(tool)
    if path is None:
        msg = f"{tool} is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI must run the C tests")
        pytest.skip(msg)
    return path


def build(tmp: Path, *flags: str) -> Path:
    cmake = need("cmake")
    ninja = _which("ninja")
    gen = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    out = tmp / "build"
    subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(out), *gen, "-DCMAKE_BUILD_TYPE=Debug",
         "-DPYSTATE_BUILD_TESTS=ON", "-DPYSTATE_WERROR=ON", *flags],
        check=True, capture_output=True, text=True, timeout=600,
    )
    r = subprocess.run([cmake, "--build", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def ctest(build_dir: Path, env: dict | None = None) -> None:
    r = subprocess.run(
        [need("ctest"), "--output-on-failure", "--timeout", "600"],
        cwd=build_dir, capture_output=True, text=True, timeout=900,
        env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    # "100% tests passed, 0 tests failed out of 6" (older ctest words it
    # without the middle part): every test ran and passed.
    assert re.search(rf"100% tests passed(, 0 tests failed)? out of {len(C_TESTS)}\b", r.stdout), r.stdout


@pytest.fixture(scope="module")
def plain_build(tmp_path_factory):
    return build(tmp_path_factory.mktemp("c-plain"))


def test_c_unit_tests_pass(plain_build):
    ctest(plain_build)


def test_no_c_file_depends_on_itself_through_others(plain_build):
    # docs/design.md: the file store's parts call one way, and nothing calls
    # back into ps_store.c. Read off the built objects: a file depends on
    # the file defining a symbol it leaves undefined.
    nm = need("nm")
    objects = sorted((plain_build / "CMakeFiles" / "pystate_core.dir").rglob("*.o"))
    assert len(objects) >= 10, objects
    defines, uses = {}, {}
    for o in objects:
        out = subprocess.run([nm, "-P", str(o)], capture_output=True, text=True, check=True).stdout
        rows = [line.split() for line in out.splitlines()]
        name = o.name.split(".")[0]
        defines[name] = {r[0] for r in rows if len(r) > 1 and r[1] in ("T", "D", "B", "R", "C", "G", "S")}
        uses[name] = {r[0] for r in rows if len(r) > 1 and r[1] == "U"}
    owner = {sym: name for name, syms in defines.items() for sym in syms}
    deps = {name: {owner[s] for s in uses[name] if owner.get(s, name) != name} for name in defines}
    for start in deps:
        path, todo, seen = {}, [(d, start) for d in deps[start]], set()
        while todo:
            here, came_from = todo.pop()
            if here in seen:
                continue
            seen.add(here)
            path[here] = came_from
            if here == start:
                chain = [start]
                while len(chain) == 1 or chain[-1] != start:
                    chain.append(path[chain[-1]])
                pytest.fail("circle: " + " <- ".join(f"{n}.c" for n in chain))
            todo.extend((d, here) for d in deps[here])


def test_c_unit_tests_pass_under_asan_and_ubsan(tmp_path):
    out = build(tmp_path, "-DPYSTATE_SANITIZE=ON")
    ctest(out, {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})


def _small_descriptor_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("name", C_TESTS)
def test_c_unit_tests_leak_nothing_under_valgrind(plain_build, name):
    valgrind = need("valgrind")
    r = subprocess.run(
        [valgrind, "--leak-check=full", "--show-leak-kinds=all", "--errors-for-leak-kinds=all",
         # Fair scheduling: by default one busy thread can starve the others.
         "--fair-sched=yes", "--error-exitcode=99", "-q", str(plain_build / name)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "PS_TEST_QUICK": "1"},  # exhaustive loops sampled: valgrind is slow
        # valgrind keeps the descriptor limit to itself (a test cannot lower
        # it): a small one keeps "more scopes than descriptors" short.
        preexec_fn=_small_descriptor_limit,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
