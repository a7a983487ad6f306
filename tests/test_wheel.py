"""The wheel path, as a release ships pystate: ``pip wheel`` builds a wheel
from this checkout, a fresh virtual environment installs it from that file
alone (``--no-index``: nothing is compiled there; its runtime dependencies
come first, from the package index or pip's cache), and the installed
``pystate`` runs its demo from outside the checkout, on both bindings.

A wheel must run where there is no compiler and no libxxhash: xxHash is
compiled in (XXH_INLINE_ALL, CMakeLists.txt), so no installed extension
module may name libxxhash among its NEEDED entries or leave an xxHash
symbol for the loader to resolve, and ``auditwheel show`` (what
cibuildwheel repairs wheels with) must find a manylinux tag for it.

Needs what building pystate needs (a C compiler, the xxHash header), the
package index or pip's cache for the build requirements, readelf
(binutils) and auditwheel (the test extra). A missing tool skips a test on a
developer machine and fails it in CI (CI=true). The wheel and its
environment are built once per version of the sources and interpreter, and
reused (the suite runs once per backend).
"""

from __future__ import annotations

import email.parser
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["CMakeLists.txt", "pyproject.toml", "csrc", "pystate"]
PYPY = sys.implementation.name == "pypy"
#: The extension modules a wheel carries, by path under pystate/: PyPy
#: builds only the cffi one.
MODULES = ({"_cffi/_native"} if PYPY else
           {"_core", "_codec", "_ops", "writes", "_cffi/core", "_cffi/_native"})


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI must check the wheel")
        pytest.skip(msg)
    return path


def run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def _key() -> str:
    h = hashlib.sha256()
    h.update(f"{sys.prefix}\0{sys.version}\0".encode())
    for top in SOURCES:
        p = ROOT / top
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _runtime_requirements(wheel: Path) -> list[str]:
    """The wheel's own Requires-Dist, extras left out."""
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    return [r for r in meta.get_all("Requires-Dist", []) if "extra ==" not in r]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing at this checkout,
    the dev environment or a backend."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYSTATE_BACKEND", "PIP_REQUIRE_VIRTUALENV")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {**env, **extra}


class Installed:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.wheelhouse = root / "wheelhouse"
        self.venv = root / "venv"

    @property
    def wheel(self) -> Path:
        (w,) = self.wheelhouse.glob("pystate_store-*.whl")
        return w

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        (sp,) = self.venv.glob("lib/*/site-packages")
        return sp


@pytest.fixture(scope="module")
def installed() -> Installed:
    inst = Installed(Path(tempfile.gettempdir()) / f"pystate-wheel-{_key()}")
    if (inst.root / "installed").exists():
        return inst
    for old in Path(tempfile.gettempdir()).glob("pystate-wheel-*"):  # other sources' builds
        shutil.rmtree(old, ignore_errors=True)
    inst.root.mkdir()
    env = clean_env()

    # The wheel, built as `pip wheel .` builds it (isolated build
    # environment), in a build directory of its own: not the checkout's.
    r = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", inst.wheelhouse,
             f"--config-settings=build-dir={inst.root / 'build'}", ROOT],
            timeout=900, cwd=inst.root, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    wheel = inst.wheel

    r = run([sys.executable, "-m", "venv", inst.venv], timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # Its runtime dependencies, then the wheel itself from the wheelhouse
    # alone: no index, no source build.
    reqs = _runtime_requirements(wheel)
    assert any(q.startswith("pyyaml") for q in reqs), reqs
    r = run([inst.python, "-m", "pip", "install", "-q", *reqs], timeout=600, cwd=inst.root, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = run([inst.python, "-m", "pip", "install", "-q", "--no-index", "--only-binary", ":all:",
             "--find-links", inst.wheelhouse, "pystate-store"], timeout=300, cwd=inst.root, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    shutil.rmtree(inst.root / "build", ignore_errors=True)
    (inst.root / "installed").touch()
    return inst


def extension_modules(inst: Installed) -> dict[str, Path]:
    top = inst.site_packages / "pystate"
    found = {str(p.relative_to(top).parent / p.name.split(".")[0]): p
             for p in top.rglob("*.so")}
    assert set(found) == MODULES, found
    return found


def test_a_wheel_installs_and_runs_the_demo_in_a_fresh_venv(installed, tmp_path):
    cli = installed.venv / "bin" / "pystate"
    for backend in (["cffi"] if PYPY else ["cython", "cffi"]):
        r = run([cli, "demo"], timeout=120, cwd=tmp_path,
                env=clean_env(PYSTATE_BACKEND=backend, TMPDIR=str(tmp_path)))
        assert r.returncode == 0, f"{backend}:\n{r.stdout}\n{r.stderr}"
        assert f"({backend} backend)" in r.stdout, r.stdout
        assert "reopened, counters/runs  -> 1" in r.stdout, r.stdout
        assert "Traceback" not in r.stderr, r.stderr


def test_the_venv_imports_pystate_from_the_wheel_not_from_the_checkout(installed, tmp_path):
    version = re.search(r'^__version__ = "([^"]+)"', (ROOT / "pystate" / "__init__.py").read_text(), re.M)
    assert version, "no __version__ in pystate/__init__.py"
    code = ("import importlib.metadata, pystate, pystate._cffi._native; "
            "print(pystate.__file__); print(pystate.__version__); print(pystate.backend); "
            "print(importlib.metadata.version('pystate-store'))")
    r = run([installed.python, "-c", code], timeout=120, cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    where, got, backend, dist = r.stdout.split()
    assert Path(where).resolve().is_relative_to(installed.site_packages.resolve()), where
    assert got == dist == version.group(1)
    assert backend == ("cffi" if PYPY else "cython")


def test_the_wheel_ships_the_sources_pypy_imports(installed, tmp_path):
    # _codec and _ops are one source each: PyPy imports the .py, CPython the
    # module compiled from it, which comes first on import.
    with zipfile.ZipFile(installed.wheel) as zf:
        names = set(zf.namelist())
    assert {"pystate/_codec.py", "pystate/_ops.py", "pystate/_cffi/core.py"} <= names, sorted(names)
    assert not [n for n in names if n.endswith((".pyx", ".pxd", ".c"))], sorted(names)
    code = "import pystate._codec as c, pystate._ops as o; print(c.__file__); print(o.__file__)"
    r = run([installed.python, "-c", code], timeout=120, cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    for name, where in zip(("_codec", "_ops"), r.stdout.split()):
        assert Path(where).name.split(".")[0] == name, where
        assert Path(where).suffix == (".py" if PYPY else ".so"), where


def test_the_installed_extension_modules_do_not_need_libxxhash(installed):
    readelf = need("readelf")
    for name, so in extension_modules(installed).items():
        dyn = run([readelf, "-d", "-W", so], timeout=60)
        assert dyn.returncode == 0, dyn.stderr
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn.stdout)
        assert needed, f"{name}: no NEEDED entries read:\n{dyn.stdout}"
        assert not [lib for lib in needed if "xxhash" in lib.lower()], f"{name} links {needed}"
        # Compiled in means no xxHash symbol in the dynamic table either: not
        # an undefined one (a module built without XXH_INLINE_ALL imports,
        # then fails at its first hash), nor an exported one (libxxhash.a
        # linked in exports all of xxHash, to clash with other modules').
        syms = run([readelf, "--dyn-syms", "-W", so], timeout=60)
        assert syms.returncode == 0, syms.stderr
        assert not re.findall(r"\bXXH\w*", syms.stdout), f"{name} has dynamic xxHash symbols"


def test_auditwheel_finds_a_manylinux_tag_for_the_wheel(installed):
    if importlib.util.find_spec("auditwheel") is None:
        msg = "auditwheel is not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI must check the wheel")
        pytest.skip(msg)
    r = run([sys.executable, "-m", "auditwheel", "show", installed.wheel], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    out = " ".join(r.stdout.split())  # auditwheel wraps its lines
    assert re.search(r'consistent with the following platform tag: "manylinux_\d+_\d+_\w+"', out), out
    assert "xxhash" not in out.lower(), out
