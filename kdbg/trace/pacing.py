"""A ring reader that spends at most a share of one CPU.

Decoding and printing a record costs Python microseconds on a real machine and
hundreds in an emulated guest; a flood of verdicts would keep a CPU busy reading
records nobody can read as fast, and take it from the traffic being traced. The
reader reads for a slice; if the ring still holds records then, it is behind, and it
rests for as long as it must to keep to its share. Meanwhile the ring fills and the
program counts what it has no room for per key (its ``more`` tables), which is cheap
in the kernel: every verdict is still printed or counted (docs/bpf.md).
"""

from __future__ import annotations

import time

from kdbg.trace.probe import RingProbe

SHARE = 0.1  # of one CPU, for reading records while behind
SLICE_S = 0.01  # CPU time read before looking at the clock again
BATCH = 16  # records between two looks at the clock
POLL_MS = 100  # the longest wait for a record, or rest, in one turn


class PacedReader:
    """Reads ``probe``'s ring with at most ``share`` of one CPU while it is behind."""

    def __init__(self, probe: RingProbe, share: float = SHARE) -> None:
        self.probe = probe
        self.share = share
        self.resume = 0.0  # monotonic time before which it rests
        self.rested = 0.0  # seconds rested in all

    def turn(self) -> None:
        """Rest, if behind, or wait up to POLL_MS for records; then read a slice."""
        now = time.monotonic()
        if now < self.resume:
            pause = min(self.resume - now, POLL_MS / 1000)
            time.sleep(pause)
            self.rested += pause
            return
        cpu = time.thread_time()
        self.probe.poll(POLL_MS, limit=BATCH)
        while self.probe.ring_backlog() and time.thread_time() - cpu < SLICE_S:
            if not self.probe.consume(BATCH):
                break  # the next record is still being written
        if self.probe.ring_backlog():
            used = time.thread_time() - cpu
            self.resume = time.monotonic() + used * (1 / self.share - 1)
