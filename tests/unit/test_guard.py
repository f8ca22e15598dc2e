"""The guard's rules on synthetic kallsyms (no BTF, no DWARF), its blocklist parser,
its JSON shape and ``kdbg guard check`` through click's CliRunner."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.errors import BadInput, ProbeUnavailable, UnknownSymbol
from kdbg.guard import EVIDENCE_KINDS, TRANSPORTS, Decision, check, enforce, render
from kdbg.guard.decision import BreakpointRefused
from kdbg.symbols.dwarf import Dwarf, has_dwarf, relative_source
from kdbg.symbols.evidence import Blocklist, TargetSymbols, module_paths
from tests.conftest import DATA, need

GUARD = DATA / "guard"
KALLSYMS = (GUARD / "kallsyms.sample").read_text()
BLOCKLIST = (GUARD / "kprobes-blacklist.sample").read_text()
ORDER = (GUARD / "modules.order.sample").read_text()


@pytest.fixture(scope="module")
def bare() -> TargetSymbols:
    """kallsyms only: sections, module tags and names are all the evidence there is."""
    return TargetSymbols.from_parts(KALLSYMS)


@pytest.fixture(scope="module")
def full() -> TargetSymbols:
    """kallsyms plus the kprobe blocklist and modules.order."""
    return TargetSymbols.from_parts(KALLSYMS, blocklist_text=BLOCKLIST, modules_order_text=ORDER)


# -- rules ------------------------------------------------------------------

@pytest.mark.parametrize("where, transport, verdict, rule, kind", [
    # KGDBoE: networking, skb, timer core, kgdb, its own module.
    ("tcp_v4_rcv", "kgdboe", "refuse", "kgdboe-networking", "name"),
    ("__udp4_lib_rcv", "kgdboe", "refuse", "kgdboe-networking", "name"),
    ("nft_do_chain", "kgdboe", "refuse", "kgdboe-networking", "name"),
    ("__netif_receive_skb_core.constprop.0", "kgdboe", "refuse", "kgdboe-networking", "name"),
    ("kfree_skb_reason", "kgdboe", "refuse", "kgdboe-skb", "name"),
    ("sk_skb_reason_drop", "kgdboe", "refuse", "kgdboe-skb", "name"),
    ("consume_skb", "kgdboe", "refuse", "kgdboe-skb", "name"),
    ("mod_timer", "kgdboe", "refuse", "kgdboe-timer", "name"),
    ("__mod_timer", "kgdboe", "refuse", "kgdboe-timer", "name"),
    ("add_timer", "kgdboe", "refuse", "kgdboe-timer", "name"),
    ("timer_delete_sync", "kgdboe", "refuse", "kgdboe-timer", "name"),
    ("run_timer_softirq", "kgdboe", "refuse", "kgdboe-timer", "name"),
    ("kgdb_breakpoint", "kgdboe", "refuse", "kgdb-core", "name"),
    ("kgdboe_rx_handler", "kgdboe", "refuse", "kgdboe-self", "module"),
    ("poll_helper", "kgdboe", "refuse", "kgdboe-self", "module"),
    ("nft_chain_lookup", "kgdboe", "refuse", "kgdboe-networking", "name"),  # module name
    ("do_sys_openat2", "kgdboe", "allow", "kgdboe-safe", "name"),
    ("vfs_read", "kgdboe", "allow", "kgdboe-safe", "name"),
    ("entry_SYSCALL_64", "kgdboe", "refuse", "entry-text", "section"),
    ("exc_int3", "kgdboe", "refuse", "noinstr", "section"),
    ("schedule", "kgdboe", "warn", "hot-path", "section"),
    # kgdboc: kgdb core, the UART poll path, noinstr/entry; networking is fine.
    ("serial8250_get_poll_char", "kgdboc", "refuse", "kgdboc-uart-poll", "name"),
    ("serial8250_put_poll_char", "kgdboc", "refuse", "kgdboc-uart-poll", "name"),
    ("uart_poll_get_char", "kgdboc", "refuse", "kgdboc-uart-poll", "name"),
    ("kgdb_cpu_enter", "kgdboc", "refuse", "kgdb-core", "name"),
    ("exc_int3", "kgdboc", "refuse", "noinstr", "section"),
    ("tcp_v4_rcv", "kgdboc", "allow", "kgdboc-safe", "name"),
    ("mod_timer", "kgdboc", "allow", "kgdboc-safe", "name"),
    ("serial8250_interrupt", "kgdboc", "allow", "kgdboc-safe", "name"),
    ("serial8250_get_poll_char", "kgdboe", "allow", "kgdboe-safe", "name"),
    # gdbstub: allow, warn on hot code.
    ("tcp_v4_rcv", "gdbstub", "allow", "gdbstub-external", "name"),
    ("kfree_skb_reason", "gdbstub", "allow", "gdbstub-external", "name"),
    ("exc_int3", "gdbstub", "allow", "gdbstub-external", "section"),
    ("entry_SYSCALL_64", "gdbstub", "warn", "hot-path", "section"),
    ("default_idle", "gdbstub", "warn", "hot-path", "name"),
])
def test_rules_on_bare_kallsyms(bare: TargetSymbols, where: str, transport: str, verdict: str,
                                rule: str, kind: str) -> None:
    d = check(where, transport=transport, symbols=bare)
    assert (d.verdict, d.rule) == (verdict, rule), render(d)
    if kind != "none":
        assert d.evidence.kind == kind, render(d)


def test_every_transport_allows_plain_code(bare: TargetSymbols) -> None:
    for transport in TRANSPORTS:
        assert check("vfs_read", transport=transport, symbols=bare).verdict == "allow"


def test_module_path_beats_name(full: TargetSymbols) -> None:
    d = check("e1000_clean", transport="kgdboe", symbols=full)
    assert d.verdict == "refuse" and d.evidence.kind == "module"
    assert "drivers/net/ethernet/intel/e1000/e1000.ko" in d.evidence.fact
    d = check("ext4_readdir", transport="kgdboe", symbols=full)
    assert d.verdict == "allow" and d.evidence.kind == "module"
    d = check("poll_helper", transport="kgdboe", symbols=full)
    assert (d.verdict, d.rule, d.evidence.kind) == ("refuse", "kgdboe-self", "module")


def test_blocklist_decides_when_readable(bare: TargetSymbols, full: TargetSymbols) -> None:
    assert check("notify_die", transport="kgdboc", symbols=bare).verdict == "allow"
    d = check("notify_die", transport="kgdboc", symbols=full)
    assert (d.verdict, d.rule, d.evidence.kind) == ("refuse", "kprobe-blocklist", "blocklist")
    assert "notify_die" in d.evidence.fact
    # gdbstub does not care about kgdb's blocklist.
    assert check("notify_die", transport="gdbstub", symbols=full).verdict == "allow"
    # the blocklist outranks section markers and names for the same address
    d = check("exc_int3", transport="kgdboe", symbols=full)
    assert d.evidence.kind == "blocklist"


def test_addresses_and_offsets(bare: TargetSymbols) -> None:
    d = check("tcp_v4_rcv+0x4c", transport="kgdboe", symbols=bare)
    assert d.target.symbol == "tcp_v4_rcv" and d.target.offset == 0x4C
    d = check("0xffffffff81200210", transport="kgdboe", symbols=bare)
    assert (d.target.symbol, d.target.offset, d.verdict) == ("vfs_read", 0x10, "allow")
    d = check(0xFFFFFFFF81300604, transport="kgdboe", symbols=bare)
    assert (d.target.symbol, d.verdict) == ("tcp_v4_rcv", "refuse")


def test_address_outside_text_is_refused_everywhere(bare: TargetSymbols) -> None:
    for transport in TRANSPORTS:
        d = check(0x1000, transport=transport, symbols=bare)
        assert (d.verdict, d.rule, d.evidence.kind) == ("refuse", "not-kernel-text", "none")


def test_bad_input(bare: TargetSymbols) -> None:
    with pytest.raises(UnknownSymbol, match="closest: tcp_v4_rcv"):
        check("tcp_v4_rcx", transport="kgdboe", symbols=bare)
    with pytest.raises(BadInput, match="unknown transport"):
        check("vfs_read", transport="jtag", symbols=bare)
    with pytest.raises(BadInput):
        check("vfs_read+0x999999", transport="kgdboe", symbols=bare)


# -- suggestions, force, enforce ----------------------------------------------

def test_refusal_suggests_safe_frame_transport_and_force(bare: TargetSymbols) -> None:
    k = bare.kallsyms
    stack = [k.symbol("kfree_skb_reason").address + 0x20, k.symbol("tcp_v4_rcv").address + 0x90,
             k.symbol("handle_softirqs").address + 0x30, k.symbol("vfs_read").address + 8]
    d = check("kfree_skb_reason+0x20", transport="kgdboe", symbols=bare, stack=stack)
    assert d.verdict == "refuse" and not d.forced and d.refused
    assert "handle_softirqs+0x30" in d.suggestions[0] and "frame #2" in d.suggestions[0]
    assert any(s.startswith("safe on gdbstub") for s in d.suggestions)
    assert any(s.startswith("safe on kgdboc") for s in d.suggestions)
    assert "--force" in d.suggestions[-1]
    with pytest.raises(BreakpointRefused) as err:
        enforce(d)
    assert err.value.decision is d and err.value.exit_code == 3


def test_no_safe_frame_is_said(bare: TargetSymbols) -> None:
    stack = [bare.kallsyms.symbol("nft_do_chain").address + 4]
    d = check("tcp_v4_rcv", transport="kgdboe", symbols=bare, stack=stack)
    assert d.suggestions[0] == "no frame of the captured stack is safe on kgdboe"


def test_force_is_recorded_and_not_enforced(bare: TargetSymbols) -> None:
    d = check("mod_timer", transport="kgdboe", symbols=bare, force=True)
    assert d.verdict == "refuse" and d.forced and not d.refused
    enforce(d)
    assert d.to_json()["forced"] is True
    assert "FORCED" in render(d)
    # force on an allowed spot changes nothing
    assert not check("vfs_read", transport="kgdboe", symbols=bare, force=True).forced


def test_json_shape(bare: TargetSymbols) -> None:
    d = check("tcp_v4_rcv", transport="kgdboe", symbols=bare)
    j = json.loads(json.dumps(d.to_json()))
    assert set(j) == {"verdict", "transport", "target", "rule", "why", "evidence",
                      "suggestions", "forced", "considered", "unavailable"}
    assert j["target"] == {"address": "0xffffffff81300600", "symbol": "tcp_v4_rcv",
                           "offset": 0, "module": None, "text": "tcp_v4_rcv+0x0"}
    assert j["evidence"]["kind"] in EVIDENCE_KINDS
    assert any(u.startswith("blocklist:") for u in j["unavailable"])
    assert isinstance(d, Decision)


# -- blocklist and modules.order parsing ---------------------------------------

def test_blocklist_parse() -> None:
    bl = Blocklist.parse(BLOCKLIST)
    assert len(bl) == 5
    hit = bl.find(0xFFFFFFFF81500010)
    assert hit is not None and hit.symbol == "notify_die"
    assert bl.find(0xFFFFFFFF81500080) is None  # end is exclusive
    assert bl.find(0xFFFFFFFFC0000120).symbol == "nf_tables_core_thing [nf_tables]"  # type: ignore[union-attr]
    assert Blocklist.parse("").find(0) is None


def test_blocklist_rejects_garbage_and_zeroes() -> None:
    with pytest.raises(BadInput, match="line 1"):
        Blocklist.parse("not a range\tfoo\n")
    with pytest.raises(ProbeUnavailable, match="zero"):
        Blocklist.parse("0x0000000000000000-0x0000000000000000\tfoo\n")


def test_module_paths() -> None:
    m = module_paths(ORDER + "kernel/drivers/net/virtio-net.ko.xz\n")
    assert m["nf_tables"] == "net/netfilter/nf_tables.ko"
    assert m["virtio_net"] == "drivers/net/virtio-net.ko.xz"


# -- DWARF plumbing -----------------------------------------------------------

@pytest.mark.parametrize("raw, rel", [
    ("debian/build/build_amd64_none_amd64/net/ipv4/tcp_ipv4.c", "net/ipv4/tcp_ipv4.c"),
    ("/home/u/src/linux-6.1/drivers/net/e1000/e1000_main.c", "drivers/net/e1000/e1000_main.c"),
    ("./kernel/time/timer.c", "kernel/time/timer.c"),
])
def test_relative_source(raw: str, rel: str) -> None:
    assert relative_source(raw) == rel


def test_relative_source_with_learned_root() -> None:
    assert relative_source("/b/kernel/linux/net/core/dev.c", "/b/kernel/linux/") == \
        "net/core/dev.c"


def test_dwarf_on_a_compiled_program(tmp_path: Path) -> None:
    """Dwarf's addr2line server on a small ELF built here with -g, at a fake KASLR offset."""
    need(shutil.which("gcc") is not None and shutil.which("addr2line") is not None,
         "gcc and addr2line (binutils): run scripts/setup.sh")
    src = tmp_path / "net" / "drop.c"
    src.parent.mkdir()
    src.write_text("static inline int helper(int x) { return x * 3; }\n"
                   "int drop_here(int x)\n{\n  return helper(x) + 1;\n}\n"
                   "int main(void) { return drop_here(2); }\n")
    exe = tmp_path / "prog"
    subprocess.run(["gcc", "-g", "-O2", "-o", str(exe), str(src)], check=True, cwd=tmp_path)
    assert has_dwarf(exe)
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    link = next(int(line.split()[0], 16) for line in nm.splitlines()
                if line.endswith(" drop_here"))
    offset = 0x1000000
    with Dwarf(exe, kaslr_offset=offset) as dwarf:
        first = dwarf.line(link + offset)
        assert first is not None
        assert first.function_frame.function == "drop_here"
        assert first.function_frame.file.endswith("net/drop.c")
        assert dwarf.line(link + offset) is first  # cached
        assert dwarf.line(0xFFFFFFFFFFFF0000) is None
        assert dwarf.line(link + offset) is first  # still in step after an unknown address


# -- CLI ----------------------------------------------------------------------

def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["guard", "check", "--kallsyms",
                                       str(GUARD / "kallsyms.sample"), *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_refuse_exits_3() -> None:
    code, out, err = _cli("tcp_v4_rcv", "--transport", "kgdboe")
    assert code == 3
    assert out.startswith("refuse: tcp_v4_rcv+0x0")
    assert "rule:     kgdboe-networking" in out
    assert err.startswith("kdbg: error: breakpoint at tcp_v4_rcv+0x0 refused on kgdboe")


def test_cli_allow_and_warn_exit_0() -> None:
    code, out, _ = _cli("vfs_read")
    assert code == 0 and out.startswith("allow: vfs_read+0x0")
    code, out, _ = _cli("schedule", "-t", "gdbstub")
    assert code == 0 and out.startswith("warn: schedule+0x0")


def test_cli_unknown_symbol_exits_2_with_closest() -> None:
    code, out, err = _cli("tcp_v4_rcx")
    assert code == 2 and out == ""
    assert "unknown kernel symbol 'tcp_v4_rcx'" in err and "closest: tcp_v4_rcv" in err


def test_cli_json_and_force() -> None:
    code, out, err = _cli("mod_timer", "--json", "--force",
                          "--stack", "ffffffff81100420,ffffffff81200210")
    assert code == 0
    j = json.loads(out)
    assert (j["verdict"], j["rule"], j["forced"]) == ("refuse", "kgdboe-timer", True)
    assert "vfs_read+0x10" in j["suggestions"][0]
    assert "forced with --force" in err


def test_cli_bad_stack_is_bad_input() -> None:
    code, _, err = _cli("vfs_read", "--stack", "zz")
    assert code == 2 and "--stack" in err


def test_blocklist_parse_real_sample() -> None:
    """The kprobe blocklist as Debian's 6.1 kernel shows it (read from the lab guest)."""
    bl = Blocklist.parse((GUARD / "kprobes-blacklist.6.1.0-56-amd64").read_text())
    assert len(bl) == 427
    hit = bl.find(0xFFFFFFFF810D2E30 + 0x10)
    assert hit is not None and hit.symbol == "notify_die"
    assert str(hit) == "0xffffffff810d2e30-0xffffffff810d2ee0 notify_die"
    entry = bl.find(0xFFFFFFFF81C00020)
    assert entry is not None and entry.symbol == "__entry_text_start"
    assert bl.find(0xFFFFFFFF810D2EE0) is None
