"""Build the drop program's C text for one kernel and one set of filters."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kdbg.dirs import BPF_DIR
from kdbg.trace import filters as flt
from kdbg.trace import offsets
from kdbg.trace.render import render

TEMPLATE = BPF_DIR / "kfree_skb.bpf.c"
# Set to 1, the drop program reads neither the mark nor the conntrack state: only
# bench/drop_storm.py sets it, to measure what they cost.
NO_CT_READS_ENV = "KDBG_BENCH_NO_CT_READS"
FUNC_NAME = "kdbg_on_kfree_skb"
TRACEPOINT_NAME = "kfree_skb"
# The tracepoint's arguments the program reads, each known by its C type in the kernel's
# prototype (6.11 added rx_sk).
ARG_ROLES = {"ARG_SKB": "struct sk_buff *", "ARG_LOCATION": "void *",
             "ARG_REASON": "enum skb_drop_reason", "ARG_RX_SK": "struct sock *"}


@dataclass(frozen=True)
class ProgramOptions:
    """Knobs that change the generated text."""

    stack: bool = False
    stack_reasons: tuple[int, ...] = ()  # with ``stack``: only these reasons' stacks; (): all
    chains: bool = False  # with ``stack``: learned call chains first (kdbg.trace.chains)
    chain_check: bool = False  # with ``chains``: the stack too, for every drop (tests)
    stats_only: bool = False
    count_stats: bool = True  # the per-(reason, location) table; False: only the number
    stats_by_dev: bool = False  # the stats key carries netns and ifname (kdbg exporter)
    summarize: bool = False  # a full ring's drops counted per key (kdbg watch streaming)
    ringbuf_pages: int = 256
    stats_entries: int = 16384
    stack_entries: int = 4096
    more_entries: int = 16384
    chain_entries: int = 1024
    # C that hands the filled event ``e`` over; None: one ring-buffer record each.
    # kdbg.record.recorder passes the rendered bpf/drop_record.bpf.c.
    output: str | None = None
    # C at file scope before the drop function: the journey's maps and hop programs
    # (kdbg.trace.journeyprog, which also gives the output), or nothing.
    journey: str = ""


# The default hand-over: the event into the ring buffer while it has room; when it has
# none, counted per key (or lost) by ring_full() before anything else is read.
OUTPUT = """{
		struct kdbg_drop_event *r = events.ringbuf_reserve(sizeof(e));

		if (!r) {
			ring_full(&e);
			return 0;
		}
		fill_sent(ctx, &e);
		__builtin_memcpy(r, &e, sizeof(e));
		events.ringbuf_submit(r, 0);
	}"""


# The longest span of struct nf_conn the program reads at once for a packet's conntrack
# entry (6.1, 6.12 and 6.18 on x86-64: 160 bytes, from zone.id at 12 to mark at 168);
# a kernel whose fields lie further apart has them read one by one.
CT_SPAN_MAX = 256


def ct_span(offs: dict[str, int]) -> tuple[int, int]:
    """(first byte, length) of the 8-byte-aligned span of struct nf_conn that holds
    zone.id, mark, the low 32 bits of status and both directions' tuples, read with one
    bpf_probe_read_kernel; (0, 0) when one of them is missing, the tuple is not laid out
    as drop_event.h copies it, or the span is longer than :data:`CT_SPAN_MAX`."""
    keys = ("CT_ZONE_ID", "CT_MARK", "CT_STATUS", "CT_TUPLEHASH", "CT_HASH_TUPLE")
    if (any(offs.get(k, -1) < 0 for k in keys) or offs.get("CT_HASH_SIZE", -1) <= 0
            or (offs.get("CT_TUPLE_DST"), offs.get("CT_TUPLE_PROTONUM"),
                offs.get("CT_TUPLE_DIR")) != (20, 38, 39)):
        return 0, 0
    orig = offs["CT_TUPLEHASH"] + offs["CT_HASH_TUPLE"]
    fields = [(offs["CT_ZONE_ID"], 2), (offs["CT_MARK"], 4), (offs["CT_STATUS"], 4),
              (orig, 40), (orig + offs["CT_HASH_SIZE"], 40)]
    first = min(off for off, _ in fields) & ~7
    end = -(-max(off + size for off, size in fields) // 8) * 8
    return (first, end - first) if end - first <= CT_SPAN_MAX else (0, 0)


def stack_wanted(reasons: tuple[int, ...]) -> str:
    """The C test of a drop's reason code whose stack the program takes: ``1`` for every
    drop, else one comparison per code in ``reasons``."""
    if not reasons:
        return "1"
    return " || ".join(f"(reason) == {code}" for code in sorted(set(reasons)))


def kernel_args() -> dict[str, int]:
    """Where the running kernel passes each of :data:`ARG_ROLES` (``BTF_ID``: the
    tracepoint's BTF id, which the loader needs)."""
    return offsets.tracepoint_args(TRACEPOINT_NAME, ARG_ROLES)


def build(args: dict[str, int], offs: dict[str, int], spec: flt.FilterSpec,
          opts: ProgramOptions) -> str:
    """C text of the drop program, every placeholder filled (``args`` from
    :func:`kernel_args`, ``offs`` from :func:`kdbg.trace.offsets.for_running_kernel`)."""
    pages = opts.ringbuf_pages
    if pages <= 0 or pages & (pages - 1):
        raise ValueError("ringbuf_pages must be a power of two")
    span_start, span_len = ct_span(offs)
    values: dict[str, object] = {
        **{k: args[k] for k in ARG_ROLES},
        **offs,
        "CT_SPAN_START": span_start,
        "CT_SPAN_LEN": span_len,
        "WANT_STACK": int(opts.stack),
        "STACK_WANTED": stack_wanted(opts.stack_reasons),
        "CHAINS": int(opts.stack and opts.chains),
        "CHAIN_CHECK": int(opts.chain_check),
        "STATS_ONLY": int(opts.stats_only),
        "COUNT_EARLY": int(flt.c_dev(spec) == flt.c_packet(spec) == flt.NO_FILTER),
        "DEV_FILTER": int(flt.c_dev(spec) != flt.NO_FILTER),
        "COUNT_STATS": int(opts.count_stats or opts.stats_only),
        "STATS_BY_DEV": int(opts.stats_by_dev),
        "SUMMARIZE": int(opts.summarize),
        "RINGBUF_PAGES": pages,
        "STATS_ENTRIES": opts.stats_entries,
        "STACK_ENTRIES": opts.stack_entries,
        "MORE_ENTRIES": opts.more_entries,
        "CHAIN_ENTRIES": opts.chain_entries,
        "FILTER_EARLY": flt.c_early(spec),
        "FILTER_DEV": flt.c_dev(spec),
        "FILTER_PKT": flt.c_packet(spec),
        "OUTPUT": OUTPUT if opts.output is None else opts.output,
        "JOURNEY": opts.journey,
        # bench/drop_storm.py's switch: the program without the mark and conntrack reads
        "CT_READS": int(os.environ.get(NO_CT_READS_ENV, "") != "1"),
    }
    return render(TEMPLATE.read_text(), values)
