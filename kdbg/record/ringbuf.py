"""The drop ring read in bulk, for the fixed-size records of ``kdbg watch --write``.

:meth:`BulkRing.drain` hands the committed records from the consumer position on to
a callback as one buffer and advances the consumer past them: no per-record Python
beyond one list of header words, checked with ``min``/``max``. The ring's layout and
positions are :class:`kdbg.trace.ringbuf.Ring`'s.
"""

from __future__ import annotations

from collections.abc import Callable

from kdbg.record.layout import RING_BUSY, RING_DISCARD, RING_HDR
from kdbg.trace.ringbuf import Ring, RingError

__all__ = ["BLOCK_BYTES", "BulkRing", "RingError"]

# At most this much goes to one ``write`` (one EVENTS block of the file): a recorder that
# fell behind by megabytes and was then killed mid-write loses one such block, not all
# it had caught up on; its space goes back to the kernel a part at a time.
BLOCK_BYTES = 1 << 20


class BulkRing(Ring):
    """The ring buffer map ``map_fd`` of ``size`` bytes, whose every record is
    ``record_size`` bytes long (header included, a multiple of 8)."""

    def __init__(self, map_fd: int, size: int, record_size: int) -> None:
        if record_size % 8 or record_size <= RING_HDR:
            raise ValueError(f"bad record size {record_size}")
        super().__init__(map_fd, size, double=False)
        self.record_size = record_size
        self._hdr_len = record_size - RING_HDR  # a committed record's header word

    def drain(self, write: Callable[[memoryview, int], None]) -> int:
        """Pass the run of committed records at the consumer position to
        ``write(buffer, count)``, at most :data:`BLOCK_BYTES` at a time, releasing each
        part once written. Returns the records passed."""
        cons, prod = self.positions()
        n = (prod - cons) // self.record_size
        if n <= 0:
            return 0
        with self.view(cons, n * self.record_size) as whole:
            with whole.cast("I") as words_view:
                words = words_view[::self.record_size // 4].tolist()
            if min(words) != self._hdr_len or max(words) != self._hdr_len:
                n = self._committed(words)
            size, per = self.record_size, max(1, BLOCK_BYTES // self.record_size)
            for first in range(0, n, per):
                count = min(per, n - first)
                with whole[first * size:(first + count) * size] as span:
                    write(span, count)
                self.release(cons + (first + count) * size)
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
