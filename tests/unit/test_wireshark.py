"""kdbg's fields in Wireshark: the second pcapng comment kdbg writes, its Lua dissector
(kdbg/record/kdbg.lua) in Debian's tshark 4.0, and the script that installs it.

The recording is tests/data/diff/a.kdbg (real drops on 6.18: 23 NETFILTER_DROP, 22
NO_SOCKET in namespace kdbgc25dif-b); a recording carries no cause, so its pcapng has
none. Causes on real drops are tests/kernel/test_wireshark.py's."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.record import pcapng
from kdbg.trace.cause import Cause
from kdbg.trace.cttuple import CtTuple
from kdbg.trace.event import DropEvent
from tests import tshark as tsharkrun
from tests.conftest import need

ROOT = Path(__file__).resolve().parents[2]
LUA = ROOT / "kdbg" / "record" / "kdbg.lua"
REC = ROOT / "tests" / "data" / "diff" / "a.kdbg"
NETNS = 4026532239


def tshark(pcap: Path, *args: str, env: dict[str, str] | None = None,
           lua: bool = True, twice: bool = False) -> subprocess.CompletedProcess[str]:
    argv = tsharkrun.argv("-r", str(pcap), *args, lua=lua, twice=twice)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Lua" not in proc.stderr, proc.stderr
    return proc


def count(pcap: Path, display_filter: str, **kw: object) -> int:
    out = tshark(pcap, "-Y", display_filter, "-T", "fields", "-e", "frame.number",
                 **kw).stdout  # type: ignore[arg-type]
    return len(out.splitlines())


@pytest.fixture(scope="module")
def pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ws") / "a.pcapng"
    res = CliRunner().invoke(main, ["report", str(REC), "--pcap", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("display_filter, n", [
    ('kdbg.reason == "NETFILTER_DROP"', 23),
    ('kdbg.reason == "NO_SOCKET"', 22),
    ('kdbg.location == "nft_do_chain+0x46f"', 23),
    ('kdbg.symbol == "__udp4_lib_rcv"', 22),
    (f"kdbg.netns == {NETNS}", 45),
    ('kdbg.netns_name == "kdbgc25dif-b"', 45),
    ('kdbg.ifname == "veth-b"', 45),
    ('kdbg.reason == "NO_SOCKET" && udp.dstport == 9999', 0),
    ('kdbg.reason == "NO_SOCKET" && udp.dstport == 6000', 5),
    ("kdbg.cause", 0),  # a recording carries no cause
    ('frame.comment contains "NETFILTER_DROP at nft_do_chain"', 23),  # the comment for people
])
def test_each_field_of_a_recordings_pcapng(pcap: Path, display_filter: str, n: int) -> None:
    assert count(pcap, display_filter) == n


def test_loaded_twice_it_still_works(pcap: Path) -> None:
    """Installed by the set-up and given again with -X (as these tests do on a machine
    set up by scripts/setup.sh): the second load is no error, the fields still filter."""
    assert count(pcap, 'kdbg.reason == "NO_SOCKET"', twice=True) == 22


def test_the_first_comment_is_still_for_people(pcap: Path) -> None:
    rows = tshark(pcap, "-c", "1", "-T", "fields", "-E", "occurrence=f",
                  "-e", "frame.comment").stdout.splitlines()
    assert rows == [f"NETFILTER_DROP at nft_do_chain+0x46f, netns {NETNS} (kdbgc25dif-b), "
                    "interface veth-b"]


def _event() -> DropEvent:
    line = (ROOT / "tests" / "data" / "jsonl" / "causes.6.18.jsonl").read_text().splitlines()[0]
    return DropEvent.from_json(json.loads(line))


def test_fields_of_a_drop_with_its_cause() -> None:
    ev = _event()
    assert pcapng.fields(ev, {4026532247: "blue-b"}) == {
        "reason": "NETFILTER_DROP", "location": "nft_do_chain+0x46f", "symbol": "nft_do_chain",
        "netns": 4026532247, "netns_name": "blue-b", "ifname": "veth-b", "ifindex": 2,
        "cause": "table ip filter chain INPUT rule handle 2: udp dport 5555 counter drop "
                 "# handle 2",
        "cause_established": True, "hook": "input",
        "rule": "table ip filter chain INPUT rule handle 2", "rule_handle": 2}



def test_mark_and_conntrack_fields_come_from_the_json_records(tmp_path: Path) -> None:
    orig = CtTuple("ipv6", 17, ipaddress.ip_address("fd77:1::1"),
                   ipaddress.ip_address("fd77:1::2"), 40000, 7931)
    ev = dataclasses.replace(_event(), cause=None, mark=0x2A, ct_state="established",
                             ct_reply=True, ct_zone=3, ct_mark=7, ct_status=0x18A,
                             ct_original=orig)
    got = pcapng.fields(ev, {})
    rec = ev.to_json()
    for name in ("mark", "ct_state", "ct_reply", "ct_zone", "ct_mark", "ct_status"):
        assert got[name] == rec[name]
    assert {k: v for k, v in got.items() if k.startswith("ct_orig_")} == {
        "ct_orig_family": "ipv6", "ct_orig_proto": "udp", "ct_orig_saddr": "fd77:1::1",
        "ct_orig_daddr": "fd77:1::2", "ct_orig_sport": 40000, "ct_orig_dport": 7931}
    path = _one_packet(tmp_path / "ct.pcapng",
                       pcapng.fields_comment(ev, {}))
    assert count(path, "kdbg.ct_orig_saddr6 == fd77:1::1 && kdbg.ct_orig_dport == 7931") == 1
    assert count(path, "kdbg.ct_status & 0x8 && kdbg.ct_reply && kdbg.ct_zone == 3") == 1
    assert count(path, "kdbg.ct_orig_saddr") == 0  # an IPv6 tuple's is in the *6 field

def _one_packet(path: Path, *notes: str) -> Path:
    data = bytes.fromhex("4500001c00010000401100000a4d09010a4d09029c4015b300080000")
    with open(path, "wb") as f:
        w = pcapng.PcapngWriter(f, 65535)
        w.packet(pcapng.LINKTYPE_RAW, "veth-b", 1, 0, data, len(data), *notes)
    return path


def test_the_dissector_reads_any_text_json_can_carry(tmp_path: Path) -> None:
    text = 'rule "a\\b" → drop\ttab, ünïcode, "quotes", {braces}: 1,2'
    ev = dataclasses.replace(_event(), cause=Cause("NETFILTER_DROP", True, summary=text))
    path = _one_packet(tmp_path / "t.pcapng", "people", pcapng.fields_comment(ev, {}))
    got = tshark(path, "-T", "fields", "-e", "kdbg.cause", "-e", "kdbg.netns",
                 "-e", "kdbg.cause_established").stdout.rstrip("\n")
    # tshark writes a tab inside a field as \t
    assert got == text.replace("\t", "\\t") + "\t4026532247\t1"
    assert count(path, 'kdbg.cause contains "ünïcode"') == 1


def test_a_comment_it_cannot_read_is_flagged_not_fatal(tmp_path: Path) -> None:
    path = _one_packet(tmp_path / "bad.pcapng", 'kdbg {"reason": "X", "cause": "open')
    out = tshark(path, "-V").stdout
    assert "kdbg comment not understood: unterminated string" in out
    assert count(path, "_ws.expert.message contains \"kdbg comment\"") == 1
    assert count(path, "kdbg.reason") == 0


def test_the_install_script_makes_tshark_load_it(tmp_path: Path, pcap: Path) -> None:
    need(shutil.which("tshark") is not None, "tshark (Debian's): run scripts/setup.sh")
    env = {**os.environ, "HOME": str(tmp_path)}
    script = ROOT / "scripts" / "wireshark-dissector.sh"
    proc = subprocess.run([str(script), "--personal"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    link = tmp_path / ".local" / "lib" / "wireshark" / "plugins" / "kdbg.lua"
    assert link.resolve() == LUA
    assert count(pcap, 'kdbg.reason == "NETFILTER_DROP"', env=env, lua=False) == 23
    bad = subprocess.run([str(script), "--everywhere"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "wireshark-dissector: error: unknown option --everywhere (use --personal or nothing)"]
