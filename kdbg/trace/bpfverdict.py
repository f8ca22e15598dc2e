"""Drops decided by BPF programs: the verdicts that drop, the fexit program's C text,
and the ``prog`` a drop record carries (``kdbg watch --bpf``, docs/bpf.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdbg.dirs import BPF_DIR
from kdbg.trace import filters as flt
from kdbg.trace import offsets
from kdbg.trace.render import render

TEMPLATE = BPF_DIR / "bpf_verdict.bpf.c"
FUNC_NAME = "kdbg_on_bpf_exit"
# enum xdp_action: the verdicts of an XDP program that drop the packet.
XDP_VERDICTS = {0: "XDP_ABORTED", 1: "XDP_DROP"}
FIELDS: dict[str, tuple[str, ...]] = {
    "XDP_DATA": ("xdp_buff.data",),
    "XDP_DATA_END": ("xdp_buff.data_end",),
    "XDP_RXQ": ("xdp_buff.rxq",),
    "RXQ_DEV": ("xdp_rxq_info.dev",),
    **{k: offsets.FIELDS[k] for k in ("DEV_IFINDEX", "DEV_NAME", "DEV_NET", "NET_INUM")},
}


@dataclass(frozen=True)
class VerdictLine:
    """A source line of the program that returns the verdict."""

    file: str
    line: int
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "text": self.text}


@dataclass(frozen=True)
class BpfProg:
    """The program that dropped a packet, as a drop record names it. ``lines``: the
    lines that return this verdict as a constant (one: exact; several: the candidates,
    fexit cannot tell which ran; none: the program has no line info or computes its
    verdict)."""

    id: int
    name: str
    tag: str
    kind: str  # "xdp"
    attach: str  # where it runs: "xdp" on the packet's interface (the record's ifname)
    lines: tuple[VerdictLine, ...] = ()
    line_info: bool = False  # the program was loaded with BTF line info

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tag": self.tag, "type": self.kind,
                "attach": self.attach, "line_info": self.line_info,
                "verdict_lines": [ln.to_json() for ln in self.lines]}

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> BpfProg:
        return cls(rec["id"], rec["name"], rec["tag"], rec["type"], rec["attach"],
                   tuple(VerdictLine(ln["file"], ln["line"], ln["text"])
                         for ln in rec.get("verdict_lines", ())),
                   bool(rec.get("line_info")))


def build(fields: dict[str, int], spec: flt.FilterSpec, verdicts: tuple[int, ...],
          ringbuf_pages: int = 64) -> str:
    """C text of the fexit program, every placeholder filled."""
    wanted = " || ".join(f"v == {v}" for v in verdicts) or "0"
    return render(TEMPLATE.read_text(), {
        **fields, "VERDICT_WANTED": wanted, "RINGBUF_PAGES": ringbuf_pages,
        "DEV_FILTER": flt.c_dev(spec), "PACKET_FILTER": flt.c_packet(spec),
    })


def kernel_fields() -> dict[str, int]:
    """:data:`FIELDS` in the running kernel's BTF."""
    return offsets.fields_of(FIELDS, "bpfverdict")
