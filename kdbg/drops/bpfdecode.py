"""A BPF verdict program's output, decoded: each record as a drop event naming the
program (:func:`decode`), and each count the kernel kept instead of sending, while the
ring buffer was full, as a "more" count naming it too (:class:`Verdicts`)."""

from __future__ import annotations

from collections.abc import Callable

from kdbg.symbols.kallsyms import Location
from kdbg.trace import bpfverdict, more
from kdbg.trace.bpfprogs import ProgFacts
from kdbg.trace.bpfverdict import BpfProg, VerdictLine
from kdbg.trace.event import DropEvent
from kdbg.trace.filters import PROTO_NAMES
from kdbg.trace.headers import addresses
from kdbg.trace.layout import RawDropEvent, RawMoreKey

# every dropping verdict by its code: XDP's and tc's codes differ (0, 1; 2)
VERDICT_NAMES = {code: name for names in bpfverdict.VERDICTS.values()
                 for code, name in names.items()}


def verdict_name(code: int) -> str:
    return VERDICT_NAMES.get(code, f"VERDICT_{code}")


def verdict_lines(prog: ProgFacts, verdict: int) -> tuple[VerdictLine, ...]:
    table = prog.lines
    if table is None:
        return ()
    return tuple(VerdictLine(s.file, s.line, s.text, prog.jited_at_insn(s.insn))
                 for s in table.returning(verdict))


def bpf_prog(prog: ProgFacts, verdict: int, chain: int) -> BpfProg:
    """The ``prog`` of a record of ``verdict`` with record field ``chain``."""
    via = "xdp:xdp_exception" if chain & bpfverdict.VIA_EXCEPTION else "fexit"
    # a program xdp:xdp_exception reports was not traced: no line is claimed
    lines = verdict_lines(prog, verdict) if via == "fexit" else ()
    return BpfProg(prog.id, prog.name, prog.tag, prog.kind, bpfverdict.attach_of(prog.kind, chain),
                   lines, prog.lines is not None, prog.jited_funcs, via,
                   prog.jited_line_table())


def decode(raw: RawDropEvent, prog: ProgFacts | None, wall_offset_ns: int,
           bprog: BpfProg | None = None) -> DropEvent:
    """A drop record from the fexit program's event and the program it names (``bprog``:
    its ``prog``, when already worked out)."""
    family = {4: "ipv4", 6: "ipv6"}.get(raw.family)
    saddr, daddr = addresses(raw.family, raw.saddr, raw.daddr)
    if prog is not None and bprog is None:
        bprog = bpf_prog(prog, raw.reason, raw.chain)
    lines = bprog.lines if bprog is not None else ()
    names = bpfverdict.VERDICTS.get(prog.kind, {}) if prog is not None else {}
    first = lines[0] if len(lines) == 1 else None
    proto = PROTO_NAMES.get(raw.l4proto, str(raw.l4proto)) if raw.family else None
    return DropEvent(
        time_ns=raw.time_ns + wall_offset_ns, cpu=raw.cpu, pid=raw.tgid, tid=raw.tid,
        comm=raw.comm.decode(errors="replace"),
        reason=names.get(raw.reason, f"VERDICT_{raw.reason}"),
        reason_code=raw.reason, address=raw.location,
        symbol=prog.ksym if prog is not None else None, offset=0, module=None,
        skb=raw.skbaddr, proto=proto, family=family, saddr=saddr, daddr=daddr,
        sport=raw.sport if raw.l4_valid else None, dport=raw.dport if raw.l4_valid else None,
        icmp_type=None, icmp_code=None, netns=raw.netns or None,
        ifname=raw.ifname.decode(errors="replace") or None, ifindex=raw.ifindex or None,
        len=raw.len, file=first.file if first else None, line=first.line if first else None,
        prog=bprog)


class Verdicts:
    """Decodes records and "more" counts of the programs ``program_at(entry)`` finds,
    working each program's ``prog`` out once per (program, verdict, chain): its line
    table and verdict lines are the same in every record."""

    def __init__(self, program_at: Callable[[int], ProgFacts | None],
                 wall_offset_ns: int) -> None:
        self.program_at = program_at
        self.wall = wall_offset_ns
        self._progs: dict[tuple[int, int, int], BpfProg] = {}

    def prog(self, prog: ProgFacts, verdict: int, chain: int) -> BpfProg:
        key = (prog.id, verdict, chain)
        found = self._progs.get(key)
        if found is None:
            found = self._progs[key] = bpf_prog(prog, verdict, chain)
        return found

    def event(self, raw: RawDropEvent, prog: ProgFacts | None) -> DropEvent:
        bprog = self.prog(prog, raw.reason, raw.chain) if prog is not None else None
        return decode(raw, prog, self.wall, bprog)

    def locate(self, entry: int) -> Location:
        prog = self.program_at(entry)
        return Location(entry, prog.ksym if prog is not None else None, 0, None)

    def _prog_of(self, key: RawMoreKey) -> BpfProg | None:
        prog = self.program_at(key.location)
        return self.prog(prog, key.reason, key.chain) if prog is not None else None

    def more(self, raw: bytes, count: int) -> more.Summarized:
        """One count of the kernel's ``more`` tables, naming the program."""
        return more.decode(raw, count, verdict_name, self.locate, self._prog_of)
