"""The journey's part of the drop program (``bpf/journey.bpf.c``): its C text for one
kernel and one set of filters, the drop's hand-over that carries the journey, and the
tracepoints its programs attach to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdbg.dirs import BPF_DIR
from kdbg.trace import filters as flt
from kdbg.trace import hops as hoppoints
from kdbg.trace import offsets as offs
from kdbg.trace.render import render

TEMPLATE = BPF_DIR / "journey.bpf.c"
# What the fragment reads besides the drop program's offsets: L3 at skb->data on
# receive, the ethertype, and a device's kind (rtnl_link_ops->kind: "veth", "bridge").
FIELDS: dict[str, tuple[str, ...]] = {
    "SKB_DATA": ("sk_buff.data",),
    "SKB_PROTOCOL": ("sk_buff.protocol",),
    "DEV_LINK_OPS": ("net_device.rtnl_link_ops",),
    "LINK_OPS_KIND": ("rtnl_link_ops.kind",),
}
# The drop's hand-over with the journey (the drop program's OUTPUT).
OUTPUT = "journey_output(ctx, &e, journey_skb, journey_mine);"
CONSUME = ("btf:consume_skb", "kdbg_journey_consume_skb")

Hop = tuple[str, str, int, bool]


@dataclass(frozen=True)
class JourneyOptions:
    """Knobs that change the generated text."""

    slot_bits: int = 10  # a table of 2**slot_bits slots
    idle_ns: int = 1_000_000_000

    @property
    def slots(self) -> int:
        return 1 << self.slot_bits


def kernel_offsets(btf_path: str | Path = "/sys/kernel/btf/vmlinux") -> dict[str, int]:
    """The offsets of :data:`FIELDS` in the running kernel (cached by BTF hash)."""
    return offs.fields_of(FIELDS, "offsets-journey", btf_path)


def func_name(name: str) -> str:
    """The C function attached to hop tracepoint ``name`` (without its system)."""
    return f"kdbg_journey_{name}"


def hop_hooks(hops: tuple[Hop, ...]) -> str:
    """One ``KDBG_JOURNEY_HOP(name, id, rx)`` line per hop tracepoint."""
    return "\n".join(f"KDBG_JOURNEY_HOP({name}, {tp_id}, {int(rx)})"
                     for _system, name, tp_id, rx in hops)


def attachments(hops: tuple[Hop, ...]) -> list[tuple[str, str]]:
    """``(btf:NAME, function)`` for consume_skb, then the hop tracepoints, all BTF-typed
    raw tracepoints (tp_btf) as the drop program is. A packet's slot is followed only
    once its end (freed, consumed) can be seen, so no packet that crossed a hop while
    the programs were being attached leaves its slot open for the next packet at the
    same address to continue."""
    return [CONSUME] + [(f"btf:{name}", func_name(name)) for _s, name, _i, _rx in hops]


def build(spec: flt.FilterSpec, offsets: dict[str, int], hops: tuple[Hop, ...],
          opts: JourneyOptions = JourneyOptions()) -> str:
    """The fragment's C text, every placeholder filled. Only the packet filters decide
    which packets are followed: the device and namespace filters say where a drop is,
    and a packet dropped there came from elsewhere."""
    if not 1 <= opts.slot_bits <= 20:
        raise ValueError("slot_bits must be 1 to 20")
    values: dict[str, object] = {
        **{k: offsets[k] for k in FIELDS},
        "SLOT_BITS": opts.slot_bits,
        "IDLE_NS": opts.idle_ns,
        "FILTER_PKT": flt.c_packet(spec),
        "HOP_HOOKS": hop_hooks(hops),
    }
    return render(TEMPLATE.read_text(), values)


def for_running_kernel(spec: flt.FilterSpec, opts: JourneyOptions = JourneyOptions()
                       ) -> tuple[str, list[tuple[str, str]]]:
    """The fragment and its attachments for the running kernel's hop tracepoints."""
    hops = hoppoints.available()
    return build(spec, kernel_offsets(), hops, opts), attachments(hops)
