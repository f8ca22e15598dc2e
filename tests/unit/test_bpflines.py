"""kdbg watch --bpf without a kernel: the line table of a recorded XDP program, the
verdict's lines, the drop record and the command line.

tests/data/bpfprog/xdp_drop_port.host.json is what kdbg read through bpf(2) about
tests/data/bpfprog/xdp_drop_port.c loaded by bcc (-DDROP_PORT=7777) on this machine's
6.18 kernel: ``tests/vm/bpf_loader.py --record-xdp FILE 7777``; tc_shoot_port.host.json
likewise for tc_shoot_port.c (``--record-tc``).
"""

from __future__ import annotations

import ctypes as ct
import json
import socket

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.drops.bpfwatch import decode, wanted
from kdbg.symbols.bpflines import LineTable, btf_strings
from kdbg.symbols.reasons import ReasonTable
from kdbg.trace import bpfverdict
from kdbg.trace import filters as flt
from kdbg.trace.bpfprogs import ProgFacts
from kdbg.trace.event import DropEvent
from kdbg.trace.layout import RawDropEvent
from tests.conftest import DATA

RECORD = DATA / "bpfprog" / "xdp_drop_port.host.json"
SOURCE = DATA / "bpfprog" / "xdp_drop_port.c"
DROP_IF = "if (udp->dest == htons(DROP_PORT))"


@pytest.fixture(scope="module")
def prog() -> ProgFacts:
    return ProgFacts.from_record(json.loads(RECORD.read_text()))


def test_line_table_texts_are_the_programs_source(prog: ProgFacts) -> None:
    table = prog.lines
    assert table is not None
    source = SOURCE.read_text()
    texts = {ln.text for ln in table.lines if ln.line}
    assert texts and all(t in source for t in texts), texts
    assert {ln.file for ln in table.lines} == {"/virtual/main.c"}  # bcc's name for it
    assert [ln.insn for ln in table.lines] == sorted(ln.insn for ln in table.lines)
    assert len(table.insns) * 8 == len(prog.xlated)


def test_line_at_takes_the_last_record_at_or_before(prog: ProgFacts) -> None:
    table = prog.lines
    assert table is not None
    first = table.line_at(0)
    assert first is not None and first.text.startswith("int kdbg_test_xdp(")
    for rec in table.lines:
        assert table.line_at(rec.insn) == rec
    last = table.lines[-1]
    assert table.line_at(len(table.insns) + 10) == last


def test_the_drop_verdict_is_named_to_the_deciding_line(prog: ProgFacts) -> None:
    table = prog.lines
    assert table is not None
    (drop,) = table.returning(1)  # XDP_DROP: one site, so exact
    assert drop.text == DROP_IF
    # The line of the source file that holds that text, shifted by bcc's preamble: the
    # record's numbers are /virtual/main.c's, and the text is the same.
    numbered = SOURCE.read_text().splitlines()
    assert sum(1 for ln in numbered if ln.strip() == DROP_IF) == 1
    passes = table.returning(2)  # XDP_PASS: set on entry, kept on the early returns
    assert passes and all(ln.line and ln.text != DROP_IF for ln in passes)
    assert table.returning(3) == ()  # XDP_TX: never returned
    assert table.returning(0) == ()  # XDP_ABORTED: never returned


def test_a_verdict_computed_without_a_branch_is_followed_to_its_line() -> None:
    # clang returns `cond ? TC_ACT_SHOT : TC_ACT_OK` as r0 = 1; if cond goto +1;
    # r0 = 0; r0 <<= 1; exit: no instruction sets r0 to 2.
    tc = ProgFacts.from_record(json.loads((DATA / "bpfprog" / "tc_shoot_port.host.json")
                                          .read_text()))
    table = tc.lines
    assert table is not None
    assert not any(op in (0xB7, 0xB4) and regs & 0x0F == 0 and imm == 2
                   for op, regs, _off, imm in table.insns)
    (shot,) = table.returning(2)
    assert shot.text == DROP_IF
    ok = table.returning(0)
    assert shot in ok and any(ln.text.startswith("int kdbg_test_tc(") for ln in ok)


def test_btf_strings_refuses_what_is_not_btf() -> None:
    from kdbg.errors import BtfError

    with pytest.raises(BtfError):
        btf_strings(b"\0" * 32)
    with pytest.raises(BtfError):
        LineTable(b"", b"xx", b"")


def raw_drop(prog: ProgFacts) -> RawDropEvent:
    raw = RawDropEvent()
    raw.time_ns, raw.cpu, raw.tgid, raw.tid = 5, 1, 10, 11
    raw.reason, raw.location, raw.skbaddr = 1, prog.address, 0xFFFF0000
    raw.family, raw.l4proto, raw.l4_valid = 4, 17, 1
    raw.sport, raw.dport, raw.len, raw.ifindex, raw.netns = 40000, 7777, 42, 2, 4026532281
    ct.memmove(raw.saddr, socket.inet_aton("10.99.0.1"), 4)
    ct.memmove(raw.daddr, socket.inet_aton("10.99.0.2"), 4)
    raw.ifname, raw.comm = b"bpfb", b"python"
    return raw


def test_a_verdict_becomes_a_drop_record_naming_program_and_line(prog: ProgFacts) -> None:
    ev = decode(raw_drop(prog), prog, 1000)
    assert (ev.reason, ev.reason_code, ev.ifname, ev.dport, ev.proto) == (
        "XDP_DROP", 1, "bpfb", 7777, "udp")
    assert ev.location == f"bpf_prog_{prog.tag}_kdbg_test_xdp+0x0"
    assert ev.time_ns == 1005 and str(ev.daddr) == "10.99.0.2"
    rec = ev.to_json()
    assert rec["prog"]["id"] == prog.id and rec["prog"]["name"] == "kdbg_test_xdp"
    assert rec["prog"]["verdict_lines"] == [
        {"file": "/virtual/main.c", "line": ev.line, "text": DROP_IF}]
    assert rec["file"] == "/virtual/main.c"
    assert DropEvent.from_json(json.loads(json.dumps(rec))) == ev
    from kdbg.drops import drop_line

    assert drop_line(ev).endswith(f"prog {prog.id} kdbg_test_xdp: {DROP_IF}")


def test_an_unknown_program_and_verdict_still_decode(prog: ProgFacts) -> None:
    raw = raw_drop(prog)
    raw.reason = 0
    ev = decode(raw, None, 0)
    assert (ev.reason, ev.prog, ev.symbol, ev.file) == ("VERDICT_0", None, None, None)


def test_prog_picks_by_name_or_id(prog: ProgFacts) -> None:
    assert wanted(prog, ())
    assert wanted(prog, ("kdbg_test_xdp",)) and wanted(prog, (str(prog.id),))
    assert not wanted(prog, ("other",))


def test_program_text_carries_the_filters() -> None:
    fields = {**{k: 8 * i for i, k in enumerate(bpfverdict.FIELDS)},
              "DEV_XDP_STATE": 2248, "XDP_ENTITY_SIZE": 16, "SKB_INGRESS_BIT": 1034}
    spec = flt.PacketFilters(proto="udp", dports=(7777,), ifname="bpfb").resolve(
        ReasonTable({}, "test"))
    text = bpfverdict.build(fields, spec)
    assert "#define XDP_WANTED(v)    (v == 0 || v == 1)" in text
    assert "#define TC_WANTED(v)     (v == 2)" in text
    assert "dport == 7777" in text and "ifname[0] != 98" in text
    assert "{{" not in text


@pytest.mark.parametrize(("args", "message"), [
    (["--bpf", "--stack"], "--stack does nothing with --bpf (BPF verdicts come from fexit "
                           "on the programs, not skb:kfree_skb)"),
    (["--prog", "x"], "--prog does nothing without --bpf"),
    (["--bpf", "--reason", "NO_SOCKET"], "--reason does nothing with --bpf (BPF verdicts "
                                         "come from fexit on the programs, not skb:kfree_skb)"),
    (["--bpf", "--count", "0"], "--count must be positive"),
])
def test_watch_bpf_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["watch", *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"kdbg: error: {message}"

