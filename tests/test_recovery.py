"""Opening a damaged file store: what it keeps, what it cuts, what it
refuses, and that it reports every loss. Logs are damaged by hand, with
the independent format reader in logfmt.py."""

from __future__ import annotations

import os
import shutil
import struct
import warnings

import pytest

import logfmt
import pystate
from conftest import fill, one_log
from pystate._backend import core as _core


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "store")


def opened(path, **kw):
    """Open, and the RecoveryWarnings that opening gave."""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        st = pystate.State(path, **kw)
    return st, [x for x in w if x.category is pystate.RecoveryWarning]


def set_end_hint(logpath, end):
    salt = logfmt.parse_header(open(logpath, "rb").read()).salt
    with open(logpath, "r+b") as f:
        f.seek(logfmt.END_HINT)
        f.write(logfmt.end_word(end, salt))


# ---- torn tails ------------------------------------------------------------------------


def test_truncation_at_every_offset_keeps_the_whole_records_and_reports_the_rest(path):
    logpath = fill(path)
    data = open(logpath, "rb").read()
    name, recs, end = logfmt.parse(data)
    assert end == len(data) and len(recs) == 6
    hsize = recs[0].offset
    for cut in range(hsize, len(data)):
        with open(logpath, "wb") as f:
            f.write(data[:cut])
        whole = sum(1 for r in recs if r.offset + r.size <= cut)
        kept = recs[whole - 1].offset + recs[whole - 1].size if whole else hsize
        st, warned = opened(path, sync="never")
        assert st.list("s") == [{"i": i} for i in range(whole)]
        rec = st.stats()["recovery"]
        # The log says where its records ended, so a cut on a record
        # boundary is a loss too, and is reported as one.
        assert rec["torn_tails"] == 1
        assert rec["bytes_cut"] == len(data) - kept
        assert len(warned) == 1 and os.path.basename(logpath) in str(warned[0].message)
        st.close()
        # Cut on disk; a log left with no record holds nothing and goes.
        assert (os.path.getsize(logpath) if whole else None) == (kept if whole else None)
        assert os.path.exists(logpath) == bool(whole)


def test_a_log_cut_on_a_record_boundary_gets_its_end_hint_back(path, tmp_path):
    """Found by the model test: a log cut on a record boundary kept an end
    hint past its end, so zeros preallocated after reopening were later
    taken for lost records."""
    logpath = fill(path)
    data = open(logpath, "rb").read()
    _, recs, _ = logfmt.parse(data)
    cut = recs[3].offset + recs[3].size
    with open(logpath, "wb") as f:
        f.write(data[:cut])
    st, warned = opened(path, sync="never")
    assert st.stats()["recovery"]["bytes_cut"] == len(data) - cut
    assert logfmt.parse_header(open(logpath, "rb").read()).end_hint == cut  # on disk while open
    crashed = tmp_path / "crashed"
    shutil.copytree(path, crashed)
    with open(crashed / os.path.basename(logpath), "ab") as f:
        f.write(b"\0" * 4096)  # a crash after preallocating
    st.close()
    again, warned = opened(crashed, sync="never")
    assert again.stats()["recovery"]["torn_tails"] == 0 and warned == []
    assert again.list("s") == [{"i": i} for i in range(4)]
    again.close()


@pytest.mark.parametrize(
    "tail, hint_past_it, lost",
    [(bytes(range(256)) * 8, 0, 2048), (b"garbage", 0, 7), (b"\x00" * 4096, 100, 100),
     (b"\x05" * 10 + b"\x00" * 4096, 0, 10)],
    ids=["bytes", "garbage", "zeros the header says were records", "garbage then zeros"],
)
def test_damage_at_the_end_is_a_torn_tail(path, tail, hint_past_it, lost):
    logpath = fill(path, 3)
    size = os.path.getsize(logpath)
    with open(logpath, "ab") as f:
        f.write(tail)
    if hint_past_it:  # records were appended there, then lost
        set_end_hint(logpath, size + hint_past_it)
    with pytest.warns(pystate.RecoveryWarning, match="torn tail"):
        st = pystate.State(path, sync="never")
    assert st.list("s") == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert st.stats()["recovery"]["bytes_cut"] == lost
    st.set("s", "k3", 3)
    st.close()
    st = pystate.State(path, sync="never")
    assert os.path.getsize(logpath) > size
    assert len(st.list("s")) == 4
    st.close()


def test_zeros_after_the_last_record_are_free_space(path):
    # What a killed process leaves: its preallocated, never-written space.
    logpath = fill(path, 3)
    with open(logpath, "ab") as f:
        f.write(b"\x00" * 65536)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st = pystate.State(path, sync="never")
    assert st.stats()["recovery"]["torn_tails"] == 0
    assert len(st.list("s")) == 3
    st.set("s", "k3", 3)  # written into that space
    st.close()
    st = pystate.State(path)
    assert len(st.list("s")) == 4
    st.close()


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_acknowledged_records_that_read_back_as_zeros_are_reported_cut(path, sync):
    """What a zeroed block or a drive that lied about a flush leaves: the
    last records, from a record boundary on, read as zeros. Every mode
    keeps the end hint, so none takes them for free space."""
    st = pystate.State(path, sync=sync)
    for i in range(60):
        st.set("s", f"k{i:02d}", {"i": i})
    logpath = one_log(st)
    st.close()
    data = bytearray(open(logpath, "rb").read())
    _, recs, end = logfmt.parse(bytes(data))
    assert len(recs) == 60 and end == len(data)
    hint = logfmt.parse_header(bytes(data)).end_hint
    assert hint == (logfmt.NO_PREALLOC if sync == "always" else end)
    boundary = recs[10].offset
    data[boundary:] = bytes(len(data) - boundary)
    open(logpath, "wb").write(data)
    report = _core.inspect(path)  # what `pystate check` reads: not ok
    assert report["torn_tails"] == 1 and not report["ok"]
    with pytest.warns(pystate.RecoveryWarning, match=r"cut 1 torn tail .*are gone"):
        st = pystate.State(path, sync=sync)
    rec = st.stats()["recovery"]
    assert rec["torn_tails"] == 1 and rec["bytes_cut"] == len(data) - boundary
    assert st.list("s") == [{"i": i} for i in range(10)]
    st.close()


# ---- damage before the end -------------------------------------------------------------


@pytest.mark.parametrize("where", ["second record", "a record header field", "just before the last record"])
def test_damage_in_the_middle_raises_and_changes_nothing(path, where):
    logpath = fill(path)
    data = bytearray(open(logpath, "rb").read())
    _, recs, _ = logfmt.parse(bytes(data))
    at = {
        "second record": recs[1].offset + 20,
        "a record header field": recs[2].offset + 5,
        "just before the last record": recs[-1].offset - 1,
    }[where]
    data[at] ^= 0x55
    open(logpath, "wb").write(data)
    listing = sorted(os.listdir(path))
    with pytest.raises(pystate.CorruptError) as e:
        pystate.State(path)
    assert e.value.code == "corrupt"
    assert os.path.basename(logpath) in e.value.message
    damaged_at = [r for r in recs if r.offset <= at < r.offset + r.size][0].offset
    assert f"offset {damaged_at}" in e.value.message
    assert open(logpath, "rb").read() == data
    assert sorted(os.listdir(path)) == listing


def test_repair_salvages_every_valid_record_and_keeps_the_damaged_file(path):
    logpath = fill(path)
    data = bytearray(open(logpath, "rb").read())
    _, recs, _ = logfmt.parse(bytes(data))
    data[recs[2].offset + 19] ^= 1
    open(logpath, "wb").write(data)
    with pytest.warns(pystate.RecoveryWarning, match=r"salvaged 1 damaged log \(1 record lost\)"):
        st = pystate.State(path, repair=True)
    assert st.list("s") == [{"i": i} for i in (0, 1, 3, 4, 5)]
    rec = st.stats()["recovery"]
    assert rec["repaired"] == 1 and rec["records_lost"] == 1  # told by the sequence numbers
    assert open(logpath + ".corrupt-1", "rb").read() == data
    assert st.check()["ok"]
    st.close()
    st = pystate.State(path)  # clean from now on
    assert len(st.list("s")) == 5
    st.close()


# ---- headers -----------------------------------------------------------------------------


def fill_100(path):
    st = pystate.State(path, sync="never")
    for i in range(100):
        st.set("users", f"u{i}", {"i": i})
    logpath = one_log(st)
    st.close()
    return logpath


@pytest.mark.parametrize(
    "offsets, salvaged",
    [((12,), 100), ((logfmt.BLOCK + 12,), 100), ((12, logfmt.BLOCK + 12), 0), ((logfmt.FIXED + 2,), 0)],
    ids=["name_len, first copy", "name_len, second copy", "name_len, both copies", "the scope name"],
)
def test_a_damaged_header_of_a_log_with_records_is_corruption_never_a_cut(path, offsets, salvaged):
    logpath = fill_100(path)
    data = bytearray(open(logpath, "rb").read())
    for at in offsets:
        data[at] ^= 0x01  # one flipped bit
    open(logpath, "wb").write(data)
    listing = sorted(os.listdir(path))
    with pytest.raises(pystate.CorruptError) as e:
        pystate.State(path)
    assert os.path.basename(logpath) in e.value.message and "header" in e.value.message
    assert open(logpath, "rb").read() == data and sorted(os.listdir(path)) == listing
    with pytest.warns(pystate.RecoveryWarning):
        st = pystate.State(path, repair=True)
    rec = st.stats()["recovery"]
    assert rec["repaired"] == 1
    assert len(st.list("users")) == salvaged
    if not salvaged:  # the scope cannot be told: kept aside whole, counted lost
        assert rec["logs_lost"] == 1
        assert rec["records_lost"] == (100 if offsets == (logfmt.FIXED + 2,) else 0)
    assert open(logpath + ".corrupt-1", "rb").read() == data
    st.close()


@pytest.mark.parametrize("content", [b"", b"\0" * 14, b"\0" * 4096, b"PSLOG\r\n"], ids=repr)
def test_a_log_that_is_empty_or_zeros_is_damage_not_a_log_being_created(path, content):
    logpath = fill(path, 3)
    open(logpath, "wb").write(content)
    with pytest.raises(pystate.CorruptError, match="repair"):
        pystate.State(path)
    assert open(logpath, "rb").read() == content
    with pytest.warns(pystate.RecoveryWarning, match="kept 1 unreadable log aside"):
        st = pystate.State(path, repair=True)
    assert st.list_groups() == [] and st.stats()["recovery"]["logs_lost"] == 1
    assert open(logpath + ".corrupt-1", "rb").read() == content
    st.close()


def test_a_log_of_another_format_version_is_refused_and_not_rewritten(path):
    logpath = fill(path, 1)
    # Version 1, the format before salts: one header, unsalted checks.
    fixed = logfmt.MAGIC + struct.pack("<HHI", 1, 0, 1)
    old = fixed + struct.pack("<IQ", logfmt.check(fixed + b"s"), 0) + b"s"
    old += logfmt.record(logfmt.PUT, 1, b"k", b"1", salt=0)
    open(logpath, "wb").write(old)
    for repair in (False, True):
        with pytest.raises(pystate.CorruptError, match="another format version"):
            pystate.State(path, repair=repair)
        assert open(logpath, "rb").read() == old


def test_a_log_written_by_hand_from_the_documented_format_is_read(path):
    os.makedirs(path)
    open(os.path.join(path, "PYSTATE"), "wb").write(logfmt.MARKER)
    salt = 0x5EED
    with open(os.path.join(path, "00000000000000aa.log"), "wb") as f:
        f.write(logfmt.header(b"hand", salt))
        f.write(logfmt.record(logfmt.PUT, 1, b"a", b'{"x":1}', salt=salt))
        f.write(logfmt.record(logfmt.PUT, 2, b"b", b"2", salt=salt))
        f.write(logfmt.record(logfmt.DEL, 3, b"a", salt=salt))
        f.write(logfmt.record(logfmt.PUT, 4, b"a", b"3", salt=salt))
    st = pystate.State(path)
    assert st.list("hand") == [2, 3]
    st.close()


# ---- user data that looks like records ----------------------------------------------------


def ascii_record(salt, seq, key, value_of):
    """The image of a whole record (key -> value_of(nonce)) of a log salted
    `salt`, every byte ASCII, so that a str key can carry it: the nonce is
    varied (in length too, for the head's tag) until the check bytes are."""
    for nonce in range(10_000):
        image = logfmt.record(logfmt.PUT, seq, key, value_of(nonce), salt=salt)
        if max(image) < 0x80:
            return image.decode("ascii")
    raise AssertionError("no ASCII image found")


@pytest.mark.parametrize("salt_known", [False, True], ids=["forged record", "control: the log's own salt"])
def test_a_record_hidden_in_a_key_is_never_taken_for_one(path, salt_known, tmp_path):
    """A key carrying the bytes of a whole record `admin = {"role": "root"}`
    (the next record of its log), in a record that is then torn. Without
    the log's salt, which no user can know, the hidden record never
    verifies: opening cuts the torn tail and repair salvages nothing that
    was not written. The control builds it with the log's own salt, to show
    what the salt keeps out."""
    st = pystate.State(path, sync="never")
    st.set("users", "ada", {"role": "user"})
    logpath = one_log(st)
    salt = logfmt.parse_header(open(logpath, "rb").read()).salt if salt_known else 0
    hidden = ascii_record(salt, 3, b"admin", lambda n: b'{"role":"root",%s"n":%d}' % (b" " * (n % 89), n))
    st.set("users", hidden + "x" * 40, 1)
    st.close()
    data = open(logpath, "rb").read()
    torn = data[:-20]  # cut inside the key's padding: the hidden image is whole
    open(logpath, "wb").write(torn)
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    if salt_known:
        with pytest.raises(pystate.CorruptError):
            pystate.State(path)
        return
    st, warned = opened(copy, repair=True)
    assert st.get("users", "admin") is None and st.stats()["recovery"]["repaired"] == 0
    assert [k for k, _ in st.items("users")] == ["ada"]
    st.close()
    st, warned = opened(path)
    assert len(warned) == 1 and st.stats()["recovery"]["torn_tails"] == 1
    assert st.get("users", "admin") is None
    assert [k for k, _ in st.items("users")] == ["ada"]
    assert st.check()["ok"]
    st.close()


def test_values_that_look_like_records_round_trip(path):
    """Values holding record images (unsalted guesses) and log headers are
    just values: stored, compacted, reopened, never parsed."""
    fake = logfmt.header(b"users", 0) + logfmt.record(logfmt.PUT, 1, b"admin", b"1", salt=0)
    st = pystate.State(path, sync="never")
    for i in range(20):
        st.set("s", f"k{i}", fake.decode("latin-1"))
    st.compact()
    st.close()
    st = pystate.State(path)
    assert st.list("s") == [fake.decode("latin-1")] * 20
    assert st.list_groups() == ["s"] and st.check()["ok"]
    st.close()


# ---- leftovers -----------------------------------------------------------------------------


def test_leftover_temporaries_of_ours_are_removed_and_nothing_else(path):
    logpath = fill(path, 2)
    whole = open(logpath, "rb").read()
    ours = {logpath + ".tmp-00000000000000aa": whole, logpath + ".tmp-00000000000000bb": whole[:5]}
    theirs = {logpath + ".tmp-00000000000000cc": b"someone else's", logpath + ".compact": b"half written",
              os.path.join(path, "notes.log"): b"14 bytes here."}
    for p, content in {**ours, **theirs}.items():
        open(p, "wb").write(content)
    st = pystate.State(path)
    assert st.stats()["recovery"]["stray_files"] == 2
    assert len(st.list("s")) == 2
    st.close()
    assert not any(os.path.exists(p) for p in ours)
    assert all(open(p, "rb").read() == c for p, c in theirs.items())


def test_a_temporary_holding_the_only_copy_of_a_scope_is_put_back_by_repair(path):
    """What a crash that lost a rename would leave: a scope's records under
    a temporary's name only. Never removed as a leftover: refused, and
    repair makes it the scope's log again."""
    logpath = fill(path, 3)
    data = open(logpath, "rb").read()
    orphan = logpath + ".tmp-00000000000000ab"
    os.replace(logpath, orphan)
    with pytest.raises(pystate.CorruptError, match="only|no log holds") as e:
        pystate.State(path)
    assert os.path.basename(orphan) in e.value.message and "repair" in e.value.message
    assert open(orphan, "rb").read() == data
    with pytest.warns(pystate.RecoveryWarning, match="salvaged 1 damaged log"):
        st = pystate.State(path, repair=True)
    assert st.list("s") == [{"i": i} for i in range(3)]
    assert st.stats()["recovery"]["repaired"] == 1 and st.check()["ok"]
    st.close()
    assert not os.path.exists(orphan) and list(logfmt.logs(path)) == [b"s"]


def test_repair_also_counts_what_it_cannot_salvage_at_the_end(path):
    st = pystate.State(path, sync="always")
    for i in range(10):
        st.set("s", f"k{i}", {"i": i})
    logpath = one_log(st)
    st.close()
    data = bytearray(open(logpath, "rb").read())
    _, recs, _ = logfmt.parse(bytes(data))
    data[recs[2].offset + 22] ^= 0x10  # record 3 damaged
    data[recs[7].offset:] = bytes(len(data) - recs[7].offset)  # records 8 to 10 zeroed
    open(logpath, "wb").write(data)
    with pytest.warns(pystate.RecoveryWarning, match="cut 1 torn tail") as w:
        st = pystate.State(path, repair=True)
    rec = st.stats()["recovery"]
    assert rec["records_lost"] == 1 and rec["torn_tails"] == 1
    assert rec["bytes_cut"] == len(data) - recs[7].offset
    assert "salvaged 1 damaged log (1 record lost)" in str(w[0].message)
    assert len(st.list("s")) == 6
    st.close()


def test_a_log_kept_aside_by_repair_is_the_damaged_file_byte_for_byte(path):
    logpath = fill(path, 4)
    data = bytearray(open(logpath, "rb").read())
    data[3] ^= 0x01  # the first copy of the header block
    data += b"torn record"
    open(logpath, "wb").write(data)
    with pytest.warns(pystate.RecoveryWarning):
        st = pystate.State(path, repair=True)
    assert len(st.list("s")) == 4
    st.close()
    assert open(logpath + ".corrupt-1", "rb").read() == data


@pytest.mark.parametrize("tail", [b"", b"\0" * 4096], ids=["clean end", "zeros after"])
def test_a_damaged_end_hint_never_passes_zeros_for_free_space(path, tail):
    logpath = fill(path, 3)
    with open(logpath, "r+b") as f:
        f.seek(logfmt.END_HINT + 1)
        byte = f.read(1)
        f.seek(logfmt.END_HINT + 1)
        f.write(bytes([byte[0] ^ 0x04]))
        f.seek(0, 2)
        f.write(tail)
    st, warned = opened(path)
    rec = st.stats()["recovery"]
    assert (rec["torn_tails"], rec["bytes_cut"]) == ((1, len(tail)) if tail else (0, 0))
    assert bool(warned) == bool(tail) and (not tail or "end hint is damaged" in str(warned[0].message))
    assert len(st.list("s")) == 3
    st.close()


def test_a_key_full_of_fake_record_heads_is_cut_as_a_torn_tail(path):
    """Fake heads claiming long payloads, in the key of a torn record: the
    search for a record after the damage rejects each by its head's salted
    tag, without hashing the payload it claims (see bench for the time)."""
    fake = b"\x00\x00\x00\x00" + (1 << 20).to_bytes(4, "little") + bytes(8) + b"\x01\x00" + b"AB"
    st = pystate.State(path, sync="never")
    st.set("s", "a", 1)
    st.set("s", (fake * 20000).decode("latin-1"), 2)
    logpath = one_log(st)
    st.close()
    data = open(logpath, "rb").read()
    open(logpath, "wb").write(data[:-2])
    st, warned = opened(path)
    assert st.stats()["recovery"]["torn_tails"] == 1 and list(st.items("s")) == [("a", 1)]
    st.close()
