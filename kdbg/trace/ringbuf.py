"""A BPF ring buffer read from its memory, without bcc or libbpf.

The kernel maps a ring buffer map as (kernel/bpf/ringbuf.c): one page holding the
consumer position, which user space writes; one page holding the producer position;
then the data pages, mapped twice in a row so that a record that wraps is still
contiguous. Each record starts with an 8-byte header whose first word is its length,
with bit 31 set while the producer still writes it and bit 30 set if it was discarded;
records are 8-byte aligned. Loads and stores are plain: the positions are 8-byte
aligned words, and x86-64 keeps loads ordered with loads and stores with stores, which
is what the kernel's ``smp_load_acquire``/``smp_store_release`` pairing needs here.
"""

from __future__ import annotations

import mmap
import select
import struct
from collections.abc import Callable

from kdbg.errors import KdbgError

RING_HDR = 8
RING_BUSY = 1 << 31
RING_DISCARD = 1 << 30
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
RELEASE_EVERY = 512  # records handed over before the space they took is given back


class RingError(KdbgError):
    """The ring buffer could not be mapped, or held a record kdbg did not write."""


class Ring:
    """The ring buffer map ``map_fd`` of ``size`` bytes (a power of two). ``double``:
    map the data pages twice, as the kernel offers, so a record that wraps reads whole
    (every mapped page counts in the reader's resident memory: a large ring read in
    bulk maps them once, :meth:`view` copying the rare run that wraps)."""

    def __init__(self, map_fd: int, size: int, *, double: bool = True) -> None:
        page = mmap.PAGESIZE
        self.double = double
        try:
            self._cons = mmap.mmap(map_fd, page, flags=mmap.MAP_SHARED,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            self._prod = mmap.mmap(map_fd, page + (2 if double else 1) * size,
                                   flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=page)
        except (OSError, ValueError) as err:
            raise RingError(f"cannot map the ring buffer: {err}") from None
        self._page = page
        self.size = size
        self.mask = size - 1
        self._view = memoryview(self._prod)
        self._fd = map_fd
        self._poll: select.epoll | None = None  # made on the first wait

    def positions(self) -> tuple[int, int]:
        """(consumer, producer) positions."""
        return _U64.unpack_from(self._cons, 0)[0], _U64.unpack_from(self._prod, 0)[0]

    def pending(self) -> int:
        """Bytes reserved by the producer and not yet consumed."""
        cons, prod = self.positions()
        return prod - cons

    def release(self, cons: int) -> None:
        """Give the space before ``cons`` back to the producer."""
        self._cons[0:8] = _U64.pack(cons)

    def wait(self, timeout_ms: int) -> None:
        """Sleep until the kernel wakes readers (a record arrived) or ``timeout_ms``."""
        if self._poll is None:
            self._poll = select.epoll()
            self._poll.register(self._fd, select.EPOLLIN)
        self._poll.poll(timeout_ms / 1000)

    def each(self, handle: Callable[[memoryview], None], limit: int | None = None) -> int:
        """Hand each committed record (its body, without the header) to ``handle`` in
        order, up to ``limit``; discarded records are skipped. Returns how many were
        handed over. A view is valid only during its call."""
        cons, prod = self.positions()
        done = since = 0
        view, base, mask = self._view, self._page, self.mask
        while cons < prod and (limit is None or done < limit):
            start = base + (cons & mask)
            word = _U32.unpack_from(view, start)[0]
            if word & RING_BUSY:
                break
            length = word & ~(RING_BUSY | RING_DISCARD)
            if not word & RING_DISCARD:
                with view[start + RING_HDR:start + RING_HDR + length] as body:
                    handle(body)
                done += 1
            cons += (length + RING_HDR + 7) & ~7
            since += 1
            if since >= RELEASE_EVERY:
                self.release(cons)
                since = 0
        self.release(cons)
        return done

    def view(self, start: int, length: int) -> memoryview:
        """``length`` bytes of the ring from position ``start``: a view of the mapping (a
        run that wraps goes on into the second mapping of the data pages), or with one
        mapping, a copy of a run that wraps."""
        begin = self._page + (start & self.mask)
        end = self._page + self.size
        if self.double or begin + length <= end:
            return self._view[begin:begin + length]
        head = bytes(self._view[begin:end])
        return memoryview(head + bytes(self._view[self._page:self._page + length - len(head)]))

    def close(self) -> None:
        """Unmap the ring. A view still held (by an exception's traceback, say) leaves
        the mapping to the garbage collector instead."""
        if self._poll is not None:
            self._poll.close()
        try:
            self._view.release()
            self._prod.close()
            self._cons.close()
        except BufferError:
            pass
