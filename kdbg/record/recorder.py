"""``kdbg watch --write``: keep every matching drop, with the packet's first bytes.

The drop program (``bpf/kfree_skb.bpf.c``) hands each event over through the
fragment ``bpf/drop_record.bpf.c``: one fixed-size record written in place in a
large ring buffer, with no wakeup. Every few milliseconds the recorder copies the
committed records to the file in one write (:class:`kdbg.record.ringbuf.BulkRing`),
and decodes nothing: ``kdbg report`` does that later, anywhere. Before each batch
it writes the symbols of any location the kernel has newly counted, so a file cut
short still names everything in it.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbg import __version__, lab
from kdbg.dirs import BPF_DIR
from kdbg.drops import Sink, Watch, WatchConfig, guest_watch_argv, recorded_causes
from kdbg.errors import BadInput
from kdbg.record import layout, offline, pcapng
from kdbg.record.recfile import END, SYMBOLS, RecordingWriter, io_error
from kdbg.record.ringbuf import BulkRing
from kdbg.symbols.kallsyms import Kallsyms, Location
from kdbg.trace import bpfsys, loop, offsets, program
from kdbg.trace.event import DropEvent
from kdbg.trace.layout import RawStatsKey
from kdbg.trace.probe import TRACEPOINT, DropProbe
from kdbg.trace.program import ProgramOptions
from kdbg.trace.render import render

FRAGMENT = BPF_DIR / "drop_record.bpf.c"
SNAPLEN_DEFAULT = 128
SNAPLEN_MAX = 4096
RING_PAGES_DEFAULT = 8192  # 32 MiB: over 100 ms of a 200k drops/s storm at 128-byte snaps
DRAIN_INTERVAL = 0.005
KALLSYMS_RELOAD = 1.0  # at most once a second, when a module's address is unknown
NETNS_RESCAN = 1.0  # seconds between looks at /var/run/netns while recording

FIELDS: dict[str, tuple[str, ...]] = {
    "SKB_MAC_HDR": ("sk_buff.mac_header",),
    "SKB_DATA": ("sk_buff.data",),
    "SKB_TAIL": ("sk_buff.tail",),
    "DEV_TYPE": ("net_device.type",),
}


@dataclass(frozen=True)
class RecordOptions:
    """Where and how much to record."""

    write: str | None = None  # the recording; None: a temporary one for ``pcap``
    pcap: str | None = None  # also write the packets as pcapng here, at the end
    snaplen: int = SNAPLEN_DEFAULT
    ring_pages: int = RING_PAGES_DEFAULT


@dataclass(frozen=True)
class RecordResult:
    path: str | None
    records: int
    bytes: int
    matched: int
    lost: int
    seen: int
    pcap_packets: int | None
    cmd_status: int | None
    interrupted: bool


def record_offsets(btf_path: str | Path = "/sys/kernel/btf/vmlinux") -> dict[str, int]:
    """The fragment's struct offsets from the running kernel's BTF, cached by its hash."""
    return offsets.fields_of(FIELDS, "offsets-record", btf_path)


def output_text(snaplen: int, offs: dict[str, int]) -> str:
    """``bpf/drop_record.bpf.c`` filled in: the drop program's OUTPUT for a recording."""
    return render(FRAGMENT.read_text(), {
        "SNAPLEN": snaplen, "SNAP_BYTES": layout.snap_bytes(snaplen), **offs})


class RecordProbe(DropProbe):
    """The drop program with the recording hand-over: its ring read in bulk
    (:class:`kdbg.record.ringbuf.BulkRing`), not record by record."""

    def ring_fd(self) -> int:
        return self.fd("events")

    def locations(self) -> set[int]:
        """Locations the stats table (its keys only: no per-CPU values) and its tally
        slots have counted."""
        spec = self.obj.specs["stats"]
        keys = bpfsys.map_keys(self.fd("stats"), spec.key_size)
        keys += [key for key, count in self.tallies() if count]
        return {int(RawStatsKey.from_buffer_copy(k).location) for k in keys}


def netns_names() -> dict[int, str]:
    """inode -> name of the namespaces named under /var/run/netns (``ip netns``)."""
    out: dict[int, str] = {}
    try:
        entries = list(os.scandir("/var/run/netns"))
    except OSError:
        return out
    for entry in entries:
        try:
            out[os.stat(entry.path).st_ino] = entry.name
        except OSError:
            continue
    return out


def _proc(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


class Recorder:
    """A prepared recording: the watch's filters resolved, the program text built."""

    def __init__(self, cfg: WatchConfig, opts: RecordOptions) -> None:
        if opts.write is None and opts.pcap is None:
            raise BadInput("nothing to record to: give --write FILE or --pcap FILE")
        if not 0 <= opts.snaplen <= SNAPLEN_MAX:
            raise BadInput(f"--snaplen must be between 0 and {SNAPLEN_MAX}")
        if cfg.stack:
            raise BadInput("--stack does not work with --write or --pcap yet",
                           hint="record without --stack; watch --stack live")
        pages = opts.ring_pages
        loop.check_pages(pages)
        # The watch resolves the filters and reads the kernel's facts; it streams nothing
        # here, so it looks for no causes (they need the live state as each drop happens).
        self.watch = Watch(dataclasses.replace(cfg, buffer_pages=pages, causes=False))
        self.cfg, self.opts = cfg, opts
        self.record_size = layout.record_size(opts.snaplen)
        self.text = program.build(
            program.kernel_args(), offsets.for_running_kernel(), self.watch.spec,
            ProgramOptions(ringbuf_pages=pages,
                           output=output_text(opts.snaplen, record_offsets())))
        self.ring_bytes = pages * mmap.PAGESIZE
        if self.record_size > self.ring_bytes // 4:
            raise BadInput("--buffer-pages is too small for --snaplen")
        self._named: dict[int, dict[str, Any]] = {}
        self._netns: dict[int, str] = {}
        self._netns_at = 0.0
        self._ksyms: Kallsyms | None = None
        self._ksyms_at = 0.0

    # -- what the file needs to be read elsewhere ---------------------------

    def meta(self, wall_offset_ns: int) -> dict[str, Any]:
        uname = os.uname()
        return {
            "format": "kdbg recording", "kdbg_version": __version__,
            "kernel": {"release": uname.release, "version": _proc("/proc/version"),
                       "machine": uname.machine, "boot_id": _proc(
                           "/proc/sys/kernel/random/boot_id")},
            "hostname": socket.gethostname(),
            "tracepoint": TRACEPOINT,
            "started_ns": time.time_ns(),
            "wall_offset_ns": wall_offset_ns,  # add to the events' CLOCK_MONOTONIC times
            "filters": self.watch.spec.describe(),
            "snaplen": self.opts.snaplen,
            "record_size": self.record_size,
            "layout": layout.LAYOUT,
            "reasons": {str(r.code): r.name for r in self.watch.reasons},
            "reasons_source": self.watch.reasons.source,
        }

    def _kallsyms(self) -> Kallsyms:
        return self._ksyms if self._ksyms is not None else self.watch.kallsyms()

    def _locate(self, address: int) -> Location:
        """Name ``address``; an unknown one may be in a module loaded since kallsyms was
        read, so read it again (at most once a second)."""
        loc = self._kallsyms().lookup(address)
        if loc.symbol is None and time.monotonic() - self._ksyms_at > KALLSYMS_RELOAD:
            self._ksyms_at = time.monotonic()
            self._ksyms = Kallsyms.load()
            loc = self._ksyms.lookup(address)
        return loc

    def _file_line(self, loc: Location) -> tuple[str | None, int | None]:
        lines = self.watch.lines
        if lines is None or loc.symbol is None:
            return None, None
        probe = DropEvent(
            time_ns=0, cpu=0, pid=0, tid=0, comm="", reason="", reason_code=0,
            address=loc.address, symbol=loc.symbol, offset=loc.offset, module=loc.module,
            skb=0, proto=None, family=None, saddr=None, daddr=None, sport=None, dport=None,
            icmp_type=None, icmp_code=None, netns=None, ifname=None, ifindex=None, len=0)
        found = lines.annotate(probe)
        return found.file, found.line

    def symbols_update(self, addresses: set[int], *, final: bool = False
                       ) -> dict[str, Any] | None:
        """A SYMBOLS document for addresses and namespaces not yet written, or None.
        Namespace names are looked up with new addresses, once a second, and at the end."""
        new: dict[str, Any] = {}
        for address in sorted(addresses - self._named.keys()):
            loc = self._locate(address)
            file, line = self._file_line(loc)
            info = {"symbol": loc.symbol, "offset": loc.offset, "module": loc.module,
                    "file": file, "line": line}
            self._named[address] = info
            new[f"0x{address:x}"] = info
        netns: dict[str, str] = {}
        now = time.monotonic()
        if new or final or now - self._netns_at >= NETNS_RESCAN:
            self._netns_at = now
            names = netns_names()
            netns = {str(k): v for k, v in names.items() if self._netns.get(k) != v}
            self._netns.update(names)
        if not new and not netns:
            return None
        return {"addresses": new, "netns": netns}

    # -- the run ------------------------------------------------------------

    def run(self, sink: Sink) -> RecordResult:
        """Attach, move batches to the file until a stop condition, detach, drain,
        write the END block. Ctrl-C/SIGTERM end it cleanly."""
        path, tmp_dir = _target(self.opts)
        turn = _RecordLoop(self, sink, path)
        try:
            end = loop.run(turn, cmd=self.cfg.cmd, duration=self.cfg.duration)
        except BaseException:
            if tmp_dir is not None:  # a pcapng-only recording that failed: leave nothing
                shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        writer = turn.writer
        assert writer is not None
        counts, counters = turn.counts, turn.counters
        matched = sum(counts.values()) + counters["stats_full"]
        writer.json_block(END, {
            "ended_ns": time.time_ns(), "interrupted": end.interrupted,
            "records": writer.records, "matched": matched, "lost": counters["lost"],
            "seen": counters["seen"], "stats_full": counters["stats_full"],
            "count_limit": self.cfg.count,
            "stats": [{"reason_code": r, "address": f"0x{a:x}", "count": n}
                      for (r, a), n in sorted(counts.items(), key=lambda kv: -kv[1])],
        })
        writer.close()
        # Here, just after the run, the drops' namespaces are still there to read.
        packets = _pcap(path, tmp_dir, self.opts,
                        recorded_causes() if self.cfg.causes else None)
        return RecordResult(
            path=self.opts.write, records=writer.records, bytes=writer.bytes, matched=matched,
            lost=counters["lost"], seen=counters["seen"], pcap_packets=packets,
            cmd_status=end.cmd_status, interrupted=end.interrupted)


class _RecordLoop(loop.Loop):
    """One run of a :class:`Recorder`: batches from the ring buffer to the file."""

    def __init__(self, rec: Recorder, sink: Sink, path: str) -> None:
        self.rec, self.sink, self.path = rec, sink, path
        self.limit = rec.cfg.count
        self.probe = RecordProbe(rec.text)
        self.ring: BulkRing | None = None
        self.writer: RecordingWriter | None = None
        self.counters = {"lost": 0, "seen": 0, "stats_full": 0}
        self.counts: dict[tuple[int, int], int] = {}

    def batch(self, buffer: memoryview, n: int) -> None:
        w = self.writer
        assert w is not None
        if self.limit is not None and w.records + n > self.limit:
            n = self.limit - w.records
        if n <= 0:
            return
        # Every event in the batch was counted before it was written: the keys
        # read now name all its locations.
        doc = self.rec.symbols_update(self.probe.locations())
        if doc is not None:
            w.json_block(SYMBOLS, doc)
        with buffer[:n * self.rec.record_size] as part:
            w.events(part, n)

    def attach(self) -> None:
        rec, opts = self.rec, self.rec.opts
        wall_offset = time.time_ns() - time.monotonic_ns()
        self.writer = RecordingWriter(self.path, rec.meta(wall_offset))
        self.probe.load()
        self.ring = BulkRing(self.probe.ring_fd(), rec.ring_bytes, rec.record_size)
        target = opts.write if opts.write is not None else f"{opts.pcap} (pcapng)"
        self.sink.watching(
            f"kdbg: watching {TRACEPOINT} on Linux {os.uname().release}, recording to "
            f"{target} (filters: {rec.watch.spec.describe()}; snaplen "
            f"{opts.snaplen}); Ctrl-C to stop")

    def step(self) -> None:
        assert self.ring is not None
        self.ring.drain(self.batch)

    def done(self) -> bool:
        return (self.limit is not None and self.writer is not None
                and self.writer.records >= self.limit)

    def settle(self) -> None:
        time.sleep(0.05)  # drops the workload caused in its last moments

    def idle(self) -> None:
        time.sleep(DRAIN_INTERVAL)

    def drain(self) -> None:
        probe, ring, writer = self.probe, self.ring, self.writer
        if not probe.loaded:
            return
        probe.detach()
        if ring is not None and not (writer is not None and writer.failed):
            _drain_rest(ring, self.batch if writer is not None else None, self.done)
        self.counters = probe.counters()
        self.counts = probe.stats()
        if writer is not None and not writer.failed:
            doc = self.rec.symbols_update({loc for _, loc in self.counts}, final=True)
            if doc is not None:
                writer.json_block(SYMBOLS, doc)

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
        self.probe.close()
        self.rec.watch.close()


def _target(opts: RecordOptions) -> tuple[str, str | None]:
    """The recording's path, and the temporary directory holding it when only a pcapng
    was asked for. Fails now, not after the recording, if the pcapng cannot be written."""
    path, tmp_dir = opts.write, None
    if opts.pcap is not None:
        try:
            open(opts.pcap, "wb").close()  # noqa: SIM115
            if path is None:
                tmp_dir = tempfile.mkdtemp(prefix="kdbg-rec-", dir=Path(opts.pcap).parent)
                path = str(Path(tmp_dir) / "drops.kdbg")
        except OSError as err:
            raise io_error(opts.pcap, err, "write") from None
    assert path is not None
    return path, tmp_dir


def _pcap(path: str, tmp_dir: str | None, opts: RecordOptions,
          cause: Callable[[DropEvent], DropEvent] | None = None) -> int | None:
    """Write the pcapng asked for from the recording at ``path`` (each drop given its
    cause by ``cause``, if any); remove a temporary one."""
    try:
        if opts.pcap is None:
            return None
        return pcapng.write_recording(offline.load(path), opts.pcap, cause=cause)
    finally:
        if tmp_dir is not None:
            Path(path).unlink(missing_ok=True)
            os.rmdir(tmp_dir)


def record_lab(cfg: WatchConfig, opts: RecordOptions, lab_name: str,
               progress: Callable[[str], None]) -> RecordResult:
    """``kdbg watch --lab NAME --write/--pcap``: the guest's kdbg records to its stdout
    (``--write -``) and the bytes land in the file here, as they come. Ctrl-C is passed
    to the guest's recorder, which ends the file with its END block."""
    if not 0 <= opts.snaplen <= SNAPLEN_MAX:
        raise BadInput(f"--snaplen must be between 0 and {SNAPLEN_MAX}")
    argv = guest_watch_argv(cfg, "--write", "-", "--snaplen", str(opts.snaplen),
                            "--buffer-pages", str(opts.ring_pages), limits=True)
    path, tmp_dir = _target(opts)
    pending = b""

    def on_stderr(data: bytes) -> None:
        nonlocal pending
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            # The guest's own summary names "-"; the one here names the file.
            if text.strip() and not _GUEST_SUMMARY.match(text):
                progress(text)

    try:
        out = open(path, "wb")  # noqa: SIM115
    except OSError as err:
        raise io_error(path, err, "create") from None
    size = 0

    def on_stdout(data: bytes) -> None:
        nonlocal size
        try:
            out.write(data)
        except OSError as err:
            raise io_error(path, err, "write") from None
        size += len(data)

    with out:
        status = lab.exec_(lab_name, argv, stdout=on_stdout, stderr=on_stderr, timeout=None)
    if pending.strip():
        progress(pending.decode(errors="replace"))
    if size == 0:
        if tmp_dir is not None:
            Path(path).unlink(missing_ok=True)
            os.rmdir(tmp_dir)
        return RecordResult(path=opts.write, records=0, bytes=0, matched=0, lost=0, seen=0,
                            pcap_packets=None, cmd_status=status or 1, interrupted=False)
    rec = offline.load(path).rec
    end = rec.end or {}
    records, bytes_ = rec.records, rec.size
    packets = _pcap(path, tmp_dir, opts)
    return RecordResult(
        path=opts.write, records=records, bytes=bytes_, matched=int(end.get("matched", 0)),
        lost=int(end.get("lost", 0)), seen=int(end.get("seen", 0)), pcap_packets=packets,
        cmd_status=status or None, interrupted=bool(end.get("interrupted", False)))


_GUEST_SUMMARY = re.compile(r"^kdbg: \d+ drops recorded")


def _drain_rest(ring: BulkRing, batch: Callable[[memoryview, int], None] | None,
                full: Callable[[], bool], timeout: float = 1.0) -> None:
    """After detaching: move what is left, waiting briefly for records still being
    written by a program that was running as it was detached."""
    deadline = time.monotonic() + timeout
    while True:
        if batch is not None and not full():
            ring.drain(batch)
        if ring.pending() == 0 or full() or batch is None or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def prepare(cfg: WatchConfig, opts: RecordOptions) -> Recorder:
    """Read the kernel's facts and build the recording program (raises KdbgError)."""
    return Recorder(cfg, opts)
