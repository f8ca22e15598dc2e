"""Build the drop program's C text for one kernel and one set of filters."""

from __future__ import annotations

from dataclasses import dataclass

from kdbg.dirs import BPF_DIR
from kdbg.symbols.tpformat import TpFormat
from kdbg.trace import filters as flt
from kdbg.trace.render import render

TEMPLATE = BPF_DIR / "kfree_skb.bpf.c"
FUNC_NAME = "kdbg_on_kfree_skb"


@dataclass(frozen=True)
class ProgramOptions:
    """Knobs that change the generated text."""

    stack: bool = False
    stack_reasons: tuple[int, ...] = ()  # with ``stack``: only these reasons' stacks; (): all
    stats_only: bool = False
    stats_by_dev: bool = False  # the stats key carries netns and ifname (kdbg exporter)
    ringbuf_pages: int = 256
    stats_entries: int = 16384
    stack_entries: int = 4096
    # C that hands the filled event ``e`` over; None: one ring-buffer record each.
    # kdbg.record.recorder passes the rendered bpf/drop_record.bpf.c.
    output: str | None = None
    # C at file scope before the drop function: the journey's maps and hop programs
    # (kdbg.trace.journeyprog, which also gives the output), or nothing.
    journey: str = ""


# The default hand-over: copy the event into the ring buffer, counting a full ring.
OUTPUT = "if (events.ringbuf_output(&e, sizeof(e), 0) != 0)\n\t\tcount(KDBG_CTR_LOST);"


def stack_wanted(reasons: tuple[int, ...]) -> str:
    """The C test of a drop's reason code whose stack the program takes: ``1`` for every
    drop, else one comparison per code in ``reasons``."""
    if not reasons:
        return "1"
    return " || ".join(f"(reason) == {code}" for code in sorted(set(reasons)))


def build(
    tp: TpFormat, offsets: dict[str, int], spec: flt.FilterSpec, opts: ProgramOptions
) -> str:
    """C text of the drop program, every placeholder filled."""
    pages = opts.ringbuf_pages
    if pages <= 0 or pages & (pages - 1):
        raise ValueError("ringbuf_pages must be a power of two")
    rx_sk = tp.fields.get("rx_sk")
    values: dict[str, object] = {
        "TP_OFF_SKBADDR": tp.field("skbaddr").offset,
        "TP_OFF_LOCATION": tp.field("location").offset,
        "TP_OFF_PROTOCOL": tp.field("protocol").offset,
        "TP_OFF_REASON": tp.field("reason").offset,
        "TP_OFF_RX_SK": rx_sk.offset if rx_sk else -1,
        **offsets,
        "WANT_STACK": int(opts.stack),
        "STACK_WANTED": stack_wanted(opts.stack_reasons),
        "STATS_ONLY": int(opts.stats_only),
        "COUNT_EARLY": int(flt.c_dev(spec) == flt.c_packet(spec) == flt.NO_FILTER),
        "DEV_FILTER": int(flt.c_dev(spec) != flt.NO_FILTER),
        "STATS_BY_DEV": int(opts.stats_by_dev),
        "RINGBUF_PAGES": pages,
        "STATS_ENTRIES": opts.stats_entries,
        "STACK_ENTRIES": opts.stack_entries,
        "FILTER_EARLY": flt.c_early(spec),
        "FILTER_DEV": flt.c_dev(spec),
        "FILTER_PKT": flt.c_packet(spec),
        "OUTPUT": OUTPUT if opts.output is None else opts.output,
        "JOURNEY": opts.journey,
    }
    return render(TEMPLATE.read_text(), values)
