"""Build the path program's C text for one kernel and one set of filters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdbg.dirs import BPF_DIR
from kdbg.errors import BtfError, ProbeUnavailable
from kdbg.symbols import tpformat
from kdbg.symbols.tpformat import TpFormat
from kdbg.trace import filters as flt
from kdbg.trace import offsets as offs
from kdbg.trace.hops import HOP_TRACEPOINTS
from kdbg.trace.render import render

TEMPLATE = BPF_DIR / "path.bpf.c"

END_FUNCS = {"skb:kfree_skb": "kdbg_path_kfree_skb", "skb:consume_skb": "kdbg_path_consume_skb"}

# Struct offsets the template reads (a subset of the drop tracer's, plus its extras).
OFFSET_KEYS = ("SKB_DEV", "SKB_SK", "SKB_HEAD", "SKB_DATA", "SKB_PROTOCOL", "SKB_NETWORK_HDR",
               "SKB_TRANSPORT_HDR", "SKB_LEN", "DEV_IFINDEX", "DEV_NAME", "DEV_NET", "SK_NET",
               "NET_INUM")


def func_name(name: str) -> str:
    """The C function attached to tracepoint ``name`` (without its system)."""
    return f"kdbg_path_{name}"


@dataclass(frozen=True)
class PathFormats:
    """The running kernel's tracepoint records the program reads."""

    hops: tuple[TpFormat, ...]
    kfree_skb: TpFormat
    consume_skb: TpFormat

    def attachments(self) -> list[tuple[str, str]]:
        """``(system:name, function)`` for every tracepoint the program attaches to."""
        out = [(f"{tp.system}:{tp.name}", func_name(tp.name)) for tp in self.hops]
        return out + list(END_FUNCS.items())


def load_formats() -> PathFormats:
    """Formats of the hop tracepoints this kernel has, and of the two that end a path."""
    hops = []
    for system, name, _id, _rx in HOP_TRACEPOINTS:
        try:
            hops.append(tpformat.load(system, name))
        except ProbeUnavailable:
            continue
    if not hops:
        raise ProbeUnavailable("this kernel has none of the net: hop tracepoints")
    return PathFormats(tuple(hops), tpformat.load("skb", "kfree_skb"),
                       tpformat.load("skb", "consume_skb"))


def kernel_offsets(btf_path: str | Path = "/sys/kernel/btf/vmlinux") -> dict[str, int]:
    """The offsets in :data:`OFFSET_KEYS` for the running kernel (cached by BTF hash)."""
    merged = {**offs.for_running_kernel(btf_path),
              **offs.fields_of(offs.EXTRA_FIELDS, "offsets-extra", btf_path)}
    missing = [k for k in OFFSET_KEYS if k not in merged]
    if missing:
        raise BtfError(f"no offsets for {', '.join(missing)}")
    return {k: merged[k] for k in OFFSET_KEYS}


@dataclass(frozen=True)
class PathOptions:
    """Knobs that change the generated text."""

    ringbuf_pages: int = 256
    track_entries: int = 65536
    idle_ns: int = 1_000_000_000


def c_icmp_ids(ids: tuple[int, ...]) -> str:
    """Statement keeping ICMP and ICMPv6 echo packets whose identifier is in ``ids``."""
    if not ids:
        return flt.NO_FILTER
    terms = " || ".join(f"sport == {i}" for i in ids)
    return f"if (!(l4_valid && (l4proto == 1 || l4proto == 58) && ({terms}))) return 0;"


def _join(*stmts: str) -> str:
    real = [s for s in stmts if s != flt.NO_FILTER]
    return "\n\t\t".join(real) or flt.NO_FILTER


def hop_hooks(hops: tuple[TpFormat, ...]) -> str:
    """One ``KDBG_HOP(...)`` line per hop tracepoint, with its skbaddr offset."""
    ids = {(s, n): (i, rx) for s, n, i, rx in HOP_TRACEPOINTS}
    lines = []
    for tp in hops:
        tp_id, rx = ids[(tp.system, tp.name)]
        lines.append(f"KDBG_HOP({tp.name}, {tp.field('skbaddr').offset}, {tp_id}, {int(rx)})")
    return "\n".join(lines)


def build(formats: PathFormats, offsets: dict[str, int], spec: flt.FilterSpec,
          icmp_ids: tuple[int, ...] = (), opts: PathOptions = PathOptions()) -> str:
    """C text of the path program, every placeholder filled."""
    pages = opts.ringbuf_pages
    if pages <= 0 or pages & (pages - 1):
        raise ValueError("ringbuf_pages must be a power of two")
    kfree, consume = formats.kfree_skb, formats.consume_skb
    reason = kfree.fields.get("reason")
    location = consume.fields.get("location")
    values: dict[str, object] = {
        "TP_KFREE_SKBADDR": kfree.field("skbaddr").offset,
        "TP_KFREE_LOCATION": kfree.field("location").offset,
        "TP_KFREE_REASON": reason.offset if reason else -1,
        "TP_CONSUME_SKBADDR": consume.field("skbaddr").offset,
        "TP_CONSUME_LOCATION": location.offset if location else -1,
        **{k: offsets[k] for k in OFFSET_KEYS},
        "IDLE_NS": opts.idle_ns,
        "RINGBUF_PAGES": pages,
        "TRACK_ENTRIES": opts.track_entries,
        "FILTER_DEV": flt.c_dev(spec),
        "FILTER_PKT": _join(flt.c_packet(spec), c_icmp_ids(icmp_ids)),
        "HOP_HOOKS": hop_hooks(formats.hops),
    }
    return render(TEMPLATE.read_text(), values)
