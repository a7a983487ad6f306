"""The ``pystate`` command line, through a subprocess on real store
directories: ``demo`` (the first command README gives) and the data
commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pystate


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


# ---- the data commands -----------------------------------------------------------


def pystate_cli(*args, cwd, input=None):
    return subprocess.run([sys.executable, "-m", "pystate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, input=input)


@pytest.fixture
def cli(tmp_path):
    store = str(tmp_path / "store")

    def run(cmd, *args):
        return pystate_cli(cmd, "--data", store, *args, cwd=tmp_path)

    run.store = store
    return run


def test_set_then_get_round_trips_unicode_and_big_integers(cli):
    value = '{"name":"Zoë ✓","big":9223372036854775807,"neg":-9223372036854775808,"nested":[{"a":[1.5,null,true]}]}'
    assert cli("set", "users", "u1", value).returncode == 0
    r = cli("get", "users", "u1")
    assert r.returncode == 0
    assert r.stdout == value + "\n"


def test_get_of_a_missing_key_exits_1_with_not_found(cli):
    cli("set", "s", "other", "1")
    r = cli("get", "s", "missing")
    assert (r.returncode, r.stdout) == (1, "")
    assert "not found" in r.stderr


def test_get_of_a_stored_null_prints_null(cli):
    cli("set", "s", "k", "null")
    r = cli("get", "s", "k")
    assert (r.returncode, r.stdout) == (0, "null\n")


def test_invalid_json_value_is_one_line_exit_2_and_writes_nothing(cli):
    cli("set", "s", "k", "1")
    r = cli("set", "s", "k", "{not json")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "not valid JSON" in r.stderr
    assert "Traceback" not in r.stderr
    assert cli("get", "s", "k").stdout == "1\n"


def test_set_json_prints_old_and_new_value(cli):
    cli("set", "s", "k", "1")
    r = cli("set", "s", "k", "2", "--json")
    assert json.loads(r.stdout) == {"old_value": 1, "new_value": 2}


def test_update_prints_new_value_and_reports_skipped_ops(cli):
    cli("set", "c", "k", '{"n": 1}')
    r = cli("update", "c", "k", '[{"type":"increment","path":"n","by":2},{"type":"append","path":"n","value":1}]')
    assert r.returncode == 0
    assert json.loads(r.stdout) == {"n": 3}
    assert "op 1 skipped: append.type_mismatch" in r.stderr


def test_update_json_gives_the_engines_response(cli):
    r = cli("update", "c", "k", '[{"type":"set","path":"a","value":1}]', "--json")
    assert json.loads(r.stdout) == {"old_value": None, "new_value": {"a": 1}}


def test_malformed_ops_exit_2_and_change_nothing(cli):
    cli("set", "c", "k", '{"n": 1}')
    r = cli("update", "c", "k", '[{"type":"increment","path":"n","by":"x"}]')
    assert r.returncode == 2 and "ops[0].by" in r.stderr and "Traceback" not in r.stderr
    assert json.loads(cli("get", "c", "k").stdout) == {"n": 1}


def test_list_prints_one_value_per_line_or_a_json_array(cli):
    for i, v in enumerate(['{"a":1}', '"two"', "[3]"]):
        cli("set", "s", f"k{i}", v)
    assert cli("list", "s").stdout.splitlines() == ['{"a":1}', '"two"', "[3]"]
    assert json.loads(cli("list", "s", "--json").stdout) == [{"a": 1}, "two", [3]]


def test_groups_are_sorted(cli):
    for s in ("b", "a", "c"):
        cli("set", s, "k", "1")
    assert cli("groups").stdout.splitlines() == ["a", "b", "c"]
    assert json.loads(cli("groups", "--json").stdout) == {"groups": ["a", "b", "c"]}


def test_delete_removes_the_key(cli):
    cli("set", "s", "k", "5")
    assert json.loads(cli("delete", "s", "k", "--json").stdout) == 5
    assert cli("get", "s", "k").returncode == 1


def test_stats_json_counts_keys(cli):
    for i in range(3):
        cli("set", "s", f"k{i}", "1")
    assert json.loads(cli("stats", "--json").stdout)["keys"] == 3


def test_compact_shrinks_the_logs(cli):
    for i in range(20):
        cli("set", "s", "k", str(i))
    r = cli("compact", "--json")
    sizes = json.loads(r.stdout)
    assert sizes["log_bytes_after"] < sizes["log_bytes_before"]
    assert cli("get", "s", "k").stdout == "19\n"


def test_read_command_on_a_missing_store_exits_3_and_creates_nothing(tmp_path):
    r = pystate_cli("get", "--data", str(tmp_path / "nope"), "s", "k", cwd=tmp_path)
    assert r.returncode == 3 and "no store at" in r.stderr
    assert not (tmp_path / "nope").exists()


def test_a_store_written_in_another_sync_mode_exits_3_in_one_line(cli):
    cli("set", "s", "k", "1")
    with pystate.State(cli.store, sync="always"):
        r = cli("set", "s", "k", "2")
        assert cli("get", "s", "k").stdout.strip() == "1"  # reading needs no agreement
    assert r.returncode == 3
    assert "sync=always" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_damaged_store_exits_3_naming_the_damage(cli):
    for i in range(10):
        cli("set", "s", f"k{i}", '"' + "x" * 100 + '"')
    log = next(p for p in Path(cli.store).iterdir() if p.is_file() and p.stat().st_size > 500)
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    r = cli("list", "s")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "corrupt" in r.stderr.lower()


def test_data_and_config_together_is_a_usage_error(tmp_path):
    r = pystate_cli("get", "--data", "a", "--config", "b", "s", "k", cwd=tmp_path)
    assert r.returncode == 2 and "not allowed with" in r.stderr


def test_commands_read_a_config_file(tmp_path):
    cfg = tmp_path / "iii-config.yaml"
    cfg.write_text("workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: kv\n"
                   "        config: {store_method: file_based, file_path: ./cfgstore}\n")
    assert pystate_cli("set", "--config", str(cfg), "s", "k", '"v"', cwd=tmp_path).returncode == 0
    assert pystate_cli("get", "--config", str(cfg), "s", "k", cwd=tmp_path).stdout == '"v"\n'
    assert (tmp_path / "cfgstore").is_dir()


TRICKY = {
    ("u", "plain"): {"name": "Ada", "tags": ["a", "b"]},
    ("u", "ключ ✓ with spaces"): "Zoë \u0000 \u2028 \U0001F600",
    ("u", ""): 0,
    ("nums", "big"): [9223372036854775807, -9223372036854775808, 1.5e300, -0.0],
    ("nums", "null"): None,
    ("deep", "nested"): {"a": [{"b": [{"c": {"d": [1, [2, [3]]]}}]}], "e": {}},
}


def _fill(path):
    with pystate.State(path) as st:
        for (scope, key), value in TRICKY.items():
            st.set(scope, key, value)


def _contents(path):
    with pystate.State(path) as st:
        return {(s, k): v for s in st.list_groups() for k, v in st.items(s)}


def test_dump_then_load_round_trips_exactly(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _fill(src)
    dump = tmp_path / "dump.jsonl"
    r = pystate_cli("dump", "--data", str(src), "-o", str(dump), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = pystate_cli("load", "--data", str(dst), str(dump), cwd=tmp_path)
    assert r.returncode == 0 and "loaded 6 records" in r.stdout
    got = _contents(dst)
    assert got == TRICKY
    assert repr(got[("nums", "big")]) == repr(TRICKY[("nums", "big")])  # -0.0 and exact integers
    again = pystate_cli("dump", "--data", str(dst), cwd=tmp_path).stdout
    assert again == dump.read_text()  # same bytes, same order


def test_dump_writes_one_json_object_per_line_to_stdout(tmp_path):
    _fill(tmp_path / "s")
    out = pystate_cli("dump", "--data", str(tmp_path / "s"), cwd=tmp_path).stdout
    # split on newlines only: a value may hold U+2028, which JSON keeps raw
    records = [json.loads(line) for line in out.split("\n") if line]
    assert {(r["scope"], r["key"]) for r in records} == set(TRICKY)


@pytest.mark.parametrize("target", ["dir", "link", "fifo"])
def test_dump_never_writes_through_or_over_what_is_not_a_regular_file(tmp_path, target):
    store = tmp_path / "store"
    with pystate.State(store) as st:
        st.set("s", "k", 1)
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.write_text("keep me")
    if target == "dir":
        out.mkdir()
    elif target == "link":
        out.symlink_to(victim)
    else:
        os.mkfifo(out)
    (tmp_path / "out.tmp").write_text("a user's file")  # the old fixed temporary name
    r = pystate_cli("dump", "--data", str(store), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "not a regular file" in r.stderr and "Traceback" not in r.stderr
    assert victim.read_text() == "keep me" and (tmp_path / "out.tmp").read_text() == "a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.tmp", "store", "victim"]


def test_dump_replaces_its_output_whole_and_leaves_no_temporary(tmp_path):
    store = tmp_path / "store"
    with pystate.State(store) as st:
        st.set("s", "k", 1)
    out = tmp_path / "backup.jsonl"
    out.write_text("old backup\n")
    r = pystate_cli("dump", "--data", str(store), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0 and out.read_text() == '{"scope":"s","key":"k","value":1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.jsonl", "store"]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    m = os.umask(0o022)
    os.umask(m)
    return m


@pytest.mark.parametrize("content", ["fifo", "latin-1"])
def test_a_config_that_cannot_be_read_as_text_is_one_line(tmp_path, content):
    cfg = tmp_path / "iii-config.yaml"
    if content == "fifo":
        os.mkfifo(cfg)
    else:
        cfg.write_bytes("workers: [caf\xe9]\n".encode("latin-1"))
    r = pystate_cli("get", "--config", str(cfg), "s", "k", cwd=tmp_path)
    assert r.returncode == 3 and "Traceback" not in r.stderr and str(cfg) in r.stderr


def test_load_from_stdin(tmp_path):
    text = '{"scope":"s","key":"k","value":[1,2]}\n\n{"scope":"s","key":"j","value":"x"}\n'
    r = pystate_cli("load", "--data", str(tmp_path / "d"), "-", cwd=tmp_path, input=text)
    assert r.returncode == 0, r.stderr
    assert _contents(tmp_path / "d") == {("s", "k"): [1, 2], ("s", "j"): "x"}


@pytest.mark.parametrize("bad, line", [
    ('{"scope":"s","key":"k","value":1}\n{"scope":"s","key":"k2"}\n', 2),
    ('{"scope":"s","key":"k","value":1}\nnot json\n', 2),
    ('[1,2]\n', 1),
    ('{"scope":1,"key":"k","value":1}\n', 1),
])
def test_load_with_a_bad_line_names_it_and_writes_nothing(tmp_path, bad, line):
    store = tmp_path / "d"
    with pystate.State(store) as st:
        st.set("keep", "k", "before")
    r = pystate_cli("load", "--data", str(store), "-", cwd=tmp_path, input=bad)
    assert r.returncode == 2 and f"line {line}" in r.stderr and "Traceback" not in r.stderr
    assert _contents(store) == {("keep", "k"): "before"}


def test_load_of_a_missing_file_is_one_line(tmp_path):
    r = pystate_cli("load", "--data", str(tmp_path / "d"), str(tmp_path / "nope.jsonl"), cwd=tmp_path)
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_dump_pages_through_a_big_scope(tmp_path):
    store = tmp_path / "big"
    with pystate.State(store) as st:
        for i in range(5000):
            st.set("s", f"k{i}", i)
        for i in range(0, 5000, 7):
            st.delete("s", f"k{i}")
    lines = pystate_cli("dump", "--data", str(store), cwd=tmp_path).stdout.splitlines()
    keys = [json.loads(line)["key"] for line in lines]
    assert keys == [f"k{i}" for i in range(5000) if i % 7]


# ---- check ---------------------------------------------------------------------------


def _log_of(store):
    (log,) = [p for p in Path(store).iterdir() if p.suffix == ".log"]
    return log


@pytest.fixture
def filled(cli):
    for i in range(6):
        cli("set", "s", f"k{i}", '"' + f"value-{i}-" + "x" * 40 + '"')
    return cli


def test_check_of_a_healthy_store_says_ok(filled):
    r = filled("check")
    assert r.returncode == 0 and r.stdout.startswith("ok: 1 log, 6 records")
    assert json.loads(filled("check", "--json").stdout)["ok"] is True


def test_check_reports_a_torn_tail_without_cutting_it(filled):
    log = _log_of(filled.store)
    with open(log, "ab") as f:
        f.write(b"half a record")
    size = log.stat().st_size
    r = filled("check")
    assert r.returncode == 1 and "torn tail" in r.stdout and "--fix" in r.stdout
    assert log.stat().st_size == size  # changed nothing
    report = json.loads(filled("check", "--json").stdout)
    assert (report["ok"], report["torn_tails"], report["bytes_cut"]) == (False, 1, 13)


def test_check_fix_cuts_a_torn_tail_and_keeps_every_record(filled):
    log = _log_of(filled.store)
    size = log.stat().st_size
    with open(log, "ab") as f:
        f.write(b"half a record")
    r = filled("check", "--fix")
    assert r.returncode == 0 and "cut 1 torn tail (13 bytes of records lost)" in r.stdout
    assert log.stat().st_size == size
    assert filled("check").returncode == 0
    assert len(filled("list", "s").stdout.splitlines()) == 6


def test_check_names_damage_in_the_middle_and_changes_nothing(filled):
    log = _log_of(filled.store)
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    r = filled("check")
    assert r.returncode == 1 and "corrupt at offset" in r.stdout and log.name in r.stdout
    assert log.read_bytes() == bytes(data)
    assert not list(Path(filled.store).glob("*.corrupt-*"))


def test_check_fix_salvages_a_damaged_log_and_keeps_the_damaged_file(filled):
    log = _log_of(filled.store)
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    r = filled("check", "--fix")
    assert r.returncode == 0 and "salvaged 1 damaged log" in r.stdout
    assert (Path(str(log) + ".corrupt-1")).read_bytes() == bytes(data)
    values = filled("list", "s").stdout.splitlines()
    assert 0 < len(values) < 6  # every valid record, and not the damaged one
    assert filled("check").returncode == 0


def test_check_of_a_store_in_use_checks_what_its_writers_published(filled):
    with pystate.State(filled.store) as st:
        st.set("s", "new", 1)
        r = filled("check")
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr


def test_check_reports_acknowledged_records_lost_under_sync_always(tmp_path):
    store = tmp_path / "store"
    with pystate.State(store, sync="always") as st:
        for i in range(50):
            st.set("s", f"k{i:02d}", i)
    log = _log_of(store)
    data = bytearray(log.read_bytes())
    cut = len(data) - 20 * (len(data) - 200) // 50  # about the last 20 records
    import logfmt

    _, recs, _ = logfmt.parse(bytes(data))
    boundary = next(r.offset for r in recs if r.offset >= cut)
    data[boundary:] = bytes(len(data) - boundary)  # fdatasync'ed, then zeroed
    log.write_bytes(bytes(data))
    r = pystate_cli("check", "--data", str(store), cwd=tmp_path)
    assert r.returncode == 1 and "torn tail" in r.stdout and log.name in r.stdout
    assert log.read_bytes() == bytes(data)


def test_check_fix_salvages_a_log_whose_header_has_a_flipped_bit(filled):
    log = _log_of(filled.store)
    data = bytearray(log.read_bytes())
    data[12] ^= 0x01  # the scope name's length, in the first copy of the header block
    log.write_bytes(bytes(data))
    r = filled("check")
    assert r.returncode == 1 and "header" in r.stdout
    assert log.read_bytes() == bytes(data)
    r = filled("check", "--fix")
    assert r.returncode == 0 and "salvaged 1 damaged log" in r.stdout
    assert len(filled("list", "s").stdout.splitlines()) == 6


def _tree(directory):
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(Path(directory).rglob("*"))}


def test_readers_leave_a_damaged_store_as_it_is(filled):
    log = _log_of(filled.store)
    with open(log, "ab") as f:
        f.write(b"half a record")
    Path(str(log) + ".tmp-00000000000000aa").write_bytes(log.read_bytes()[:50])
    before = _tree(filled.store)
    for cmd, rc in [(("get", "s", "k1"), 0), (("list", "s"), 0), (("groups",), 0), (("stats",), 0),
                    (("dump",), 0), (("check",), 1), (("check", "--json"), 1)]:
        r = filled(*cmd)
        assert r.returncode == rc, (cmd, r.stderr)
        if cmd[0] != "check":
            assert "torn tail" in r.stderr and "left as it is" in r.stderr, cmd
        assert _tree(filled.store) == before, cmd


def test_commands_on_a_directory_that_is_not_a_store_touch_nothing(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "app.log").write_text("")
    before = _tree(venv)
    for cmd in (("set", "s", "k", "1"), ("get", "s", "k"), ("list", "s"), ("load", "-"), ("compact",),
                ("check",), ("check", "--fix")):
        r = pystate_cli(cmd[0], "--data", str(venv), *cmd[1:], cwd=tmp_path, input="")
        assert r.returncode == 3 and "not a pystate store" in r.stderr, (cmd, r.stderr)
        assert "Traceback" not in r.stderr
        assert _tree(venv) == before, cmd


def test_check_with_a_config_that_is_not_a_file_store_exits_3(tmp_path):
    cfg = tmp_path / "iii-config.yaml"
    cfg.write_text("workers:\n  - name: iii-state\n    config:\n      adapter: {name: kv}\n")
    r = pystate_cli("check", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 3 and "no file store" in r.stderr


# ---- bench ------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def test_bench_runs_the_comparison_and_reports_ratios_to_the_floor(tmp_path):
    out = tmp_path / "report.json"
    r = subprocess.run(
        [sys.executable, "-m", "pystate", "bench", "--keys", "1000", "--only", "pystate", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "what an acknowledged write survives" in r.stdout
    stores = json.loads(out.read_text())["stores"]
    ops = ("insert", "overwrite", "get hit", "get miss", "update", "list", "delete")
    assert all(stores["dict + orjson (floor)"]["ratio"][op] == 1.0 for op in ops)
    file_row = stores["pystate, file, sync=interval"]
    assert file_row["disk_bytes"] > 1000 * 100 and file_row["reopen_ms"] > 0
    for name in ("pystate, memory", "pystate, file, sync=always"):
        for op in ops:
            cell = stores[name][op]
            assert 0 < cell["p50_us"] <= cell["p99_us"]
            assert stores[name]["ratio"][op] > 0
    assert not any("lmdb" in name for name in stores)  # --only


@pytest.mark.parametrize("command", [("dump",), ("compact",)])
def test_long_commands_show_progress_on_a_terminal_only(cli, command):
    import os
    import pty

    cli("set", "s", "k", "1")
    cli("set", "t", "k", "2")
    plain = cli(*command)
    assert "done" not in plain.stderr  # not a terminal: no progress lines
    leader, follower = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "pystate", *command, "--data", cli.store],
                           stdout=subprocess.PIPE, stderr=follower, timeout=60)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal is closed and drained
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
    assert r.returncode == 0
    assert b" done" in seen and b"\r" in seen


# ---- JSON from outside: no silent floats ------------------------------------------------

# Each parses as a float (or not at all) where pystate stores exact integers.
NOT_STORABLE = ["18446744073709551616", "-9223372036854775809", "NaN", "Infinity", "1e999"]


@pytest.mark.parametrize("literal", NOT_STORABLE)
@pytest.mark.parametrize("command", ["set", "update", "load"])
def test_json_an_api_would_refuse_is_refused_by_every_command_and_writes_nothing(tmp_path, command, literal):
    store = tmp_path / "d"
    with pystate.State(store) as st:
        st.set("n", "k", {"a": 1})
    if command == "set":
        args, stdin = ("set", "n", "k", f'{{"a":{literal}}}'), None
    elif command == "update":
        args, stdin = ("update", "n", "k", f'[{{"type":"set","path":"a","value":{literal}}}]'), None
    else:
        args = ("load", "-")
        stdin = f'{{"scope":"n","key":"j","value":1}}\n{{"scope":"n","key":"k","value":{literal}}}\n'
    r = pystate_cli(args[0], "--data", str(store), *args[1:], cwd=tmp_path, input=stdin)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    if literal.lstrip("-").isdigit():
        assert "64-bit" in r.stderr and literal in r.stderr
    if command == "load":
        assert "line 2" in r.stderr
    assert _contents(store) == {("n", "k"): {"a": 1}}


# ---- a config whose store is in memory ----------------------------------------------------

IN_MEMORY_CONFIGS = {
    "empty": "",
    "no state entry": "workers:\n  - name: iii-http\n",
    "in_memory": "workers:\n  - name: iii-state\n    config:\n      adapter:\n        name: kv\n"
                 "        config: {store_method: in_memory}\n",
}


@pytest.mark.parametrize("config", IN_MEMORY_CONFIGS)
@pytest.mark.parametrize("command", [("set", "s", "k", "1"), ("get", "s", "k"), ("update", "s", "k", "[]"),
                                     ("delete", "s", "k"), ("list", "s"), ("load", "-"), ("compact",)])
def test_a_config_whose_store_is_in_memory_is_refused_saying_why(tmp_path, config, command):
    cfg = tmp_path / "iii-config.yaml"
    cfg.write_text(IN_MEMORY_CONFIGS[config])
    r = pystate_cli(command[0], "--config", str(cfg), *command[1:], cwd=tmp_path,
                    input='{"scope":"s","key":"k","value":1}\n')
    assert r.returncode == 3, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert str(cfg) in r.stderr and "in-memory" in r.stderr and "nothing persists" in r.stderr
    assert r.stdout == ""


# ---- Ctrl-C ----------------------------------------------------------------------------------


def _wait_for(predicate, what, timeout=30):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_ctrl_c_during_a_large_load_takes_every_record_back(tmp_path):
    import signal

    store = tmp_path / "d"
    with pystate.State(store) as st:
        st.set("keep", "k", "before")
        st.set("s", "k7", "overwritten, then put back")
    before = set(os.listdir(store))
    dump = tmp_path / "big.jsonl"
    with open(dump, "w") as f:
        # Large enough that writing it outlasts a busy machine's scheduling
        # delays: the signal must land while the load writes.
        f.writelines(f'{{"scope":"s","key":"k{i}","value":{i}}}\n' for i in range(1_200_000))
    p = subprocess.Popen([sys.executable, "-m", "pystate", "load", "--data", str(store), str(dump)],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The first pass only reads; the scope's log grows once writing starts.
        log_s = [n for n in before if n.endswith(".log") and (store / n).stat().st_size > 0]
        sizes = {n: (store / n).stat().st_size for n in log_s}
        _wait_for(lambda: any((store / n).stat().st_size > sizes[n] for n in sizes) or p.poll() is not None,
                  "the load to start writing")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "interrupted" in err and "nothing was loaded" in err and "taken back" in err
    assert out == ""
    assert _contents(store) == {("keep", "k"): "before", ("s", "k7"): "overwritten, then put back"}


def test_ctrl_c_while_load_reads_stdin_is_one_line_and_exit_130(tmp_path):
    import signal

    store = tmp_path / "d"
    p = subprocess.Popen([sys.executable, "-m", "pystate", "load", "--data", str(store), "-"], cwd=tmp_path,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write('{"scope":"s","key":"k","value":1}\n')
        p.stdin.flush()
        _wait_for(lambda: (store / "LOCK").exists() or p.poll() is not None, "the store to be opened")
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "interrupted" in err
    assert _contents(store) == {}


# ---- bad options, warnings, damage -------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("serve", "--port", "99999"), ("serve", "--port", "-1"), ("serve", "--port", "http"),
    ("serve", "--host", ""), ("serve", "--token", ""), ("get", "--data", "", "s", "k"),
    ("get", "--config", "", "s", "k"), ("dump", "-o", ""), ("demo", "--path", ""), ("get", "s"),
])
def test_a_bad_option_is_one_line_exit_2(tmp_path, args):
    r = pystate_cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"pystate {args[0]}: ")
    assert os.listdir(tmp_path) == []  # no store made at ./pystate-data


def test_a_recovery_warning_is_one_line(filled):
    with open(_log_of(filled.store), "ab") as f:
        f.write(b"half a record")
    r = filled("get", "s", "k1")
    assert r.returncode == 0
    (line,) = r.stderr.splitlines()
    assert line.startswith("pystate get: warning: store ") and "torn tail" in line and "left as it is" in line


def test_a_config_warning_is_one_line(tmp_path, monkeypatch, capsys):
    # Unknown keys are errors now; ConfigWarning is still a category pystate
    # has, and the CLI shows any warning in one line.
    import warnings

    import pystate.config
    from pystate import cli

    def options(path):
        warnings.warn(f"{path}: something to know,\nover two lines", pystate.ConfigWarning, stacklevel=2)
        return {"adapter": "kv", "path": str(tmp_path / "store")}

    monkeypatch.setattr(pystate.config, "load_state_options", options)
    assert cli.main(["set", "--config", "c.yaml", "s", "k", "1"]) == 0
    assert capsys.readouterr().err == "pystate set: warning: c.yaml: something to know, over two lines\n"


def test_a_damaged_store_says_to_run_check_fix(filled):
    log = _log_of(filled.store)
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    for cmd in (("get", "s", "k1"), ("set", "s", "k1", "1")):
        r = filled(*cmd)
        assert r.returncode == 3 and len(r.stderr.strip().splitlines()) == 1
        assert f"run `pystate check --data {filled.store} --fix`" in r.stderr
    assert filled("check", "--fix").returncode == 0


# ---- exit codes ----------------------------------------------------------------------------


def test_delete_of_a_missing_key_exits_1_and_a_stored_null_is_there(cli):
    cli("set", "s", "null", "null")
    r = cli("delete", "s", "missing")
    assert (r.returncode, r.stdout) == (1, "") and "not found: s/missing" in r.stderr
    r = cli("delete", "s", "null", "--json")
    assert (r.returncode, r.stdout) == (0, "null\n")


def test_compact_of_a_missing_scope_exits_1(cli):
    cli("set", "s", "k", "1")
    r = cli("compact", "nosuch")
    assert r.returncode == 1 and "not found: scope nosuch" in r.stderr
    assert cli("compact", "s").returncode == 0


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_update_whose_every_op_failed_exits_4(cli, json_flag):
    cli("set", "c", "k", '{"n": "x"}')
    r = cli("update", "c", "k", '[{"type":"increment","path":"n","by":1},{"type":"append","path":"n","value":[]}]',
            *json_flag)
    assert r.returncode == 4 and "no op applied: all 2 failed" in r.stderr
    out = json.loads(r.stdout)
    assert (out["new_value"] if json_flag else out) == {"n": "x"}
    assert cli("update", "c", "k", "[]").returncode == 0  # no op, none failed


def test_readme_lists_every_exit_code():
    from pystate import cli

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Command line"):readme.index("## Serving")]
    codes = {getattr(cli, name) for name in cli.__all__ if name.startswith("EXIT_")}
    rows = {int(line.split("|")[1].strip(" `")) for line in section.splitlines() if line.startswith("| `")}
    assert rows == codes


# ---- keys, --version, store options before the command ---------------------------------


def test_keys_prints_a_scopes_keys_in_the_order_of_list(cli):
    for key, value in [("b", "1"), ("a", "2"), ("line\tkey", "null")]:
        cli("set", "s", key, value)
    cli("set", "other", "x", "0")
    r = cli("keys", "s")
    assert r.returncode == 0 and r.stdout.splitlines() == ["b", "a", "line\tkey"]
    assert json.loads(cli("keys", "s", "--json").stdout) == ["b", "a", "line\tkey"]
    assert cli("keys", "none").stdout == ""


def test_version_prints_the_version_and_exits_0(tmp_path):
    r = pystate_cli("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"pystate {pystate.__version__}"
    assert not (tmp_path / "pystate-data").exists()


def test_store_options_may_come_before_the_command(tmp_path):
    store = str(tmp_path / "store")
    assert pystate_cli("--data", store, "set", "s", "k", '{"n": 1}', cwd=tmp_path).returncode == 0
    r = pystate_cli("--data", store, "--json", "get", "s", "k", cwd=tmp_path)
    assert r.returncode == 0 and json.loads(r.stdout) == {"n": 1}
    assert not (tmp_path / "pystate-data").exists()  # not the default store


@pytest.mark.parametrize("args, says", [
    (["--data", "d", "demo"], "--data has no meaning for `demo`"),
    (["--data", "d", "get", "--data", "d", "s", "k"], "--data given twice"),
    (["--data", "d", "get", "--config", "c.yaml", "s", "k"], "name two stores"),
])
def test_a_store_option_before_the_command_that_cannot_apply_is_refused(tmp_path, args, says):
    r = pystate_cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert sorted(os.listdir(tmp_path)) == []
