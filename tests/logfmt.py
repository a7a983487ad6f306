"""An independent reader and writer of pystate's log format
(docs/format.md), for tests that damage logs on purpose and need to know
where records start and end, or that write logs by hand. Written from the
documented format, with the xxhash package: if the C core drifts from its
documentation, these tests fail.
"""

from __future__ import annotations

import glob
import os
import struct
from dataclasses import dataclass

import xxhash

MAGIC = b"PSLOG\r\n\x1a"
VERSION = 2
PUT, DEL = 1, 2
BLOCK = 32  # one copy of the header block
END_HINT = 64  # offset of the end hint
NO_PREALLOC = 2**48 - 1  # end hint of a sync="always" log: no preallocated space follows
REC_HEADER = 20  # record bytes before the payload
FIXED = 72  # header bytes before the scope name
MARKER = b"pystate store\nformat 2\n"


def check(data: bytes, salt: int = 0) -> int:
    return xxhash.xxh3_64_intdigest(data, seed=salt) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def end_word(end: int, salt: int) -> bytes:
    """The header's end field: the offset in 48 bits, 16 bits of its salted hash above."""
    low = end.to_bytes(6, "little")
    tag = xxhash.xxh3_64_intdigest(low, seed=salt) & 0xFFFF
    return low + tag.to_bytes(2, "little")


def header(name: bytes, salt: int, end: int = 0) -> bytes:
    block = MAGIC + struct.pack("<HHIQI", VERSION, 0, len(name), salt, check(name, salt))
    block += struct.pack("<I", check(block))
    return block + block + end_word(end, salt) + name


def head_tag(head: bytes, salt: int) -> int:
    """A record's 16-bit tag: of len, seq, kind and flags, salted."""
    return xxhash.xxh3_64_intdigest(head, seed=salt) & 0xFFFF


def record(kind: int, seq: int, key: bytes, value: bytes = b"", *, salt: int) -> bytes:
    payload = varint(len(key)) + key + value
    head = struct.pack("<IQBB", len(payload), seq, kind, 0)
    body = head + struct.pack("<H", head_tag(head, salt)) + payload
    return struct.pack("<I", check(body, salt)) + body


@dataclass
class Rec:
    offset: int
    size: int
    kind: int
    seq: int
    key: bytes
    value: bytes


@dataclass
class Header:
    name: bytes
    salt: int
    size: int  # where the first record starts
    end_hint: int | None  # None: damaged


def parse_header(data: bytes) -> Header:
    for at in (0, BLOCK):  # the first intact copy of the block
        block = data[at : at + BLOCK]
        if block[:8] == MAGIC and struct.unpack_from("<I", block, 28)[0] == check(block[:28]):
            break
    else:
        raise AssertionError("no intact copy of the header block")
    version, flags, nlen, salt, name_check = struct.unpack_from("<HHIQI", block, 8)
    assert (version, flags) == (VERSION, 0)
    name = data[FIXED : FIXED + nlen]
    assert len(name) == nlen and name_check == check(name, salt), "bad scope name"
    word = data[END_HINT : END_HINT + 8]
    end = int.from_bytes(word[:6], "little")
    return Header(name, salt, FIXED + nlen, end if end_word(end, salt) == word else None)


def parse(data: bytes) -> tuple[bytes, list[Rec], int]:
    """(scope name, records of the clean prefix, offset where it ends).
    Zero-filled space after the records (preallocated) is not damage."""
    h = parse_header(data)
    off, seq, recs = h.size, 1, []
    while off + REC_HEADER <= len(data):
        c, length, s, kind, fl, tag = struct.unpack_from("<IIQBBH", data, off)
        end = off + REC_HEADER + length
        if (end > len(data) or kind not in (PUT, DEL) or fl or s != seq
                or tag != head_tag(data[off + 4 : off + 18], h.salt) or c != check(data[off + 4 : end], h.salt)):
            break
        p = off + REC_HEADER
        klen, shift = 0, 0
        while True:
            b = data[p]
            p += 1
            klen |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        recs.append(Rec(off, end - off, kind, s, data[p : p + klen], data[p + klen : end]))
        off, seq = end, seq + 1
    return h.name, recs, off


def logs(directory: str | os.PathLike) -> dict[bytes, str]:
    """Scope name -> log file path, for every log in a store directory."""
    out = {}
    for path in glob.glob(os.path.join(os.fspath(directory), "*.log")):
        with open(path, "rb") as f:
            name, _, _ = parse(f.read())
        out[name] = path
    return out
