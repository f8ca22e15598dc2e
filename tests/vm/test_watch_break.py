"""``kdbg watch --break`` end to end on the default lab (Debian 6.1 under TCG).

A DROP rule for UDP 5555 in the guest and a datagram a second into it; kdbg's
tracer runs in the guest, gdb reaches the guest through QEMU's stub.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.vm.conftest import KDBG, gdbs_on, kdbg_json, netfilter_break, of, udp_drops

PORT = 5555


@pytest.fixture(scope="module")
def lab(default_lab: str) -> Iterator[str]:
    """The session's default lab (tests/vm/conftest.py), with a DROP rule for UDP to
    PORT and a datagram into it each second while this module runs."""
    with udp_drops(default_lab, PORT, every=1):
        yield default_lab


def assert_target_runs_clean(lab: str) -> None:
    """Drops still flow (the guest is not halted), and no kdbg gdb is left."""
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--count", "2")
    assert rc == 0, err
    assert len(of(recs, "drop")) == 2, err
    # nf_tables is a module: its line comes from the module's own debug .ko
    assert {(d["file"], type(d["line"])) for d in of(recs, "drop")} == {
        ("net/netfilter/nf_tables_core.c", int)}
    assert gdbs_on(lab) == []


def test_relayed_drops_get_file_and_line_from_the_labs_vmlinux(lab: str) -> None:
    """Without --break the guest's tracer streams to the host, which adds file:line
    from the lab's debug vmlinux (checked against the guest's /proc/version)."""
    from kdbg import lab as labmod

    closed = PORT + 44
    traffic = labmod.stream(lab, ["bash", "-c", f"while :; do echo x > "
                                  f"/dev/udp/127.0.0.1/{closed}; sleep 0.5; done"])
    try:
        rc, recs, err = kdbg_json("--lab", lab, "--reason", "NO_SOCKET", "--proto", "udp",
                                  "--dport", str(closed), "--count", "2")
    finally:
        traffic.close()
    assert rc == 0, err
    drops = of(recs, "drop")
    assert len(drops) == 2, err
    for d in drops:
        assert d["symbol"] == "__udp4_lib_rcv" and d["module"] is None
        assert d["file"] == "net/ipv4/udp.c" and isinstance(d["line"], int) and d["line"] > 0


def test_netfilter_drop_breaks_at_nft_do_chain(lab: str) -> None:
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--proto", "udp",
                              "--dport", str(PORT), "--break")
    assert rc == 0, err
    _, hit = netfilter_break(recs, "kfree_skb_reason", PORT, err)  # the 6.1 function
    frames = [f.split("+")[0] for f in hit["kernel_stack"]]
    assert "nf_hook_slow" in frames and "nft_do_chain" in frames
    # gdb has nf_tables' debug file: its own backtrace unwinds through the module, with
    # DWARF lines, into the core netfilter hook
    gdb_frames = [(f["symbol"], f.get("file")) for f in hit["backtrace"]]
    assert ("nft_do_chain", "net/netfilter/nf_tables_core.c") in gdb_frames, gdb_frames
    assert ("nf_hook_slow", "net/netfilter/core.c") in gdb_frames, gdb_frames
    # the hit names the rule that decided, read in the guest by its own kdbg
    rule = hit["cause"]["rule"]
    assert (rule["family"], rule["table"], rule["chain"]) == ("ip", "filter", "INPUT"), rule
    assert rule["text"] == f"udp dport {PORT} counter drop # handle {rule['handle']}", rule
    assert "gdb has the debug files of" in err and "nf_tables" in err
    drops = of(recs, "drop")
    assert drops and all(d["file"] == "net/netfilter/nf_tables_core.c" for d in drops)
    cleanup = of(recs, "cleanup")
    assert cleanup and cleanup[-1]["ok"], cleanup
    assert_target_runs_clean(lab)


def test_a_stop_on_another_ports_drop_is_resumed_and_not_a_hit(lab: str) -> None:
    """The breakpoint is on nft_do_chain's drop call, where a rule for another port
    drops too (ten times as often here): those stops are resumed at once, said, and
    not counted; both hits are the filtered port's."""
    other = PORT + 2
    with udp_drops(lab, other, every=0.1):
        rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--proto",
                                  "udp", "--dport", str(PORT), "--break", "--break-count", "2")
    assert rc == 0, err
    hits = of(recs, "hit")
    assert [h["skb"]["dport"] for h in hits] == [PORT, PORT], err
    assert f"on a packet the filters leave out (dport {other}, not --dport {PORT}): " \
           "resumed, not a hit" in err, err
    assert all(d["dport"] == PORT for d in of(recs, "drop"))
    cleanup = of(recs, "cleanup")
    assert cleanup and cleanup[-1]["ok"], cleanup


def test_location_variant(lab: str) -> None:
    rc, recs, err = kdbg_json("--lab", lab, "--location", "nft_do_chain", "--break")
    assert rc == 0, err
    assert of(recs, "armed")[0]["caller"].startswith("nft_do_chain+0x")
    assert len(of(recs, "hit")) == 1


def test_kgdboe_refuses_the_same_drop(lab: str) -> None:
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--break",
                              "--transport", "kgdboe", "--count", "2")
    assert rc == 3, err
    refused = of(recs, "refused")
    assert refused, err
    assert refused[0]["verdict"] == "refuse" and refused[0]["transport"] == "kgdboe"
    assert refused[0]["rule"] and refused[0]["evidence"]
    assert of(recs, "armed") == [] and of(recs, "hit") == []
    assert_target_runs_clean(lab)


MOD_PORT = PORT + 45  # this test's own traffic: the fixture's flows to PORT
NFT_UNLOAD = ("iptables -F INPUT 2>/dev/null; nft flush ruleset; "
              "for i in 1 2 3 4 5 6 7 8 9 10; do "
              "for m in nft_compat nft_chain_nat nf_tables; do modprobe -r $m 2>/dev/null; done; "
              "grep -q '^nf_tables ' /proc/modules || exit 0; sleep 1; done; exit 1")
NFT_RULE = ("nft add table inet kx && nft add chain inet kx c "
            "'{ type filter hook input priority 0; }' && "
            f"nft add rule inet kx c udp dport {MOD_PORT} drop")


class Lines:
    """A child's output, line by line, with a wait for a line that matches."""

    def __init__(self, stream: Any) -> None:
        import threading

        self.lines: list[str] = []
        self.ended = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def wait(self, pred: Any, timeout: float) -> str:
        import time

        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                left = end - time.monotonic()
                assert left > 0, f"no such line within {timeout} s: {self.lines[-20:]}"
                assert not self.ended, f"the output ended without it: {self.lines[-20:]}"
                self._cond.wait(left)


def records(lines: Lines, kind: str) -> list[dict[str, Any]]:
    return [r for r in (json.loads(s) for s in list(lines.lines) if s.startswith("{"))
            if r["type"] == kind]


def wait_records(lines: Lines, kind: str, n: int, timeout: float,
                 pred: Any = lambda r: True) -> list[dict[str, Any]]:
    """Wait until ``n`` records of ``kind`` (matching ``pred``) are out."""
    lines.wait(lambda _: len([r for r in records(lines, kind) if pred(r)]) >= n, timeout)
    return [r for r in records(lines, kind) if pred(r)]


def test_modules_loaded_and_unloaded_under_a_running_break_watch(lab: str) -> None:
    """watch --break attached while nf_tables is not loaded: the rule added afterwards
    loads it, and every name kdbg prints for its addresses (the drops, the armed record,
    the hit, gdb's backtrace with DWARF lines) is nf_tables'. Then, with the breakpoint
    still armed, the rule goes and nf_tables is unloaded: kdbg says so, deletes the
    breakpoint, and a fresh look names nothing at the old address; the rule comes back,
    nf_tables loads again, and kdbg arms and hits there anew. One datagram at a time,
    so each step is known."""
    from kdbg import lab as labmod
    from kdbg.debugger.attach import from_lab
    from kdbg.symbols.kallsyms import Kallsyms

    def one() -> None:
        labmod.run(lab, ["bash", "-c", f"echo x > /dev/udp/127.0.0.1/{MOD_PORT}"]).check()

    assert labmod.run(lab, ["sh", "-c", NFT_UNLOAD]).status == 0
    proc = subprocess.Popen(
        [*KDBG, "watch", "--json", "--lab", lab, "--reason", "NETFILTER_DROP", "--proto",
         "udp", "--dport", str(MOD_PORT), "--break", "--break-count", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        err.wait(lambda s: "tracer attached" in s, 900)
        assert "nf_tables" not in " ".join(err.lines)  # not loaded at attach
        assert labmod.run(lab, ["sh", "-c", NFT_RULE]).status == 0
        one()  # the first drop arms
        wait_records(out, "armed", 1, 300)
        one()  # the next stops the kernel
        old = int(wait_records(out, "hit", 1, 300)[0]["address"], 16)
        assert labmod.run(lab, ["sh", "-c", NFT_UNLOAD]).status == 0
        wait_records(out, "modules", 1, 120, lambda r: "nf_tables" in r["unloaded"])
        table = Kallsyms.load(from_lab(lab, want_vmlinux=False).kallsyms)  # type: ignore[arg-type]
        assert table.lookup(old).module != "nf_tables"
        assert labmod.run(lab, ["sh", "-c", NFT_RULE]).status == 0
        one()
        wait_records(out, "armed", 2, 300)
        one()
        assert proc.wait(timeout=600) == 0, "\n".join(err.lines[-20:])
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        labmod.run(lab, ["sh", "-c", "nft delete table inet kx 2>/dev/null; iptables -A INPUT "
                                     f"-p udp --dport {PORT} -j DROP"])
    armed, hits, mods = records(out, "armed"), records(out, "hit"), records(out, "modules")
    assert len(armed) == 2 and len(hits) == 2, [s[:80] for s in out.lines]
    assert mods and "nf_tables" in mods[0]["loaded"], mods
    gone = [m for m in mods if "nf_tables" in m["unloaded"]]
    assert gone and gone[0]["removed_breakpoint"]["label"].startswith("nft_do_chain"), mods
    for a, h in zip(armed, hits, strict=True):
        assert a["caller"].startswith("nft_do_chain+0x"), a
        assert h["symbol"] == "nft_do_chain", h
        gdb_frames = [(f["symbol"], f.get("file")) for f in h["backtrace"]]
        assert ("nf_hook_slow", "net/netfilter/core.c") in gdb_frames, gdb_frames
    drops = records(out, "drop")
    assert drops and all(d["symbol"] == "nft_do_chain" and d["module"] == "nf_tables"
                         for d in drops), [d["location"] for d in drops]
    assert records(out, "cleanup")[-1]["ok"]
    assert_target_runs_clean(lab)
