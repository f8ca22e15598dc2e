"""``kdbg watch`` run elsewhere: the options that carry a watch's filters to a tracer on
another kernel, and the command line of the one run in a lab guest, written once (the
break-watch's event source and the lab recorder both run it).
"""

from __future__ import annotations

from kdbg.drops.bpfwatch import BpfWatchConfig
from kdbg.drops.watch import WatchConfig


def remote_options(cfg: WatchConfig) -> list[str]:
    """``kdbg watch`` options that make a remote tracer apply ``cfg``'s filters.

    Names (reasons, symbols, namespaces) are resolved by the remote kdbg against
    its own kernel, which is the point: numbers differ between kernels.
    """
    out = cfg.filters.argv()
    if cfg.stack:
        out.append("--stack")
    if not cfg.causes:
        out.append("--no-causes")
    if cfg.journey:
        out.append("--journey")
    return out


def guest_watch_argv(cfg: WatchConfig, *output: str, stack: bool = False,
                     limits: bool = False) -> list[str]:
    """The argv of ``kdbg watch`` in a lab guest: this very kdbg
    (:func:`kdbg.lab.guest.kdbg_argv`), ``output`` (``--json``, or ``--write -`` and its
    sizes), ``cfg``'s filters, ``--stack`` when ``stack`` (the stopped skb's stack, for a
    hit report), and ``cfg``'s ``--count``/``--duration`` when ``limits`` (a recording
    ends in the guest; a break-watch counts and times here)."""
    from kdbg.lab.guest import kdbg_argv  # the lab: 50 ms a local watch's start need not pay

    argv = [*kdbg_argv(), "watch", *output, *remote_options(cfg)]
    if stack and not cfg.stack:
        argv.append("--stack")
    if limits and cfg.count is not None:
        argv += ["--count", str(cfg.count)]
    if limits and cfg.duration is not None:
        argv += ["--duration", str(cfg.duration)]
    return argv


def guest_bpf_argv(cfg: BpfWatchConfig) -> list[str]:
    """The argv of ``kdbg watch --bpf --json`` in a lab guest with ``cfg``'s programs and
    packet filters (a break-watch counts and times here)."""
    from kdbg.lab.guest import kdbg_argv  # the lab: see guest_watch_argv

    progs = [arg for prog in cfg.progs for arg in ("--prog", prog)]
    return [*kdbg_argv(), "watch", "--bpf", "--json", *progs, *cfg.filters.argv()]
