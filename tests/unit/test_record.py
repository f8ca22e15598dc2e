"""Recordings without a kernel: the record layout against bpf/, the file format read
back (whole, cut short, not a recording, another version), kdbg report's lines,
filters, counts and groups, and pcapng read by Wireshark's tshark."""

from __future__ import annotations

import ctypes as ct
import ipaddress
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.dirs import BPF_DIR
from kdbg.drops import drop_line
from kdbg.record import layout, offline, recfile
from kdbg.record.recorder import output_text
from kdbg.trace import filters as flt
from kdbg.trace.layout import RawDropEvent
from kdbg.trace.program import ProgramOptions, build
from tests.conftest import DATA, need
from tests.unit.cheaders import header_fields, mirror
from tests.unit.test_program import ARGS_6_18, OFFSETS_6_18

NFT = 0xFFFFFFFF81FBD0AF
UDP_RCV = 0xFFFFFFFF81E3C2D0
NETNS_B = 4026532528
SNAPLEN = 128
WALL = 1_700_000_000_000_000_000


# -- the layout --------------------------------------------------------------

def test_drop_record_matches_header() -> None:
    text = (BPF_DIR / "drop_record.h").read_text()
    assert header_fields("drop_record.h", "kdbg_drop_record",
                         {"struct kdbg_drop_event": RawDropEvent}) == mirror(layout.RawDropRecord)
    assert ct.sizeof(layout.RawDropRecord) % 8 == 0
    links = {k: int(v) for k, v in re.findall(r"#define KDBG_LINK_(\w+) (\d+)", text)}
    assert links == {"NONE": layout.LINK_NONE, "ETHERNET": layout.LINK_ETHERNET,
                     "RAW": layout.LINK_RAW}


def test_record_program_renders_every_placeholder() -> None:
    extra = {"SKB_MAC_HDR": 182, "SKB_DATA": 200, "SKB_TAIL": 188, "DEV_TYPE": 106}
    text = build(ARGS_6_18, OFFSETS_6_18, flt.FilterSpec(),
                 ProgramOptions(output=output_text(100, extra)))
    assert "{{" not in text and "ringbuf_output" not in text
    assert "fill_sent(ctx, &e);" in text
    assert "#define SNAP_BYTES       104" in text
    assert "events.ringbuf_submit(r, BPF_RB_NO_WAKEUP);" in text
    assert layout.record_size(100) == 8 + 248 + 104


# -- recordings made here ----------------------------------------------------

def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    words = sum(struct.unpack("!10H", hdr))
    while words >> 16:
        words = (words & 0xFFFF) + (words >> 16)
    return hdr[:10] + struct.pack("!H", ~words & 0xFFFF) + hdr[12:] + udp


def ipv6_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64,
                       ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed) + udp


def ether(packet: bytes, v6: bool) -> bytes:
    return (b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
            + (b"\x86\xdd" if v6 else b"\x08\x00") + packet)


def raw_record(*, time_ns: int, reason: int, location: int, src: str, dst: str,
               sport: int, dport: int, netns: int = NETNS_B, ifname: bytes = b"veth-b",
               link: int = layout.LINK_ETHERNET, payload: bytes = b"kdbg-0") -> bytes:
    v6 = ":" in src
    pkt = (ipv6_udp if v6 else ipv4_udp)(src, dst, sport, dport, payload)
    snap = ether(pkt, v6) if link == layout.LINK_ETHERNET else pkt
    rec = layout.RawDropRecord()
    ev = rec.ev
    ev.time_ns, ev.location, ev.reason, ev.cpu, ev.tgid, ev.tid = time_ns, location, reason, 1, 7, 7
    ev.netns, ev.ifindex, ev.ifname, ev.comm = netns, 2, ifname, b"flood"
    ev.len, ev.protocol = len(pkt), 0x86DD if v6 else 0x0800
    ev.family, ev.l4proto, ev.l4_valid, ev.sport, ev.dport = (6 if v6 else 4), 17, 1, sport, dport
    ev.stack_id = -1
    ev.mark, ev.ctinfo, ev.ct = 0x5, 2, 1  # marked 5; IP_CT_NEW, an entry attached
    addr_len = 16 if v6 else 4
    ct.memmove(ct.addressof(ev.saddr), ipaddress.ip_address(src).packed, addr_len)
    ct.memmove(ct.addressof(ev.daddr), ipaddress.ip_address(dst).packed, addr_len)
    cap = snap[:SNAPLEN]
    rec.caplen, rec.wirelen, rec.linktype, rec.devtype = len(cap), len(snap), link, 1
    body = bytes(rec) + cap + b"\0" * (layout.snap_bytes(SNAPLEN) - len(cap))
    return struct.pack("<II", len(body), 0) + body


META: dict[str, Any] = {
    "format": "kdbg recording", "kdbg_version": "test", "hostname": "elsewhere",
    "kernel": {"release": "6.18.0-test", "version": "Linux version 6.18.0-test",
               "machine": "x86_64", "boot_id": "x"},
    "tracepoint": "skb:kfree_skb", "started_ns": WALL, "wall_offset_ns": WALL,
    "filters": "none", "snaplen": SNAPLEN, "record_size": layout.record_size(SNAPLEN),
    "layout": layout.LAYOUT, "reasons": {"3": "NO_SOCKET", "12": "NETFILTER_DROP"},
    "reasons_source": "test",
}
SYMS = {"addresses": {
    f"0x{NFT:x}": {"symbol": "nft_do_chain", "offset": 0x46f, "module": None,
                   "file": "net/netfilter/nf_tables_core.c", "line": 291},
    f"0x{UDP_RCV:x}": {"symbol": "__udp4_lib_rcv", "offset": 0x5a0, "module": None,
                       "file": None, "line": None}},
    "netns": {str(NETNS_B): "blue"}}


def make(path: Path, batches: list[list[bytes]], *, end: bool = True) -> Path:
    w = recfile.RecordingWriter(path, META)
    w.json_block(recfile.SYMBOLS, SYMS)
    total = 0
    for batch in batches:
        w.events(memoryview(b"".join(batch)), len(batch))
        total += len(batch)
    if end:
        w.json_block(recfile.END, {"records": total, "matched": total, "lost": 0, "seen": total,
                                   "stats_full": 0, "stats": [], "interrupted": False,
                                   "ended_ns": WALL, "count_limit": None})
    w.close()
    return path


def storm(n4: int = 23, n6: int = 5, closed: int = 3) -> list[list[bytes]]:
    """NETFILTER_DROPs over IPv4 and IPv6, and NO_SOCKETs, in two batches."""
    a = [raw_record(time_ns=1000 + i, reason=12, location=NFT, src="10.77.9.1",
                    dst="10.77.9.2", sport=40000, dport=5555) for i in range(n4)]
    b = [raw_record(time_ns=2000 + i, reason=12, location=NFT, src="fd77:9::1",
                    dst="fd77:9::2", sport=40001, dport=5555) for i in range(n6)]
    b += [raw_record(time_ns=3000 + i, reason=3, location=UDP_RCV, src="10.77.9.1",
                     dst="10.77.9.2", sport=40000, dport=7777, link=layout.LINK_RAW)
          for i in range(closed)]
    return [a, b]


@pytest.fixture
def rec(tmp_path: Path) -> Path:
    return make(tmp_path / "storm.kdbg", storm())


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_read_back_decodes_with_the_files_facts(rec: Path) -> None:
    off = offline.load(rec)
    drops = list(off.drops())
    assert len(drops) == off.rec.records == 31
    first = drops[0].event
    assert (first.reason, first.location, first.file, first.line) == (
        "NETFILTER_DROP", "nft_do_chain+0x46f", "net/netfilter/nf_tables_core.c", 291)
    assert first.time_ns == WALL + 1000
    assert (str(first.saddr), first.sport, first.dport, first.ifname, first.netns) == (
        "10.77.9.1", 40000, 5555, "veth-b", NETNS_B)
    assert drops[0].linktype == layout.LINK_ETHERNET and drops[0].data[12:14] == b"\x08\x00"
    assert drops[-1].event.reason == "NO_SOCKET" and drops[-1].data[0] >> 4 == 4
    assert str(drops[23].event.daddr) == "fd77:9::2"


def test_report_prints_watchs_lines_and_json(rec: Path) -> None:
    res = cli("report", str(rec))
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("TIME") and len(lines) == 32
    first = next(offline.load(rec).drops()).event
    assert lines[1] == drop_line(first)
    assert lines[1].endswith("(net/netfilter/nf_tables_core.c:291)")
    assert ("31 drops recorded on Linux 6.18.0-test (elsewhere), 31 matched the filters; "
            "in the kernel: 31 matched, 0 lost") in res.stderr
    res = cli("report", str(rec), "--json")
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["type"] for r in recs] == ["drop"] * 31 + ["summary"]
    assert recs[0]["file"] == "net/netfilter/nf_tables_core.c"
    assert (recs[0]["mark"], recs[0]["ct_state"], recs[0]["ct_reply"]) == (5, "new", False)
    assert recs[-1]["complete"] is True and recs[-1]["records"] == 31


def test_a_recording_of_the_first_layout_is_still_read() -> None:
    """tests/data/diff/a.kdbg was recorded on 6.18 before the mark and conntrack state
    were read ('kdbg_drop_record 1'): its drops say nothing of them."""
    off = offline.load(DATA / "diff" / "a.kdbg")
    assert off.rec.meta["layout"] == "kdbg_drop_record 1"
    drops = [d.event for d in off.drops()]
    assert len(drops) == 45 and drops[0].reason == "NETFILTER_DROP"
    assert {(ev.mark, ev.ct_state) for ev in drops} == {(None, None)}
    assert "mark" not in drops[0].to_json()


@pytest.mark.parametrize(("args", "count"), [
    (["--reason", "netfilter_drop"], 28),
    (["--reason", "NO_SOCKET", "--reason", "NETFILTER_DROP"], 31),
    (["--location", "__udp4_lib_rcv"], 3),
    (["--location", "nft_do_chain+0x46f"], 28),
    (["--location", f"0x{NFT:x}"], 28),
    (["--location", "nft_do_chain+0x470"], 0),
    (["--proto", "udp", "--dport", "7777"], 3),
    (["--daddr", "fd77:9::/64"], 5),
    (["--addr", "10.77.9.0/24", "--sport", "40000"], 26),
    (["--port", "40001"], 5),
    (["--netns", "blue"], 31),
    (["--netns", str(NETNS_B + 1)], 0),
    (["--ifname", "veth-a"], 0),
    (["--proto", "icmp"], 0),
])
def test_report_filters_as_watch(rec: Path, args: list[str], count: int) -> None:
    res = cli("report", str(rec), "--json", *args)
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    assert len([r for r in recs if r["type"] == "drop"]) == count
    assert recs[-1]["shown"] == count


def test_report_stats_group_by_and_top(rec: Path) -> None:
    res = cli("report", str(rec), "--stats")
    assert res.stdout.splitlines() == [
        "     COUNT  REASON                   LOCATION",
        "        28  NETFILTER_DROP           nft_do_chain+0x46f",
        "         3  NO_SOCKET                __udp4_lib_rcv+0x5a0",
        "        31  total"]
    res = cli("report", str(rec), "--group-by", "flow", "--top", "2")
    assert res.stdout.splitlines() == [
        "     COUNT  FLOW",
        "        23  udp 10.77.9.1:40000 > 10.77.9.2:5555",
        "         5  udp [fd77:9::1]:40001 > [fd77:9::2]:5555",
        "        28  total"]
    res = cli("report", str(rec), "--group-by", "netns", "--json")
    assert [json.loads(x) for x in res.stdout.splitlines()][0] == {
        "type": "group", "by": "netns", "key": f"{NETNS_B} (blue)", "count": 31}
    res = cli("report", str(rec), "--group-by", "location")
    assert "28  nft_do_chain+0x46f  (net/netfilter/nf_tables_core.c:291)" in res.stdout
    res = cli("report", str(rec), "--top", "3")
    assert res.exit_code == 2
    assert "--top does nothing without --stats or --group-by" in res.stderr


def test_cut_short_reads_to_the_last_whole_block(tmp_path: Path) -> None:
    whole = make(tmp_path / "whole.kdbg", storm(), end=False).read_bytes()
    size = layout.record_size(SNAPLEN)
    # The second EVENTS block cut half-way through its third record.
    cut = len(whole) - 5 * size - size // 2
    path = tmp_path / "cut.kdbg"
    path.write_bytes(whole[:cut])
    res = cli("report", str(path), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["records"] == 23 and summary["complete"] is False
    assert summary["truncated_bytes"] == 16 + 2 * size + size // 2
    assert summary["matched"] is None
    assert (f"{path} was cut short: {summary['truncated_bytes']} bytes after its last whole "
            "block were not read") in res.stderr
    assert "Traceback" not in res.output


@pytest.mark.parametrize(("data", "message", "status"), [
    (b"", "is not a kdbg recording", 2),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "is not a kdbg recording", 2),
    (recfile.FILE_HEADER.pack(recfile.MAGIC, 7, 32, 0),
     "is a kdbg recording of format version 7; this kdbg reads version 1 "
     "(read it with the kdbg that wrote it)", 2),
    (recfile.FILE_HEADER.pack(recfile.MAGIC, 1, 32, 0) + b"\x01\0\0\0",
     "cut before its META block", 2),
])
def test_bad_files_are_one_line(tmp_path: Path, data: bytes, message: str, status: int) -> None:
    path = tmp_path / "bad.kdbg"
    path.write_bytes(data)
    res = cli("report", str(path))
    assert res.exit_code == status
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert res.stderr.startswith(f"kdbg: error: {path}")


def test_missing_file_is_an_io_error(tmp_path: Path) -> None:
    res = cli("report", str(tmp_path / "none.kdbg"))
    assert res.exit_code == 1
    missing = tmp_path / "none.kdbg"
    assert res.stderr == f"kdbg: error: cannot read {missing}: No such file or directory\n"


def tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    need(shutil.which("tshark") is not None, "tshark (Debian's): run scripts/setup.sh")
    # occurrence=f: the first comment (the second is the fields for kdbg's dissector)
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-E", "occurrence=f"]
    for f in fields:
        argv += ["-e", f]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [line.split("|") for line in proc.stdout.splitlines()]


def test_pcapng_read_by_tshark(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pcapng"
    res = cli("report", str(rec), "--pcap", str(out))
    assert res.exit_code == 0, res.output
    assert "31 written as pcapng" in res.stderr
    rows = tshark_fields(out, "frame.interface_name", "frame.protocols", "ip.src", "ipv6.dst",
                         "udp.srcport", "udp.dstport", "frame.comment", "frame.time_epoch")
    assert len(rows) == 31
    assert rows[0][:3] == ["veth-b", "eth:ethertype:ip:udp:data", "10.77.9.1"]
    assert rows[0][4:6] == ["40000", "5555"]
    assert rows[0][6] == ("NETFILTER_DROP at nft_do_chain+0x46f "
                          "(net/netfilter/nf_tables_core.c:291), netns "
                          f"{NETNS_B} (blue), interface veth-b")
    assert rows[0][7].startswith("1700000000.000001000")
    assert [r[3] for r in rows[23:28]] == ["fd77:9::2"] * 5
    assert rows[23][1] == "eth:ethertype:ipv6:udp:data"
    # NO_SOCKET drops were captured from the network header: raw IP, no link header.
    assert rows[30][1] == "raw:ip:udp:data" and rows[30][5] == "7777"
    assert rows[30][6].startswith("NO_SOCKET at __udp4_lib_rcv+0x5a0, netns")


# -- the ring buffer read in bulk, on a memfd laid out as the kernel maps a ring --

class FakeRing:
    """A file laid out as a ring buffer map's mmap: consumer page, producer page,
    data (the data written twice in a row, as the kernel maps its pages twice)."""

    PAGE = 4096

    def __init__(self, size: int, record: int) -> None:
        import os

        self.size, self.record = size, record
        self.fd = os.memfd_create("kdbg-ring")
        os.ftruncate(self.fd, 2 * self.PAGE + 2 * size)
        self.prod = 0

    def put(self, header: int, fill: int) -> None:
        import os

        body = struct.pack("<II", header, 0) + bytes([fill]) * (self.record - 8)
        for i, byte in enumerate(body):
            pos = (self.prod + i) % self.size
            for base in (pos, pos + self.size):  # both mappings of the data pages
                os.pwrite(self.fd, bytes([byte]), 2 * self.PAGE + base)
        self.prod += self.record
        os.pwrite(self.fd, struct.pack("<Q", self.prod), self.PAGE)

    def cons(self) -> int:
        import os

        return int(struct.unpack("<Q", os.pread(self.fd, 8, 0))[0])


def test_bulk_ring_hands_over_committed_records_and_stops_at_a_busy_one() -> None:
    from kdbg.record.layout import RING_BUSY, RING_DISCARD
    from kdbg.record.ringbuf import BulkRing, RingError

    size, record = 4096, 72  # 72 does not divide 4096: records cross the end
    fake = FakeRing(size, record)
    ring = BulkRing(fake.fd, size, record)
    got: list[tuple[bytes, int]] = []

    def take(buf: memoryview, n: int) -> None:
        got.append((bytes(buf), n))

    assert ring.drain(take) == 0
    for i in range(3):
        fake.put(record - 8, i)
    fake.put((record - 8) | RING_BUSY, 9)  # still being written
    fake.put(record - 8, 4)
    assert ring.drain(take) == 3
    assert got[-1][1] == 3 and len(got[-1][0]) == 3 * record
    assert [got[-1][0][i * record + 8] for i in range(3)] == [0, 1, 2]
    assert fake.cons() == 3 * record and ring.pending() == 2 * record
    assert ring.drain(take) == 0  # the busy one still blocks
    # Committed now: both go, and records that wrap around the end come out whole.
    fake.prod -= 2 * record
    fake.put(record - 8, 3)
    fake.put(record - 8, 4)
    while fake.prod % size + record <= size:
        fake.put(record - 8, 5)
    assert ring.drain(take) > 0 and fake.cons() == fake.prod
    fake.put(record - 8, 7)  # crosses the end of the data pages
    assert fake.prod % size < record
    assert ring.drain(take) == 1 and got[-1][0][8:] == bytes([7]) * (record - 8)
    fake.put((record - 8) | RING_DISCARD, 8)
    with pytest.raises(RingError, match="discarded"):
        ring.drain(take)
    ring.close()


def test_bulk_ring_writes_a_long_run_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run longer than BLOCK_BYTES goes out in parts of at most that size (one file
    block each: a writer killed mid-write loses one part), each released once written."""
    from kdbg.record import ringbuf

    size, record = 4096, 72
    monkeypatch.setattr(ringbuf, "BLOCK_BYTES", 3 * record + 10)  # 3 records a part
    fake = FakeRing(size, record)
    ring = ringbuf.BulkRing(fake.fd, size, record)
    parts: list[tuple[int, int, int]] = []  # (records, first record's fill, consumer)

    def take(buf: memoryview, n: int) -> None:
        assert len(buf) == n * record
        parts.append((n, buf[8], fake.cons()))

    for i in range(8):
        fake.put(record - 8, i)
    assert ring.drain(take) == 8
    assert parts == [(3, 0, 0), (3, 3, 3 * record), (2, 6, 6 * record)]
    assert fake.cons() == 8 * record
    ring.close()


def test_counts_read_from_the_bytes_match_the_decoded_ones(rec: Path) -> None:
    """--stats and --group-by reason|location without filters skip decoding; a filter
    that keeps everything takes the decoding path: both must agree."""
    for args in (["--stats"], ["--group-by", "reason"], ["--group-by", "location"],
                 ["--stats", "--top", "1"], ["--group-by", "location", "--json"]):
        fast = cli("report", str(rec), *args)
        slow = cli("report", str(rec), *args, "--addr", "0.0.0.0/0", "--addr", "::/0")
        assert fast.exit_code == slow.exit_code == 0, fast.output
        assert fast.stdout == slow.stdout and fast.stdout
    assert offline.load(rec).pair_counts() == {(12, NFT): 28, (3, UDP_RCV): 3}


@pytest.mark.parametrize(("args", "message"), [
    (["--snaplen", "64"], "--snaplen does nothing without --write or --pcap"),
    (["--write", "x.kdbg", "--break"], "--write does nothing with --break"),
    (["--pcap", "x.pcapng", "--stats"], "--pcap does nothing with --stats"),
    (["--write", "x.kdbg", "--stack"], "--write does nothing with --stack"),
    (["--write", "-", "--json"], "--write - puts the recording on stdout"),
])
def test_watch_record_options_refused_in_one_line(args: list[str], message: str) -> None:
    res = cli("watch", *args)
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("kdbg: error: ") and message in res.stderr
    assert res.stderr.count("\n") == 1
