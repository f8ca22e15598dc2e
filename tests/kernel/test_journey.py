"""kdbg watch --journey on the running kernel: datagrams sent from one throw-away
namespace through a veth pair and a bridge into another, dropped by a rule there; each
drop carries its packet's hops, in order, with exact counts. And the table's limit: a
table too small for the packets alive at once says so on each drop it could not follow.

Every test builds its own namespaces and removes them; traffic goes only between them.
Ports are this file's own, so no other workload's packets match its filters.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kdbg.demo.throwaway import PY, SEND_UDP_CODE, VethBridgeLab
from kdbg.drops import WatchConfig, prepare
from kdbg.drops.journeys import Journeys
from kdbg.trace.event import DropEvent
from kdbg.trace.filters import PacketFilters
from kdbg.trace.journey import RING_FULL
from kdbg.trace.journeylayout import SLOT_SIZE, RawJourneyDrop, slot_of
from tests.conftest import DATA

KDBG = [sys.executable, "-m", "kdbg"]
N = 23  # a prime number of packets, as bcc's guide asks
PORT = 5593  # the DROP rule's
QUEUED = 5594  # a socket that never reads: its datagrams stay alive in its queue
POINTS = ["net:net_dev_queue", "net:netif_rx", "net:netif_receive_skb",
          "net:netif_receive_skb_entry", "net:netif_receive_skb"]
RECORDED = DATA / "journey" / "veth_bridge.6.18.json"


@pytest.fixture
def lab() -> Iterator[VethBridgeLab]:
    with VethBridgeLab(prefix="kdbgjourney", subnet=93) as lab:
        lab.drop_udp(PORT)
        yield lab


@pytest.fixture
def raws(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, DropEvent]]:
    """Each drop record's raw bytes, beside the event made of it (for the recording)."""
    kept: list[tuple[bytes, DropEvent]] = []
    add = Journeys.add

    def keep(self: Journeys, event: DropEvent, raw: RawJourneyDrop) -> DropEvent:
        out = add(self, event, raw)
        kept.append((bytes(raw), out))
        return out

    monkeypatch.setattr(Journeys, "add", keep)
    return kept


def record(key: str, journeys: Journeys, lab: VethBridgeLab,
           raws: list[tuple[bytes, DropEvent]]) -> None:
    """With KDBG_UPDATE_GOLDEN=1: keep ``raws`` under ``key`` in the unit tests' recording."""
    if os.environ.get("KDBG_UPDATE_GOLDEN") != "1":
        return
    rec = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    rec.update(kernel=os.uname().release)
    rec[key] = {"wall_offset_ns": journeys.wall_offset_ns, "attached_ns": journeys.attached_ns,
                "netns_names": {str(lab.a.inode): lab.a.name, str(lab.b.inode): lab.b.name},
                "records": [d.hex() for d, _e in raws],
                "events": [e.to_json() for _d, e in raws]}
    RECORDED.parent.mkdir(exist_ok=True)
    RECORDED.write_text(json.dumps(rec, indent=1) + "\n")


def send_cmd(lab: VethBridgeLab, count: int, dport: int) -> str:
    code = SEND_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40000, dport=dport,
                                count=count)
    return shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", code])


def watch(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run([*KDBG, "watch", "--json", *args], capture_output=True, text=True,
                          timeout=120)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_each_drop_carries_its_journey(lab: VethBridgeLab) -> None:
    a, b = lab.a.inode, lab.b.inode
    rc, recs, err = watch("--journey", "--proto", "udp", "--dport", str(PORT),
                          "--cmd", send_cmd(lab, N, PORT))
    assert rc == 0, err
    drops = [r for r in recs if r["type"] == "drop"]
    assert len(drops) == N, err
    assert f"kdbg: journeys: {N} packets followed" in err
    for drop in drops:
        assert drop["reason"] == "NETFILTER_DROP"
        hops = drop["journey"]
        assert "journey_incomplete" not in drop, drop["journey_incomplete"]
        assert [h["point"] for h in hops] == POINTS
        assert [(h["netns"], h["ifname"]) for h in hops] == [
            (a, "veth-a"), (b, "veth-b"), (b, "veth-b"), (b, "br0"), (b, "br0")]
        assert [h["netns_name"] for h in hops] == [lab.a.name] + [lab.b.name] * 4
        assert [h["kind"] for h in hops] == ["veth", "veth", "veth", "bridge", "bridge"]
        times = [h["time_ns"] for h in hops] + [drop["time_ns"]]
        assert times == sorted(times) and len(set(times)) == len(times), times
        befores = [h["before_drop_ns"] for h in hops]
        assert all(x > y > 0 for x, y in zip(befores, befores[1:], strict=False)), befores
        # the journey ends where the drop is
        assert (hops[-1]["netns"], hops[-1]["ifname"]) == (drop["netns"], drop["ifname"])
        for h in hops:
            assert (h["saddr"], h["sport"], h["daddr"], h["dport"]) == (
                lab.addr_a, 40000, lab.addr_b, PORT)
        assert drop["journey_table"]["slots"] == 1024


def test_text_names_what_changed(lab: VethBridgeLab) -> None:
    proc = subprocess.run([*KDBG, "watch", "--journey", "--proto", "udp", "--dport", str(PORT),
                           "--cmd", send_cmd(lab, 1, PORT)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    at = lines.index("    journey (5 hops, oldest first; time before the drop):")
    hops = lines[at + 1:at + 6]
    assert hops[0].split()[1:5] == [str(lab.a.inode), f"({lab.a.name})", "veth-a", "veth"]
    assert hops[0].endswith(f"{lab.addr_a}:40000 -> {lab.addr_b}:{PORT} udp")
    assert hops[1].endswith(f"netns {lab.a.name} -> {lab.b.name}, device veth-a -> veth-b "
                            "(veth)")
    assert hops[2].split()[-1] == "netif_receive_skb"  # nothing changed
    assert hops[3].endswith("device veth-b -> br0 (bridge)")


def _queue_cmd(lab: VethBridgeLab, queued: int) -> str:
    """``queued`` datagrams to a socket in ``b`` that never reads them, then 3 into the
    DROP rule, while the queued ones still hold their slots."""
    code = SEND_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40001, dport=QUEUED,
                                count=queued)
    code += SEND_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40000, dport=PORT,
                                 count=3)
    return shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", code])


def accounted(recs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The drop records and the summary of a watch whose ring overflowed, checked: every
    drop the kernel matched printed or counted ("more"), none lost."""
    drops = [r for r in recs if r["type"] == "drop"]
    (summary,) = [r for r in recs if r["type"] == "summary"]
    more = [r for r in recs if r["type"] == "more"]
    assert summary["lost"] == 0 and more, summary
    assert len(drops) + sum(r["count"] for r in more) == summary["matched"], summary
    assert summary["shown"] + summary["summarized"] == summary["matched"], summary
    return drops, summary


def test_no_packet_is_followed_while_the_ring_is_full(lab: VethBridgeLab) -> None:
    """A one-page ring holds one record: a burst of 23 drops overflows it and shuts the
    gate (on the sender's CPU, where veth receives too); every drop is still printed or
    counted ("more"), none lost; a datagram sent once the watch has read the ring says
    it was not followed for that."""
    burst = SEND_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40000, dport=PORT,
                                 count=N)
    last = SEND_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40002, dport=PORT,
                                count=1)
    code = burst + "import time; time.sleep(0.5)\n" + last
    cmd = shlex.join(["taskset", "-c", "0", "ip", "netns", "exec", lab.a.name, PY, "-c", code])
    rc, recs, err = watch("--journey", "--buffer-pages", "1", "--proto", "udp", "--dport",
                          str(PORT), "--cmd", cmd)
    assert rc == 0, err
    drops, summary = accounted(recs)
    assert summary["matched"] == N + 1 and summary["summarized"] >= 1, summary
    for drop in drops[:-1]:  # followed while the ring had room
        assert "journey_incomplete" not in drop and len(drop["journey"]) == 5
    assert drops[-1]["sport"] == 40002
    assert drops[-1]["journey"] == [] and drops[-1]["journey_incomplete"] == [RING_FULL]


class _Drops:
    """A sink that keeps what the watch reports."""

    def __init__(self) -> None:
        self.drops: list[DropEvent] = []
        self.said: list[str] = []

    def watching(self, message: str) -> None:
        self.said.append(message)

    def drop(self, event: DropEvent) -> None:
        self.drops.append(event)

    def more(self, *_args: object) -> None:
        raise AssertionError("three drops overflowed the ring")

    def flush(self) -> None:
        pass

    def stats(self, *_args: object) -> None:
        pass

    def summary(self, *_args: object) -> None:
        pass


def test_a_full_table_says_so(lab: VethBridgeLab,
                              raws: list[tuple[bytes, DropEvent]]) -> None:
    """Two slots, 16 datagrams alive in a socket's queue (each followed, until it is read
    or idle for 1 s), then 3 into the DROP rule: two of the queued ones hold the slots, the
    other 14 and the 3 dropped are not followed, and each drop says why."""
    reader = lab.b.popen([PY, "-c", "import socket, time; s = socket.socket(socket.AF_INET, "
                          f"socket.SOCK_DGRAM); s.bind(({lab.addr_b!r}, {QUEUED})); "
                          "time.sleep(30)"])
    try:
        cfg = WatchConfig(filters=PacketFilters(proto="udp", daddrs=(lab.addr_b,)),
                          journey=True, journey_slots=2, cmd=_queue_cmd(lab, 16))
        sink = _Drops()
        prepared = prepare(cfg)
        result = prepared.run(sink)
    finally:
        reader.kill()
        reader.wait()
    assert result.cmd_status == 0
    assert [d.dport for d in sink.drops] == [PORT] * 3
    for d in sink.drops:
        assert d.journey is not None and d.journey.hops == ()
        assert d.journey.notes == ("not followed: its slot in the journey table of 2 was "
                                   "following another packet (table full)",)
    # 2 followed (one a slot), 17 refused, each counted once however many hops it made
    assert "kdbg: journeys: 2 packets followed, 17 not followed (their slot of the table " \
           "was busy)" in sink.said, sink.said
    assert prepared.journeys is not None
    record("table_full", prepared.journeys, lab, raws)


def test_recorded_records(lab: VethBridgeLab, raws: list[tuple[bytes, DropEvent]]) -> None:
    """The raw records of three drops (with their stacks, as a break-watch's tracer has
    them), as the unit tests' recording has them: the same hops and slot arithmetic
    (KDBG_UPDATE_GOLDEN=1 writes them to the recording)."""
    cfg = WatchConfig(filters=PacketFilters(proto="udp", dports=(PORT,)), journey=True,
                      stack=True, cmd=send_cmd(lab, 3, PORT))
    prepared = prepare(cfg)
    prepared.run(_Drops())
    assert len(raws) == 3
    for data, event in raws:
        raw = RawJourneyDrop.from_buffer_copy(data)
        assert raw.journey.skbaddr == raw.ev.skbaddr == event.skb
        assert event.journey is not None and len(event.journey.hops) == 5
        # the kernel's hash of the skb address is the one gdb's kdbg-journey computes
        assert raw.slot == slot_of(raw.ev.skbaddr, raw.slots)
        assert event.journey.table is not None
        assert event.journey.table.slot_address(event.skb) == raw.table + raw.slot * SLOT_SIZE
    assert prepared.journeys is not None
    record("complete", prepared.journeys, lab, raws)


def test_a_storm_pauses_the_journey_and_it_resumes_after(lab: VethBridgeLab) -> None:
    """A flood into the DROP rule for 3 s through a one-page ring: the watch detaches
    the hop programs while the kernel counts the drops instead of sending them
    (kdbg.trace.journeypause), says so at the end, and every drop is still printed or
    counted; 3 s after the flood a datagram is followed again, hop by hop (the second
    one: the first finds the CPU's note that the ring was full, cleared by its record)."""
    flood = ("import socket, time\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             f"s.bind(({lab.addr_a!r}, 40000))\n"
             "end = time.monotonic() + 3\n"
             "while time.monotonic() < end:\n"
             f"    s.sendto(b'kdbg-flood', ({lab.addr_b!r}, {PORT}))\n"
             "time.sleep(3)\n")
    last = SEND_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40002, dport=PORT,
                                count=1)
    then = SEND_UDP_CODE.format(src=lab.addr_a, dst=lab.addr_b, sport=40003, dport=PORT,
                                count=1)
    cmd = shlex.join(["taskset", "-c", "0", "ip", "netns", "exec", lab.a.name, PY, "-c",
                      flood + last + "time.sleep(0.5)\n" + then])
    rc, recs, err = watch("--journey", "--buffer-pages", "1", "--proto", "udp", "--dport",
                          str(PORT), "--cmd", cmd)
    assert rc == 0, err
    drops, _summary = accounted(recs)
    assert "in a storm (" in err, err[-2000:]
    paused = [d for d in drops if any("paused in a storm" in n
                                      for n in d.get("journey_incomplete", []))]
    # A drop printed while the hop programs were detached says so, unless its CPU found
    # the ring full when it entered: that reason comes first. Under load the one-page
    # ring is full at every such drop, so the flood's last printed drops may all say
    # that instead; none of them may claim a journey it did not have.
    flood_tail = [d for d in drops if d["sport"] == 40000][-5:]
    assert paused or (flood_tail and all(
        d.get("journey_incomplete") == [RING_FULL] for d in flood_tail)), \
        [d.get("journey_incomplete") for d in drops][-20:]
    first, after = drops[-2:]  # (the one-page ring holds one record with its journey)
    assert (first["sport"], after["sport"]) == (40002, 40003)
    assert first.get("journey_incomplete") in (None, [RING_FULL]), first
    assert "journey_incomplete" not in after, after.get("journey_incomplete")
    assert [h["point"] for h in after["journey"]] == POINTS
