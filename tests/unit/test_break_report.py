"""A hit is reported twice: at the stop from what gdb read (skb, reason, backtrace),
then with the tracer's record of that skb (agreeing or not, its kernel stack), in text
and in JSON (``hit``, then ``hit_record``)."""

from __future__ import annotations

import io
import json

from kdbg.breakwatch import Hit
from kdbg.breakwatch.report import BreakJsonSink, BreakTextSink
from kdbg.debugger.model import Stop
from kdbg.debugger.skb import SkbInfo

SKB = 0xFF1100000621E700
GDB = SkbInfo(SKB, len=34, ifname="lo", family="ipv4", proto="udp", saddr="127.0.0.1",
              daddr="127.0.0.1", sport=48466, dport=5555, netns=4026531840)


def hit() -> Hit:
    stop = Stop("breakpoint-hit", 0xFFFFFFFFC037154A, "nft_do_chain", 0x47A, breakpoint=1)
    return Hit(1, stop, GDB, reason="NETFILTER_DROP")


def test_text_at_the_stop_then_the_tracers_record() -> None:
    h, out = hit(), io.StringIO()
    sink = BreakTextSink(out, io.StringIO())
    sink.hit(h)
    h.record_skb = GDB
    h.kernel_stack = ("kfree_skb_reason+0x7b", "nft_do_chain+0x47f [nf_tables]")
    sink.confirmed(h)
    assert out.getvalue().splitlines() == [
        "[1] hit: breakpoint 1 at nft_do_chain+0x47a (0xffffffffc037154a)",
        "    skb 0xff1100000621e700, len 34, dev lo, netns 4026531840, "
        "udp 127.0.0.1:48466 -> 127.0.0.1:5555",
        "    reason: NETFILTER_DROP",
        "    backtrace (gdb, trusted frames only):",
        "[1] the tracer's record of this skb: agrees with gdb's read",
        "    kernel stack (the stopped skb's stack, captured in the kernel (ORC)):",
        "      #0  kfree_skb_reason+0x7b",
        "      #1  nft_do_chain+0x47f [nf_tables]",
    ]


def test_json_hit_then_hit_record() -> None:
    h, out = hit(), io.StringIO()
    sink = BreakJsonSink(out, io.StringIO())
    sink.hit(h)
    h.record_skb = SkbInfo(SKB, len=35, ifname="lo", dport=5555)
    h.kernel_stack = ("kfree_skb_reason+0x7b",)
    sink.confirmed(h)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["type"] == "hit" and first["drop_reason"] == "NETFILTER_DROP"
    assert first["reason"] == "breakpoint-hit"  # the stop's own
    assert first["skb"]["netns"] == 4026531840 and "kernel_stack" not in first
    assert second == {"type": "hit_record", "number": 1, "found": True,
                      "skb": {"address": f"0x{SKB:x}", "len": 35, "ifname": "lo",
                              "dport": 5555},
                      "differences": ["len 34 != 35"],
                      "kernel_stack": ["kfree_skb_reason+0x7b"]}


def test_a_record_that_never_came() -> None:
    h, out = hit(), io.StringIO()
    h.stack_note = "the tracer reported no drop of skb 0xff1100000621e700 within 30 s"
    BreakJsonSink(out, io.StringIO()).confirmed(h)
    assert json.loads(out.getvalue()) == {
        "type": "hit_record", "number": 1, "found": False,
        "kernel_stack_note": "the tracer reported no drop of skb 0xff1100000621e700 "
                             "within 30 s"}
    out = io.StringIO()
    BreakTextSink(out, io.StringIO()).confirmed(h)
    assert out.getvalue().splitlines() == [
        "[1] the tracer's record of this skb: none",
        "    kernel stack: none (the tracer reported no drop of skb 0xff1100000621e700 "
        "within 30 s)"]
