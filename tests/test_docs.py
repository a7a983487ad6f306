"""The examples in docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

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
    "pystate._cffi.codec",
    "pystate._cffi.ops",
    "pystate._cffi.core",
    "pystate.functions",
    "pystate.triggers",
    "pystate.dispatch",
    "pystate.aio",
    "pystate.config",
    "pystate._options",
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
