"""Load a tracer's program (:mod:`kdbg.trace.objcache`), attach it, and read it back:
its ring buffer (:mod:`kdbg.trace.ringbuf`) and its maps.

The drop program runs on the ``kfree_skb`` tracepoint as a BTF-typed raw tracepoint
(tp_btf): the kernel calls it with the tracepoint's arguments, without first writing
the perf record that ``skb:kfree_skb`` programs read, and its struct reads are plain
loads rather than a helper call each (docs/watch.md, "Overhead").
"""

from __future__ import annotations

import ctypes as ct
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdbg.errors import ProbeUnavailable
from kdbg.trace import bpfsys, layout, objcache
from kdbg.trace.objcache import Loaded
from kdbg.trace.program import FUNC_NAME, TRACEPOINT_NAME
from kdbg.trace.ringbuf import Ring

TRACEPOINT = "skb:kfree_skb"  # what the drop program watches, as the user knows it
TALLY_TRIES = 5  # reads of the stats that a slot's move into the table may disturb


def check_privileges() -> None:
    """ProbeUnavailable unless this process may load BPF and read kernel addresses."""
    if os.geteuid() == 0:
        return
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(line for line in status.splitlines()
                           if line.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        cap_eff = 0
    cap_sys_admin, cap_perfmon, cap_bpf = 1 << 21, 1 << 38, 1 << 39
    if cap_eff & cap_sys_admin or (cap_eff & cap_bpf and cap_eff & cap_perfmon):
        return
    raise ProbeUnavailable(
        "loading BPF needs root (or CAP_BPF with CAP_PERFMON)", hint="run with sudo"
    )


def per_cpu_u64(value: bytes) -> list[int]:
    """A per-CPU map's value of one ``__u64`` per CPU, as a list."""
    return list(struct.unpack(f"<{len(value) // 8}Q", value))


class RingProbe:
    """A loaded program with a ring buffer named ``events`` and a per-CPU ``counters``
    array: the shape of the drop, path and hardware-drop programs. Subclasses name the
    record type and the counter slots."""

    RECORD: Any = None  # the ctypes struct of one ring-buffer record
    COUNTERS: dict[int, str] = {}  # counter slot -> name
    LABEL = "program"

    def __init__(self, text: str, attachments: list[tuple[str, str]]) -> None:
        self.text = text
        self.attachments = attachments
        self._obj: Loaded | None = None
        self._ring: Ring | None = None
        self._handle: Callable[[memoryview], None] = lambda _view: None

    def cached(self) -> bool:
        """Whether :meth:`load` will find the program compiled."""
        return objcache.is_cached(self.text, self.attachments)

    def load(self) -> None:
        """Compile (or take from the cache), load and attach; no ring reader."""
        self._obj = objcache.load(self.text, self.attachments, self.LABEL)

    def start(self, on_event: Callable[[Any], None]) -> None:
        """Load and attach; ``on_event`` gets each record (a copy) during :meth:`poll`."""
        self.load()
        record = self.RECORD
        self._handle = lambda view: on_event(record.from_buffer_copy(view))
        self._ring = Ring(self.fd("events"), self.obj.specs["events"].max_entries)

    @property
    def obj(self) -> Loaded:
        assert self._obj is not None, "the program is not loaded"
        return self._obj

    @property
    def loaded(self) -> bool:
        return self._obj is not None

    def fd(self, name: str) -> int:
        """The fd of map ``name``."""
        return self.obj.fds[name]

    def poll(self, timeout_ms: int, limit: int | None = None) -> None:
        """Deliver pending events (up to ``limit``), waiting up to ``timeout_ms`` for
        the first."""
        assert self._ring is not None
        if self._ring.pending() == 0:
            self._ring.wait(timeout_ms)
        self.consume(limit)

    def consume(self, limit: int | None = None) -> int:
        """Deliver what is pending (up to ``limit`` records) without waiting."""
        return self._ring.each(self._handle, limit) if self._ring is not None else 0

    def ring_backlog(self) -> int:
        """Bytes in the ring not read yet."""
        return self._ring.pending() if self._ring is not None else 0

    def lookup(self, name: str, key: bytes) -> bytes | None:
        """Map ``name``'s value under ``key`` (every CPU's, for a per-CPU map)."""
        spec = self.obj.specs[name]
        size = spec.value_size
        if spec.type in bpfsys.PERCPU_TYPES:
            size = ((size + 7) & ~7) * bpfsys.possible_cpus()
        return bpfsys.map_lookup(self.fd(name), key, size)

    def items(self, name: str) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of hash map ``name``; keys that vanish meanwhile are left out."""
        spec = self.obj.specs[name]
        out = []
        for key in bpfsys.map_keys(self.fd(name), spec.key_size):
            value = self.lookup(name, key)
            if value is not None:
                out.append((key, value))
        return out

    def update(self, name: str, key: bytes, value: bytes) -> None:
        """Set map ``name``'s ``key`` to ``value``."""
        bpfsys.map_update(self.fd(name), key, value)

    def counters(self) -> dict[str, int]:
        """The per-CPU counters, summed, by name."""
        out = {}
        for slot, name in self.COUNTERS.items():
            value = self.lookup("counters", struct.pack("<I", slot))
            out[name] = sum(per_cpu_u64(value)) if value is not None else 0
        return out

    def detach(self) -> None:
        """Stop the program; its maps stay readable until :meth:`close`."""
        if self._obj is not None:
            self._obj.detach()

    def close(self) -> None:
        """Detach and free everything (idempotent)."""
        ring, self._ring = self._ring, None
        if ring is not None:
            ring.close()
        obj, self._obj = self._obj, None
        if obj is not None:
            obj.close()


class DropProbe(RingProbe):
    """The drop program: ring buffer, in-kernel stats, counters and stacks."""

    RECORD = layout.RawDropEvent
    COUNTERS = {layout.CTR_LOST: "lost", layout.CTR_STATS_FULL: "stats_full",
                layout.CTR_SEEN: "seen", layout.CTR_MATCHED: "matched"}
    LABEL = "drop program"

    def __init__(self, text: str) -> None:
        super().__init__(text, [(f"btf:{TRACEPOINT_NAME}", FUNC_NAME)])
        self._learn: Ring | None = None

    def start(self, on_event: Callable[[Any], None]) -> None:
        super().start(on_event)
        if "learn" in self.obj.specs:
            self._learn = Ring(self.fd("learn"), self.obj.specs["learn"].max_entries)

    def learned(self, handle: Callable[[layout.RawLearn], None]) -> int:
        """Hand each stack the program sent to learn a call chain from to ``handle``."""
        if self._learn is None:
            return 0
        return self._learn.each(lambda view: handle(layout.RawLearn.from_buffer_copy(view)))

    def close(self) -> None:
        learn, self._learn = self._learn, None
        if learn is not None:
            learn.close()
        super().close()

    def stats(self) -> dict[tuple[int, int], int]:
        """In-kernel counts of matching drops per (reason code, location address)."""
        out: dict[tuple[int, int], int] = {}
        for (reason, location, _netns, _ifname), n in self.stats_by_dev().items():
            out[reason, location] = out.get((reason, location), 0) + n
        return out

    def stats_by_dev(self) -> dict[tuple[int, int, int, str], int]:
        """In-kernel counts per (reason code, location address, netns inode, ifname);
        netns and ifname are 0 and "" unless the program counts per device.

        The counts are the table's plus each CPU's tally slots'. A slot moves its count
        into the table when another key comes; the slots are read before and after the
        table, and read again if a slot changed key (or restarted) in between, so a
        count is never taken twice nor missed: the totals only ever grow."""
        for _ in range(TALLY_TRIES):
            before = self.tallies()
            table: dict[bytes, int] = {}
            for key, value in self.items("stats"):
                table[key] = sum(per_cpu_u64(value))
            after = self.tallies()
            if all(b[0] == a[0] and a[1] >= b[1] for b, a in zip(before, after, strict=True)):
                break
        for key, count in after:
            if count:
                table[key] = table.get(key, 0) + count
        out = {}
        for key, n in table.items():
            k = layout.RawStatsKey.from_buffer_copy(key)
            out[k.reason, k.location, k.netns, k.ifname.decode(errors="replace")] = n
        return out

    def tallies(self) -> list[tuple[bytes, int]]:
        """Every CPU's tally slots: (stats key, count), slot by slot."""
        size = ct.sizeof(layout.RawTally)
        out = []
        for slot in range(layout.TALLY_SLOTS):
            value = self.lookup("tally", struct.pack("<I", slot)) or b""
            for at in range(0, len(value), size):
                t = layout.RawTally.from_buffer_copy(value, at)
                out.append((bytes(t.key), int(t.count)))
        return out

    def stack(self, stack_id: int) -> list[int]:
        """Return addresses of a captured kernel stack, innermost first."""
        value = self.lookup("stacks", struct.pack("<I", stack_id & 0xFFFFFFFF))
        if value is None:
            return []
        addrs = struct.unpack(f"<{len(value) // 8}Q", value)
        return list(addrs[:addrs.index(0)] if 0 in addrs else addrs)

