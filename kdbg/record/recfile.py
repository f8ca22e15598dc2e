"""The recording file of ``kdbg watch --write``: writing and reading it (docs/record.md).

A file header, then blocks. Each block is a 16-byte header (type, record count,
payload length) and its payload. The first block is META (JSON: the kernel, its
reason names, the record layout); EVENTS blocks carry records exactly as the ring
buffer held them; SYMBOLS blocks (JSON) name every address the events before them
use, and the namespaces; the END block (JSON) carries the counts kept in the kernel.
A file cut short (kdbg killed mid-write) reads up to its last whole block.

Everything is little-endian.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from kdbg.errors import BadInput, KdbgError

MAGIC = b"KDBGREC\x00"
VERSION = 1
FILE_HEADER = struct.Struct("<8sHHI16x")  # magic, version, header size, flags: 32 bytes
BLOCK_HEADER = struct.Struct("<IIQ")  # type, records, payload bytes: 16 bytes

META, EVENTS, SYMBOLS, END = 1, 2, 3, 4
BLOCK_NAMES = {META: "META", EVENTS: "EVENTS", SYMBOLS: "SYMBOLS", END: "END"}


class RecordingError(BadInput):
    """Not a kdbg recording, or one this kdbg cannot read (exit 2)."""


class RecordingIOError(KdbgError):
    """The recording could not be written or read (disk full, permissions): exit 1."""


def io_error(path: str | Path, err: OSError, doing: str) -> RecordingIOError:
    why = "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
    return RecordingIOError(f"cannot {doing} {path}: {why}")


class RecordingWriter:
    """Appends blocks to a new recording. Every failure is a RecordingIOError."""

    def __init__(self, path: str | Path, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        try:
            # "-": standard output, for a recorder whose bytes another kdbg keeps (the lab).
            self._f: BinaryIO = (os.fdopen(os.dup(1), "wb", buffering=0) if str(path) == "-"
                                 else open(self.path, "wb", buffering=0))  # noqa: SIM115
        except OSError as err:
            raise io_error(self.path, err, "create") from None
        self.bytes = 0
        self.records = 0
        self.failed = False  # a write failed: the file ends somewhere in a block
        self._write(FILE_HEADER.pack(MAGIC, VERSION, FILE_HEADER.size, 0))
        self.json_block(META, meta)

    def _write(self, data: bytes | memoryview) -> None:
        try:
            done = 0
            with memoryview(data) as view:
                while done < len(view):
                    n = self._f.write(view[done:])
                    if not n:
                        raise OSError(errno.EIO, "short write")
                    done += n
                    self.bytes += n
        except OSError as err:
            self.failed = True
            raise io_error(self.path, err, "write") from None

    def json_block(self, kind: int, doc: dict[str, Any]) -> None:
        payload = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        self._write(BLOCK_HEADER.pack(kind, 0, len(payload)) + payload)

    def events(self, buffer: memoryview, count: int) -> None:
        """One EVENTS block: ``count`` records, copied as they lie in ``buffer``."""
        self._write(BLOCK_HEADER.pack(EVENTS, count, len(buffer)))
        self._write(buffer)
        self.records += count

    def close(self) -> None:
        try:
            self._f.close()
        except OSError as err:
            raise io_error(self.path, err, "close") from None


@dataclass
class Recording:
    """A recording read back: its META, the SYMBOLS merged, END (None when the file
    was cut before it), and the EVENTS blocks as buffers over the file's bytes."""

    path: Path
    version: int
    meta: dict[str, Any]
    symbols: dict[int, dict[str, Any]] = field(default_factory=dict)
    netns: dict[int, str] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    chunks: list[tuple[memoryview, int]] = field(default_factory=list)
    truncated_bytes: int = 0  # bytes after the last whole block
    size: int = 0

    @property
    def records(self) -> int:
        return sum(n for _, n in self.chunks)

    @property
    def record_size(self) -> int:
        return int(self.meta["record_size"])

    def raw_records(self) -> Iterator[memoryview]:
        """Each record's bytes after its ring header (the struct and the snapshot)."""
        size = self.record_size
        for buf, n in self.chunks:
            for i in range(n):
                yield buf[i * size + 8:(i + 1) * size]


def read(path: str | Path) -> Recording:
    """Read a recording. RecordingError for a file that is not one, or of an unknown
    version; RecordingIOError when it cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data: bytes | mmap.mmap = (mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                                       if size else b"")
    except OSError as err:
        raise io_error(path, err, "read") from None
    if len(data) < FILE_HEADER.size or data[:8] != MAGIC:
        raise RecordingError(f"{path} is not a kdbg recording (no {MAGIC[:7].decode()} "
                             "header)")
    _magic, version, header_size, _flags = FILE_HEADER.unpack_from(data, 0)
    if version != VERSION:
        raise RecordingError(f"{path} is a kdbg recording of format version {version}; "
                             f"this kdbg reads version {VERSION}",
                             hint="read it with the kdbg that wrote it")
    view = memoryview(data)
    rec: Recording | None = None
    off = header_size
    while off + BLOCK_HEADER.size <= len(data):
        kind, count, length = BLOCK_HEADER.unpack_from(data, off)
        body = off + BLOCK_HEADER.size
        if body + length > len(data):
            break
        payload = view[body:body + length]
        if kind == EVENTS:
            if rec is None:
                raise RecordingError(f"{path}: events before the META block")
            if count * int(rec.meta.get("record_size", 0)) != length:
                raise RecordingError(f"{path}: an EVENTS block of {length} bytes holds "
                                     f"{count} records of {rec.record_size}")
            rec.chunks.append((payload, count))
        elif kind in (META, SYMBOLS, END):
            try:
                doc = json.loads(bytes(payload))
            except ValueError:
                raise RecordingError(f"{path}: a {BLOCK_NAMES[kind]} block is not JSON"
                                     ) from None
            if kind == META:
                if not isinstance(doc, dict):
                    raise RecordingError(f"{path}: its META block is not a JSON object")
                rec = Recording(path, version, doc, size=len(data))
            elif rec is None:
                raise RecordingError(f"{path}: no META block first")
            elif kind == SYMBOLS:
                try:
                    for addr, info in doc.get("addresses", {}).items():
                        rec.symbols[int(addr, 16)] = dict(info)
                    rec.netns.update({int(k): str(v) for k, v in doc.get("netns", {}).items()})
                except (AttributeError, TypeError, ValueError):
                    raise RecordingError(f"{path}: a SYMBOLS block at byte {off} is malformed"
                                         ) from None
            else:
                rec.end = doc if isinstance(doc, dict) else None
        # Other block types are skipped: a later writer may add ones a reader can ignore.
        off = body + length
    if rec is None:
        raise RecordingError(f"{path}: cut before its META block")
    rec.truncated_bytes = len(data) - off
    return rec
