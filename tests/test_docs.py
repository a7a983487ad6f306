"""The examples in docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pystate

MODULES = [
    "pystate",
    "pystate.state",
    "pystate.errors",
    "pystate._codec",
    "pystate._ops",
    "pystate._core",
    "pystate._backend",
    "pystate._cffi.core",
    "pystate.functions",
    "pystate.triggers",
    "pystate.dispatch",
    "pystate.aio",
    "pystate.config",
    "pystate._options",
    "pystate._reports",
    "pystate.storage",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"State": pystate.State}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no examples"


def test_readme_file_store_example_runs_as_commented(tmp_path, monkeypatch):
    # The first Python block under "## The file store" in README.md, run in
    # an empty directory; its check() comment is the expected result.
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## The file store", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    expected = re.search(r"st\.check\(\)\s+# (\{.*\})", block).group(1)
    monkeypatch.chdir(tmp_path)
    env = {"pystate": pystate}
    exec(compile(block + "\nresult = st.check()\nst.close()\n", "README.md", "exec"), env)
    assert repr(env["result"]) == expected
    assert (tmp_path / "data" / "state" / "LOCK").exists()


def _readme_blocks(heading):
    import re
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split(heading, 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_triggers_example_prints_what_its_comments_say(capsys):
    block = _readme_blocks("## Triggers: reacting to changes")[0]
    env: dict = {}
    exec(compile(block, "README.md", "exec"), env)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "state:created u1 None -> {'email': 'ada@example.com'} {'team': 'growth'}",
        "order o1 {'total': 5}",
    ]


def test_readme_async_example_runs(tmp_path, monkeypatch, capsys):
    block = _readme_blocks("### asyncio: `AsyncState`")[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    # The handler runs when the loop next gets control: at flush_events.
    assert capsys.readouterr().out.splitlines() == ["{'name': 'Ada'}", "state:created u1"]


# ---- every Python block of the documentation ------------------------------------------

_ROOT = Path(__file__).parent.parent
_DOCS = [_ROOT / "README.md", *sorted((_ROOT / "docs").glob("*.md"))]
# Where a block talks to a service, the test starts a real one and puts its
# address where the block has the usual one.
_REDIS_URL = "redis://localhost:6379/0"
_SERVE_URLS = ("ws://127.0.0.1:49134", "ws://10.0.0.5:49134")


def _python_blocks():
    for doc in _DOCS:
        text = doc.read_text()
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, m.start()) + 1
            yield pytest.param(m.group(1), id=f"{doc.relative_to(_ROOT)}:{line}")


@pytest.mark.parametrize("block", list(_python_blocks()))
def test_every_python_block_of_the_docs_runs_as_written(block, tmp_path, request):
    """A block runs on its own, in a new process and an empty directory: its
    imports are there, it has no placeholder, it ends. A block that cannot
    (a fragment of a larger program) says so on its first line."""
    if block.startswith("# fragment"):
        return
    if "from iii import" in block and sys.version_info < (3, 10):
        pytest.skip("iii-sdk needs Python 3.10+")
    if _REDIS_URL in block:
        redis = request.getfixturevalue("redis_server")
        redis.flush()
        block = block.replace(_REDIS_URL, redis.url)
    if any(url in block for url in _SERVE_URLS):
        server = request.getfixturevalue("pystate_server")
        for url in _SERVE_URLS:
            block = block.replace(url, server.url)
    cwd = tmp_path / "run"
    cwd.mkdir()
    if "iii-config.yaml" in block:
        shutil.copy(_ROOT / "pystate" / "iii-config.example.yaml", cwd / "iii-config.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATE_")}
    done = subprocess.run([sys.executable, "-c", block], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def _anchor(heading):
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", [*_DOCS, _ROOT / "bench" / "RESULTS.md"], ids=lambda p: str(p.relative_to(_ROOT)))
def test_every_link_of_the_docs_leads_somewhere(doc):
    text = doc.read_text()
    anchors = {_anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target[1:] in anchors, f"{doc.name}: no heading for {target}"
        else:
            assert (doc.parent / target.split("#")[0]).exists(), f"{doc.name}: {target} does not exist"


def test_readme_has_a_table_of_contents_naming_every_section():
    text = (_ROOT / "README.md").read_text()
    toc = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    for heading in re.findall(r"^##+ (.*)$", text, re.M):
        if heading != "Contents":
            assert f"](#{_anchor(heading)})" in toc, heading


def test_design_maps_every_file_of_the_c_core():
    # docs/design.md's tree of csrc/ is the file map: a C file added or
    # renamed without it, or a name left there for a file that went, fails.
    text = (_ROOT / "docs" / "design.md").read_text()
    start = text.index("libpystate_core  (csrc/)")
    tree = text[start:text.index("```", start)]
    named = set(re.findall(r"\b(?:ps_\w+|pystate)\.[ch]\b", tree))
    sources = {p.name for p in (_ROOT / "csrc").glob("*.c")}
    assert sources <= named, f"not in docs/design.md: {sorted(sources - named)}"
    missing = {n for n in named if not (_ROOT / "csrc" / n).exists()}
    assert not missing, f"docs/design.md names files csrc/ does not have: {sorted(missing)}"
