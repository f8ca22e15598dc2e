"""A BPF ring buffer read from its memory in bulk, for fixed-size records.

The kernel maps a ring buffer map as (kernel/bpf/ringbuf.c): one page holding the
consumer position, which user space writes; one page holding the producer position;
then the data pages, mapped twice in a row so that a record that wraps is still
contiguous. Each record starts with an 8-byte header whose first word is its length,
with bit 31 set while the producer still writes it and bit 30 set if it was discarded.

:meth:`BulkRing.drain` hands the committed records from the consumer position on to
a callback as one buffer and advances the consumer past them: no per-record Python
beyond one list of header words, checked with ``min``/``max``. Loads and stores are
plain: the producer and consumer positions are 8-byte aligned words, and x86-64 keeps
loads ordered with loads and stores with stores, which is what the kernel's
``smp_load_acquire``/``smp_store_release`` pairing needs here.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable

from kdbg.errors import KdbgError
from kdbg.record.layout import RING_BUSY, RING_DISCARD, RING_HDR

_U64 = struct.Struct("<Q")


class RingError(KdbgError):
    """The ring buffer could not be mapped, or held a record kdbg did not write."""


class BulkRing:
    """The ring buffer map ``map_fd`` of ``size`` bytes, whose every record is
    ``record_size`` bytes long (header included, a multiple of 8)."""

    def __init__(self, map_fd: int, size: int, record_size: int) -> None:
        if record_size % 8 or record_size <= RING_HDR:
            raise ValueError(f"bad record size {record_size}")
        page = mmap.PAGESIZE
        try:
            self._cons = mmap.mmap(map_fd, page, flags=mmap.MAP_SHARED,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod = mmap.mmap(map_fd, page + 2 * size, flags=mmap.MAP_SHARED,
                                   prot=mmap.PROT_READ, offset=page)
        except (OSError, ValueError) as err:
            raise RingError(f"cannot map the ring buffer: {err}") from None
        self._page = page
        self.size = size
        self.mask = size - 1
        self.record_size = record_size
        self._hdr_len = record_size - RING_HDR  # a committed record's header word
        self._view = memoryview(self._prod)

    def _positions(self) -> tuple[int, int]:
        return _U64.unpack_from(self._cons, 0)[0], _U64.unpack_from(self._prod, 0)[0]

    def pending(self) -> int:
        """Bytes reserved by the producer and not yet consumed."""
        cons, prod = self._positions()
        return prod - cons

    def drain(self, write: Callable[[memoryview, int], None]) -> int:
        """Pass the run of committed records at the consumer position to
        ``write(buffer, count)``, then release them. Returns the records passed."""
        cons, prod = self._positions()
        n = (prod - cons) // self.record_size
        if n <= 0:
            return 0
        start = self._page + (cons & self.mask)
        with self._view[start:start + n * self.record_size] as whole:
            with whole.cast("I") as words_view:
                words = words_view[::self.record_size // 4].tolist()
            if min(words) != self._hdr_len or max(words) != self._hdr_len:
                n = self._committed(words)
            if n:
                with whole[:n * self.record_size] as span:
                    write(span, n)
                self._cons[0:8] = _U64.pack(cons + n * self.record_size)
        return n

    def _committed(self, words: list[int]) -> int:
        """Records before the first one still being written (busy)."""
        for i, word in enumerate(words):
            if word == self._hdr_len:
                continue
            if word & RING_BUSY:
                return i
            raise RingError(f"ring buffer record of {word & ~RING_DISCARD} bytes"
                            f"{' (discarded)' if word & RING_DISCARD else ''} "
                            f"where kdbg writes {self._hdr_len}")
        return len(words)

    def close(self) -> None:
        """Unmap the ring. A view still held (by an exception's traceback, say) leaves
        the mapping to the garbage collector instead."""
        try:
            self._view.release()
            self._prod.close()
            self._cons.close()
        except BufferError:
            pass
