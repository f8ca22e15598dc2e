"""``kdbg watch --bpf --break`` without a kernel: where it breaks in a program's JITed
image, the symbols gdb is given for it (a real gdb reads the synthetic file), the
guard's view of JITed code per transport, and the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.drops.bpfwatch import decode
from kdbg.guard.policy import check
from kdbg.symbols import bpfjit
from kdbg.symbols.evidence import TargetSymbols
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.trace.bpfprogs import ProgFacts
from kdbg.trace.bpfverdict import BpfProg, VerdictLine
from kdbg.trace.event import DropEvent
from tests.conftest import need
from tests.unit.test_bpflines import DROP_IF, RECORD, raw_drop

MAIN = 0xFFFFFFFFC0201000
SUB = 0xFFFFFFFFC0203000
KALLSYMS = ("ffffffff81000000 T _stext\nffffffff81000100 T tcp_v4_rcv\n"
            "ffffffff82000000 T _etext\nffffffffc0201000 t bpf_prog_ab12_kdbg_test_xdp [bpf]\n")


def jited_prog() -> ProgFacts:
    """The recorded program, as if JITed at MAIN: each line-info record 8 bytes on."""
    prog = ProgFacts.from_record(json.loads(RECORD.read_text()))
    prog.jited_funcs = ((MAIN, 0x100),)
    prog.jited_lines = tuple(MAIN + 8 * i for i in range(len(prog.line_info) // 16))
    return prog


def test_the_verdict_line_carries_its_jited_address_and_is_where_break_stops() -> None:
    prog = jited_prog()
    ev = decode(raw_drop(prog), prog, 0)
    assert ev.prog is not None
    (line,) = ev.prog.lines
    table = prog.lines
    assert table is not None
    index = [r.insn for r in table.lines].index(table.returning(1)[0].insn)
    assert line.text == DROP_IF and line.address == MAIN + 8 * index
    assert ev.prog.break_site() == (line.address, f"/virtual/main.c:{line.line} {DROP_IF}")
    rec = json.loads(json.dumps(ev.to_json()))
    assert rec["prog"]["jited"] == [{"address": f"0x{MAIN:x}", "size": 0x100}]
    assert rec["prog"]["verdict_lines"][0]["address"] == f"0x{line.address:x}"
    jited_lines = rec["prog"]["jited_lines"]
    assert [f"0x{line.address:x}", "/virtual/main.c", line.line] in jited_lines
    assert len(jited_lines) == len([ln for ln in table.lines if ln.line])
    assert DropEvent.from_json(rec) == ev


def test_several_candidate_lines_or_none_break_at_the_programs_entry() -> None:
    lines = (VerdictLine("a.c", 3, "return 1;", MAIN + 8), VerdictLine("a.c", 9, "x", MAIN + 16))
    prog = BpfProg(5, "p", "ab12", "xdp", "xdp", lines, True, ((MAIN, 0x40),))
    assert prog.break_site() == (MAIN, "the program's entry (2 candidate verdict lines: "
                                       "fexit cannot tell which returned)")
    bare = BpfProg(5, "p", "ab12", "xdp", "xdp", (), False, ((MAIN, 0x40),))
    assert bare.break_site() == (MAIN, "the program's entry (no verdict line)")
    assert BpfProg(5, "p", "ab12", "xdp", "xdp").break_site() is None


def test_gdb_reads_the_synthetic_symbol_file(tmp_path: Path) -> None:
    need(shutil.which("gdb") is not None, "gdb: run scripts/setup.sh")
    images = bpfjit.images(5, "xdp", "bpf_prog_ab12_kdbg_test_xdp",
                           ((MAIN, 0x100), (SUB, 0x20)))
    lines = (bpfjit.JitedLine(MAIN, "/virtual/main.c", 22),
             bpfjit.JitedLine(MAIN + 0x20, "/virtual/main.c", 34),
             bpfjit.JitedLine(MAIN + 0x40, "/virtual/main.c", 0),  # no line: left out
             bpfjit.JitedLine(MAIN + 0x60, "/virtual/main.c", 35))
    path = tmp_path / "jit.elf"
    path.write_bytes(bpfjit.symbol_file(images, lines))
    out = subprocess.run(
        ["gdb", "--nx", "--batch", "-ex", f"add-symbol-file {path}",
         "-ex", f"info line *0x{MAIN + 0x44:x}",
         "-ex", f"info symbol 0x{MAIN + 0x2c:x}", "-ex", f"info symbol 0x{SUB + 4:x}",
         "-ex", f"remove-symbol-file {path}", "-ex", f"info symbol 0x{MAIN:x}"],
        capture_output=True, text=True, timeout=60, check=False).stdout
    assert (f'Line 34 of "/virtual/main.c" starts at address 0x{MAIN + 0x20:x} '
            f"<bpf_prog_ab12_kdbg_test_xdp+32> and ends at 0x{MAIN + 0x60:x}") in out
    assert "bpf_prog_ab12_kdbg_test_xdp + 44 in section" in out
    assert "bpf_prog_ab12_kdbg_test_xdp_f1 + 4 in section" in out
    assert out.rstrip().endswith(f"No symbol matches 0x{MAIN:x}.")


def test_jited_code_is_named_and_judged_as_networking_per_transport() -> None:
    ks = Kallsyms.parse(KALLSYMS, "")
    assert ks.lookup(MAIN + 0x10).symbol is None  # [bpf] is no module span
    ks.add_jited(bpfjit.images(5, "xdp", "bpf_prog_ab12_kdbg_test_xdp", ((MAIN, 0x100),)))
    loc = ks.lookup(MAIN + 0x10)
    assert str(loc) == "bpf_prog_ab12_kdbg_test_xdp+0x10 [bpf]"
    assert ks.lookup(MAIN + 0x100).symbol is None
    symbols = TargetSymbols(ks)
    verdicts = {t: check(MAIN + 0x10, transport=t, symbols=symbols)
                for t in ("gdbstub", "kgdboc", "kgdboe")}
    assert {t: d.verdict for t, d in verdicts.items()} == {
        "gdbstub": "allow", "kgdboc": "allow", "kgdboe": "refuse"}
    oe = verdicts["kgdboe"]
    assert oe.rule == "kgdboe-networking"
    assert oe.evidence.fact.startswith(
        "[bpf] bpf_prog_ab12_kdbg_test_xdp: the JITed code of xdp program 5")


@pytest.mark.parametrize(("args", "message"), [
    (["--bpf", "--lab", "x"], "--lab does nothing without --break"),
    (["--bpf", "--break", "--stack"], "--stack does nothing with --bpf (BPF verdicts come "
                                      "from fexit on the programs, not skb:kfree_skb)"),
    (["--bpf", "--break", "--interactive"], "--interactive does nothing with --bpf (BPF "
                                            "verdicts come from fexit on the programs, "
                                            "not skb:kfree_skb)"),
])
def test_watch_bpf_break_bad_input_is_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["watch", *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"kdbg: error: {message}"



def test_an_aborted_seen_by_xdp_exception_names_the_program_and_claims_no_line() -> None:
    prog = jited_prog()
    raw = raw_drop(prog)
    raw.reason, raw.chain, raw.skbaddr, raw.len, raw.family = 0, 1, 0, 0, 0
    ev = decode(raw, prog, 0)
    assert ev.prog is not None
    assert (ev.reason, ev.prog.via, ev.prog.lines, ev.line) == (
        "XDP_ABORTED", "xdp:xdp_exception", (), None)
    assert DropEvent.from_json(json.loads(json.dumps(ev.to_json()))) == ev


def test_stats_rows_name_each_program_and_verdict() -> None:
    from kdbg.drops.bpfwatch import VERDICT_NAMES

    assert VERDICT_NAMES == {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "TC_ACT_SHOT"}
    result = CliRunner().invoke(main, ["watch", "--bpf", "--stats", "--count", "3"])
    assert result.exit_code == 2
    assert result.output.strip() == ("kdbg: error: --count counts the drops shown, and "
                                     "--stats shows none (use --duration)")


def test_the_program_text_counts_in_the_kernel_only_under_stats() -> None:
    from kdbg.symbols.reasons import ReasonTable
    from kdbg.trace import bpfverdict
    from kdbg.trace.filters import PacketFilters

    fields = {**{k: 8 * i for i, k in enumerate(bpfverdict.FIELDS)},
              "DEV_XDP_STATE": 2248, "XDP_ENTITY_SIZE": 16, "SKB_INGRESS_BIT": 1034}
    spec = PacketFilters().resolve(ReasonTable({}, "test"))
    assert "#define KDBG_STATS       0" in bpfverdict.build(fields, spec)
    text = bpfverdict.build(fields, spec, stats=True)
    assert "#define KDBG_STATS       1" in text
    assert "int kdbg_on_xdp_exception(" in text and "traced.lookup(&entry)" in text
    assert "#define SKB_INGRESS_BIT  " in text and "#define DEV_XDP_STATE    " in text


def test_attach_names_the_hook_and_where_the_kernel_told_its_mode_or_side() -> None:
    from kdbg.trace.bpfverdict import attach_of

    assert [attach_of("xdp", c) for c in (0, 8, 16, 1 | 16)] == [
        "xdp", "xdp/generic", "xdp/driver", "xdp/driver"]
    assert [attach_of("tc", c) for c in (0, 2, 4)] == ["tc", "tc/ingress", "tc/egress"]
    prog = jited_prog()
    raw = raw_drop(prog)
    raw.chain = 16
    ev = decode(raw, prog, 0)
    assert ev.prog is not None and (ev.prog.attach, ev.prog.via) == ("xdp/driver", "fexit")
