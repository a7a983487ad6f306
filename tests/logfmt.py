"""An independent reader and writer of pystate's log format (README,
"File format"), for tests that damage logs on purpose and need to know
where records start and end. Written from the documented format, with the
xxhash package: if the C core drifts from its documentation, these tests
fail.
"""

from __future__ import annotations

import glob
import os
import struct
from dataclasses import dataclass

import xxhash

MAGIC = b"PSLOG\r\n\x1a"
VERSION = 1
PUT, DEL = 1, 2


def check(data: bytes) -> int:
    return xxhash.xxh3_64_intdigest(data) & 0xFFFFFFFF


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def header(name: bytes, end: int = 0) -> bytes:
    fixed = MAGIC + struct.pack("<HHI", VERSION, 0, len(name))
    return fixed + struct.pack("<IQ", check(fixed + name), end) + name


def record(kind: int, seq: int, key: bytes, value: bytes = b"") -> bytes:
    payload = varint(len(key)) + key + value
    body = struct.pack("<IQBB", len(payload), seq, kind, 0) + payload
    return struct.pack("<I", check(body)) + body


@dataclass
class Rec:
    offset: int
    size: int
    kind: int
    seq: int
    key: bytes
    value: bytes


def parse(data: bytes) -> tuple[bytes, list[Rec], int]:
    """(scope name, records of the clean prefix, offset where it ends).
    Zero-filled space after the records (preallocated) is not damage."""
    assert data[:8] == MAGIC, "not a log"
    version, flags, nlen = struct.unpack_from("<HHI", data, 8)
    assert (version, flags) == (VERSION, 0)
    chk, _end_hint = struct.unpack_from("<IQ", data, 16)
    name = data[28 : 28 + nlen]
    assert chk == check(data[:16] + name), "bad header"
    off, seq, recs = 28 + nlen, 1, []
    while off + 18 <= len(data):
        c, length, s, kind, fl = struct.unpack_from("<IIQBB", data, off)
        end = off + 18 + length
        if end > len(data) or kind not in (PUT, DEL) or fl or s != seq or c != check(data[off + 4 : end]):
            break
        p = off + 18
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
    return name, recs, off


def logs(directory: str | os.PathLike) -> dict[bytes, str]:
    """Scope name -> log file path, for every log in a store directory."""
    out = {}
    for path in glob.glob(os.path.join(os.fspath(directory), "*.log")):
        with open(path, "rb") as f:
            name, _, _ = parse(f.read())
        out[name] = path
    return out
