"""The reason-to-counter table, the counters' parser on /proc/net files recorded on
Linux 6.18, and the counters put beside each reason in ``kdbg diagnose``'s report."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from kdbg import diagnose
from kdbg.causes import LINKS, NetnsCounters, beside, linked, namespaces
from kdbg.causes.counters import FILES, moved, parse
from kdbg.causes.netnsref import NetnsRef
from kdbg.drops import Summary
from kdbg.symbols import tpformat
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace.event import DropEvent

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


def recorded() -> dict[str, int]:
    return parse({f: (DATA / "counters" / f"{Path(f).name}.6.18").read_text() for f in FILES})


def test_the_recorded_files_parse_to_nstat_names() -> None:
    c = recorded()
    snmp = (DATA / "counters" / "snmp.6.18").read_text().splitlines()
    udp_names, udp_values = (ln.split()[1:] for ln in snmp if ln.startswith("Udp:"))
    assert c["UdpNoPorts"] == int(udp_values[udp_names.index("NoPorts")])
    assert c["TcpMaxConn"] == -1  # signed, as the kernel prints it
    assert c["Udp6NoPorts"] == 35  # snmp6: one "Name value" a line
    assert "TcpExtTCPZeroWindowDrop" in c and "IpExtInTruncatedPkts" in c
    assert "IcmpMsgOutType3" in c
    headers = sum(len(ln.split()) - 1 for path in ("snmp", "netstat")
                  for ln in (DATA / "counters" / f"{path}.6.18").read_text().splitlines()[::2])
    six = len((DATA / "counters" / "snmp6.6.18").read_text().splitlines())
    assert len(c) == headers + six


def test_lines_out_of_pairs_are_refused() -> None:
    with pytest.raises(Exception, match="unexpected SNMP counter lines"):
        parse({"x": "Ip: Forwarding\nIcmp: 1\n"})


@pytest.mark.parametrize("kernel", ["6.1", "6.18"])
def test_every_linked_reason_is_a_kernel_reason(kernel: str) -> None:
    fmt = tpformat.parse((DATA / f"kfree_skb.format.{kernel}").read_text())
    names = {r.name for r in ReasonTable.from_tpformat(fmt)}
    assert {link.reason for link in LINKS} <= names


def test_every_linked_counter_is_one_the_kernel_prints() -> None:
    c = recorded()
    assert [n for link in LINKS for n in link.counters if n not in c] == []


def test_one_link_per_reason() -> None:
    reasons = [link.reason for link in LINKS]
    assert len(reasons) == len(set(reasons))
    assert linked("NETFILTER_DROP") == ()
    assert "UdpRcvbufErrors" in linked("SOCKET_RCVBUFF")


def test_the_docs_table_is_the_code_table() -> None:
    text = (ROOT / "docs" / "diagnose.md").read_text()
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| (.+?) \| (.+?) \|$", text, re.M)
    doc = {r: (tuple(re.findall(r"`(\w+)`", counters)), source) for r, counters, source in rows}
    assert doc == {link.reason: (link.counters, link.source) for link in LINKS}


def test_moved_and_shared_counters() -> None:
    before = {"UdpRcvbufErrors": 4, "UdpInErrors": 10, "UdpInCsumErrors": 0, "IpInReceives": 7}
    after = {"UdpRcvbufErrors": 26, "UdpInErrors": 35, "UdpInCsumErrors": 3, "IpInReceives": 7}
    d = moved(before, after)
    assert d == {"UdpInCsumErrors": 3, "UdpInErrors": 25, "UdpRcvbufErrors": 22}
    got = beside("SOCKET_RCVBUFF", d, {"SOCKET_RCVBUFF", "UDP_CSUM", "NETFILTER_DROP"})
    assert [(b.name, b.delta, b.shared_with) for b in got] == [
        ("UdpRcvbufErrors", 22, ()), ("UdpInErrors", 25, ("UDP_CSUM",))]
    assert got[1].text() == "UdpInErrors +25 (with UDP_CSUM)"
    assert beside("SOCKET_RCVBUFF", {}, ()) == []


def _diagnosis(deltas: dict[str, int]) -> diagnose.Diagnosis:
    """The recorded drops of docs/diagnose.md's run, grouped, with counters around them."""
    sink = diagnose.Collector(err=None)
    for line in (DATA / "jsonl" / "causes.6.18.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["type"] == "drop":
            sink.drop(DropEvent.from_json(rec))
    groups = sorted(sink.groups.values(), key=lambda g: -g.count)
    before = recorded()
    ns = NetnsCounters(NetnsRef(4026532247, "/var/run/netns/blue-b", "blue-b"), before,
                       {k: v + deltas.get(k, 0) for k, v in before.items()})
    return diagnose.Diagnosis(groups, Summary(0, 0, 0, None), 1.0, None, False, [], [ns])


def test_the_report_puts_the_moved_counters_beside_their_reason() -> None:
    d = _diagnosis({"UdpRcvbufErrors": 22, "UdpInErrors": 27, "UdpInCsumErrors": 3,
                    "UdpNoPorts": 17, "TcpExtIPReversePathFilter": 5, "IpInReceives": 104})
    text = diagnose.report_text(d)
    assert "    moved:   UdpRcvbufErrors +22, UdpInErrors +27 (with PKT_TOO_SMALL, UDP_CSUM)" \
        in text
    assert "    moved:   UdpNoPorts +17\n" in text
    assert "    moved:   TcpExtIPReversePathFilter +5\n" in text
    assert "    moved:   UdpInCsumErrors +3, UdpInErrors +27 (with PKT_TOO_SMALL, " \
        "SOCKET_RCVBUFF)" in text
    assert text.count("    moved:") == 5  # NETFILTER_DROP's four causes have no counter
    assert text.endswith("counters in netns 4026532247 (blue-b), moved: IpInReceives +104, "
                         "TcpExtIPReversePathFilter +5, UdpInCsumErrors +3, UdpInErrors +27, "
                         "UdpNoPorts +17, UdpRcvbufErrors +22")
    recs = [json.loads(x) for x in diagnose.report_json(d)]
    rcv = next(r for r in recs if r.get("reason") == "SOCKET_RCVBUFF")
    assert rcv["counters"] == [{"name": "UdpRcvbufErrors", "moved": 22},
                               {"name": "UdpInErrors", "moved": 27,
                                "shared_with": ["PKT_TOO_SMALL", "UDP_CSUM"]}]
    ctr = next(r for r in recs if r["type"] == "counters")
    assert ctr["netns_name"] == "blue-b"
    assert ctr["moved"]["UdpRcvbufErrors"]["after"] - \
        ctr["moved"]["UdpRcvbufErrors"]["before"] == 22
    assert recs[-1]["type"] == "summary"


def test_a_linked_reason_whose_counters_did_not_move_says_so() -> None:
    text = diagnose.report_text(_diagnosis({}))
    assert "    moved:   none of UdpNoPorts, Udp6NoPorts\n" in text
    assert text.endswith("counters in netns 4026532247 (blue-b): none moved")


def test_the_namespaces_a_run_reads() -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    every = namespaces(None)
    assert every[0].ref.own and every[0].ref.inode == own
    assert len({ns.ref.inode for ns in every}) == len(every)
    [gone] = namespaces(1)  # no namespace has inode 1: said so, not raised
    assert gone.error is not None and "no longer exists" in gone.error
    gone.read("before")
    assert gone.before is None
