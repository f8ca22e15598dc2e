"""Drops decided by BPF programs: the verdicts that drop, the fexit program's C text,
and the ``prog`` a drop record carries (``kdbg watch --bpf``, docs/bpf.md)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from kdbg.dirs import BPF_DIR
from kdbg.errors import BtfError
from kdbg.symbols.btf import KIND_STRUCT, Btf
from kdbg.trace import filters as flt
from kdbg.trace import offsets
from kdbg.trace.render import render

TEMPLATE = BPF_DIR / "bpf_verdict.bpf.c"
# The fexit function for each kind of traced program.
FUNCS = {"xdp": "kdbg_on_xdp_exit", "tc": "kdbg_on_tc_exit"}
# xdp:xdp_exception's program: the XDP_ABORTED of programs fexit does not trace
EXCEPTION = ("btf:xdp_exception", "kdbg_on_xdp_exception")
# a record's chain field (bpf/bpf_verdict.bpf.c): how the verdict was seen, where it ran
VIA_EXCEPTION = 1  # from xdp:xdp_exception
# how a record is handed over: "0" wakes the reader when it has caught up
SUBMIT_FLAGS = "0"
ATTACH_BITS = {2: "tc/ingress", 4: "tc/egress", 8: "xdp/generic", 16: "xdp/driver"}


def attach_of(kind: str, chain: int) -> str:
    """The record's ``attach``: the hook and, where the kernel told, its side or mode."""
    return next((name for bit, name in ATTACH_BITS.items() if chain & bit), kind)
# The verdicts that drop the packet: enum xdp_action's, and TC_ACT_SHOT (a tc program's
# TC_ACT_STOLEN and TC_ACT_TRAP consume the packet on purpose; not reported).
VERDICTS = {"xdp": {0: "XDP_ABORTED", 1: "XDP_DROP"}, "tc": {2: "TC_ACT_SHOT"}}
FIELDS: dict[str, tuple[str, ...]] = {
    "XDP_DATA": ("xdp_buff.data",),
    "XDP_DATA_END": ("xdp_buff.data_end",),
    "XDP_RXQ": ("xdp_buff.rxq",),
    "RXQ_DEV": ("xdp_rxq_info.dev",),
    "SKB_DATA": ("sk_buff.data",),
    "SKB_DATA_LEN": ("sk_buff.data_len",),
    "PROG_BPF_FUNC": ("bpf_prog.bpf_func",),
    **{k: offsets.FIELDS[k] for k in ("SKB_LEN", "SKB_DEV", "DEV_IFINDEX", "DEV_NAME",
                                      "DEV_NET", "NET_INUM")},
}


@dataclass(frozen=True)
class VerdictLine:
    """A source line of the program that returns the verdict."""

    file: str
    line: int
    text: str
    address: int | None = None  # where the line's code starts in the JITed image

    def to_json(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"file": self.file, "line": self.line, "text": self.text}
        if self.address is not None:
            rec["address"] = f"0x{self.address:x}"
        return rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> VerdictLine:
        addr = rec.get("address")
        return cls(rec["file"], rec["line"], rec["text"], int(addr, 16) if addr else None)


@dataclass(frozen=True)
class BpfProg:
    """The program that dropped a packet, as a drop record names it. ``lines``: the
    lines that return this verdict as a constant (one: exact; several: the candidates,
    fexit cannot tell which ran; none: the program has no line info or computes its
    verdict)."""

    id: int
    name: str
    tag: str
    kind: str  # "xdp" or "tc"
    attach: str  # where it runs, on the record's interface: "xdp", or "tc" (ingress or egress)
    lines: tuple[VerdictLine, ...] = ()
    line_info: bool = False  # the program was loaded with BTF line info
    jited: tuple[tuple[int, int], ...] = ()  # its JITed functions: (address, length)
    via: str = "fexit"  # or "xdp:xdp_exception": a program fexit could not trace
    # each source line's JITed start (address, file, line): gdb's line table at a stop
    jited_lines: tuple[tuple[int, str, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tag": self.tag, "type": self.kind,
                "attach": self.attach, "line_info": self.line_info,
                "verdict_lines": [ln.to_json() for ln in self.lines],
                "jited": [{"address": f"0x{a:x}", "size": n} for a, n in self.jited],
                "via": self.via,
                "jited_lines": [[f"0x{a:x}", f, n] for a, f, n in self.jited_lines]}

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> BpfProg:
        return cls(rec["id"], rec["name"], rec["tag"], rec["type"], rec["attach"],
                   tuple(VerdictLine.from_json(ln) for ln in rec.get("verdict_lines", ())),
                   bool(rec.get("line_info")),
                   tuple((int(f["address"], 16), int(f["size"])) for f in rec.get("jited", ())),
                   rec.get("via", "fexit"),
                   tuple((int(a, 16), str(f), int(n)) for a, f, n in rec.get("jited_lines", ())))

    @property
    def ksym(self) -> str:
        """The name the kernel gives its JITed code in kallsyms."""
        return f"bpf_prog_{self.tag}_{self.name}"

    def break_site(self) -> tuple[int, str] | None:
        """Where ``--break`` stops for this verdict, and what is there: the JITed start
        of the one line that returns it; the program's JITed entry when there are
        several candidate lines (fexit cannot tell which returned) or none; None when
        the record has no JITed addresses."""
        first = self.lines[0].address if len(self.lines) == 1 else None
        if first:
            ln = self.lines[0]
            return first, f"{ln.file}:{ln.line} {ln.text}"
        if not self.jited or not self.jited[0][0]:
            return None
        if len(self.lines) > 1:
            why = f"{len(self.lines)} candidate verdict lines: fexit cannot tell which returned"
        else:
            why = "its verdict line has no JITed address" if self.lines else "no verdict line"
        return self.jited[0][0], f"the program's entry ({why})"


def _wanted(verdicts: dict[int, str]) -> str:
    return " || ".join(f"v == {v}" for v in verdicts) or "0"


def build(fields: dict[str, int], spec: flt.FilterSpec, ringbuf_pages: int = 64,
          stats: bool = False, more_entries: int = 4096) -> str:
    """C text of the fexit programs, every placeholder filled; with ``stats`` they count
    matching verdicts per (program, verdict) instead of sending each; without, what the
    full ring has no room for is counted per key in tables of ``more_entries``."""
    return render(TEMPLATE.read_text(), {
        **fields, "XDP_WANTED": _wanted(VERDICTS["xdp"]), "TC_WANTED": _wanted(VERDICTS["tc"]),
        "RINGBUF_PAGES": ringbuf_pages, "STATS": int(stats), "MORE_ENTRIES": more_entries,
        "SUBMIT_FLAGS": SUBMIT_FLAGS,
        "DEV_FILTER": flt.c_dev(spec), "PACKET_FILTER": flt.c_packet(spec),
    })


def kernel_fields() -> dict[str, int]:
    """:data:`FIELDS` in the running kernel's BTF, and where an XDP program's mode and a
    tc program's side are read (-1 where the kernel has no such member)."""
    return {**offsets.fields_of(FIELDS, "bpfverdict"),
            **offsets.cached("bpfattach", ATTACH_FIELDS, _attach_fields)}


ATTACH_FIELDS = ("net_device.xdp_state", "bpf_xdp_entity", "sk_buff.tc_at_ingress")


def _attach_fields(btf: Btf) -> dict[str, int]:
    out = {"DEV_XDP_STATE": -1, "XDP_ENTITY_SIZE": 0, "SKB_INGRESS_BIT": -1}
    with contextlib.suppress(BtfError):
        state = btf.field("net_device.xdp_state").offset
        out["XDP_ENTITY_SIZE"] = btf.size_of(btf.find(KIND_STRUCT, "bpf_xdp_entity"))
        out["DEV_XDP_STATE"] = state
    with contextlib.suppress(BtfError):
        out["SKB_INGRESS_BIT"] = btf.flag_bit("sk_buff.tc_at_ingress")
    return out
