"""The three ways gdb reaches a target kernel, each described once, as data.

Every part of kdbg that behaves differently per transport asks this table instead of
testing a name: how an endpoint reaches it (:mod:`kdbg.debugger.endpoint`), how a
running target is interrupted and how a silent one is woken at attach
(:mod:`kdbg.debugger.connection`, :mod:`kdbg.debugger.runcontrol`), what recovery does
first when the session's gdb died (:mod:`kdbg.debugger.cleanup`,
:mod:`kdbg.debugger.watchdog`), how :mod:`kdbg.debugger.reach` tells whether anything
is behind an endpoint, whether the UDP relay can front it (:mod:`kdbg.debugger.relay`),
whether kgdb runs in the target (kgdb's leftovers, the guard's kgdb rules, a lab kernel
with ``CONFIG_KGDB``), and what the guard assumes of it (:mod:`kdbg.guard.rules`).

A new transport is one more :class:`Transport` in :data:`ALL` (and its guard policy in
:mod:`kdbg.guard.rules`); ``tests/unit/test_transports.py`` checks that every other list
of transports in kdbg is derived from this one.

It imports nothing from kdbg's rooms: guard/ and lab/ sit below debugger/ and read it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kdbg.errors import BadInput


class Interrupt(Enum):
    """How a running target is stopped."""

    BREAK_IN = "the break-in byte 0x03 over the link (gdb's Ctrl-C)"
    SYSRQ_G = "SysRq-G in the target, sent by the session's interrupter"


class Wake(Enum):
    """How a target that is silent when gdb attaches is woken (kgdb answers only a
    stopped kernel; see :mod:`kdbg.debugger.breakin`)."""

    NOTHING = "nothing: the stub answers whether the target runs or not"
    PROBE = ("KGDBoE's probe while gdb loads its symbols; without its word, the break-in "
             "byte 0x03 when the attach is not answered in time")
    SYSRQ_G = "SysRq-G through the session's interrupter when the attach is not answered"


class Recovery(Enum):
    """What a fresh gdb's release does first when the session's gdb died."""

    NOTHING = "nothing: the stub answers a fresh gdb"
    NUDGE = "the break-in byte 0x03: KGDBoE stops on it once its gdb is lost"
    SYSRQ_G = "SysRq-G through the session's interrupter, if the target runs"


class Reach(Enum):
    """How :mod:`kdbg.debugger.reach` tells, before gdb starts, whether anything is
    behind an endpoint (never by connecting to a stub: QEMU's stops the guest)."""

    LISTENING = "a listening TCP or Unix socket on this host"
    BOUND_UDP = "a bound UDP port on this host"
    SERIAL = ("a serial device; a listening TCP or Unix socket on this host; a plain "
              "connect to another host (a serial port has no debugger behind a connect)")


@dataclass(frozen=True)
class Transport:
    """One way gdb reaches a target kernel. ``name`` is the guard's (and the lab's, and
    the CLI's ``--transport``) name for it. Unless given: no kgdb in the target, 0x03
    interrupts, nothing to wake or recover, a listening socket behind the endpoint (as
    for QEMU's stub, which stops the guest from outside), no serial baud, no relay."""

    name: str
    title: str
    kinds: tuple[str, ...]  # the endpoint kinds that reach it (kdbg.debugger.endpoint)
    reach_hint: str  # what to check when nothing is behind the endpoint
    attach_hint: str  # what to check when gdb reached the endpoint but could not attach
    guard_hint: str  # what the guard assumes of it, in its "safe on" suggestions
    kgdb: bool = False  # kgdb in the target: CONFIG_KGDB, kgdb's leftovers and blocklist
    interrupt: Interrupt = Interrupt.BREAK_IN
    wake: Wake = Wake.NOTHING
    recovery: Recovery = Recovery.NOTHING
    reach: Reach = Reach.LISTENING
    baud: bool = False  # gdb needs ``set serial baud`` on a tty
    relayed: bool = False  # the UDP relay (kdbg.debugger.relay) can front it
    # gdb commands that keep stepping (next, step, finish, until) in the stopped
    # context: run once attached, each allowed to fail (a stub may not take it)
    step_setup: tuple[str, ...] = ()
    guard_steps: bool = False  # the guard judges every step, next, finish and until

    def __str__(self) -> str:
        return self.name


GDBSTUB = Transport(
    name="gdbstub", title="QEMU's gdb stub", kinds=("tcp", "unix"),
    relayed=True,
    # QEMU single-steps with interrupts and timers held (its sstep flags ENABLE, NOIRQ,
    # NOTIMER: TCG's default, set again for KVM), and gdb resumes only the stopped vCPU
    # while stepping (the stub takes vCont per thread): a next over a call does not
    # stop in another CPU's work
    step_setup=("maint packet Qqemu.sstep=0x7", "set scheduler-locking step"),
    reach_hint="is the lab (or QEMU with its gdb stub) running? kdbg lab status",
    attach_hint="is QEMU running with its gdb stub on (kdbg lab status)?",
    guard_hint="QEMU's gdb stub in the lab (kdbg lab up), which stops the VM from outside",
)

KGDBOC = Transport(
    name="kgdboc", title="kgdb over a serial line (kgdboc)", kinds=("serial",),
    kgdb=True, baud=True,
    interrupt=Interrupt.SYSRQ_G, wake=Wake.SYSRQ_G, recovery=Recovery.SYSRQ_G, reach=Reach.SERIAL,
    reach_hint="is QEMU's kgdboc serial port there? kdbg lab status",
    attach_hint="kgdb answers only once stopped: echo g > /proc/sysrq-trigger in the target",
    guard_hint="kgdb over a serial line (kdbg lab up --kernel BUILT --transport kgdboc)",
)

KGDBOE = Transport(
    name="kgdboe", title="KGDBoE (kgdb over UDP)", kinds=("udp",),
    kgdb=True,
    wake=Wake.PROBE, recovery=Recovery.NUDGE, reach=Reach.BOUND_UDP,
    # a step traps into kgdb, which then runs KGDBoE's network path on that CPU; a next
    # or finish breaks at an address no one judged: the guard judges them all
    guard_steps=True,
    reach_hint="is kgdboe loaded in the target, and the UDP port right?",
    attach_hint="is kgdboe loaded in the target, and is the UDP port reachable?",
    guard_hint="KGDBoE over UDP",
)

ALL: tuple[Transport, ...] = (GDBSTUB, KGDBOC, KGDBOE)  # the guard suggests in this order
NAMES: tuple[str, ...] = tuple(t.name for t in ALL)
KINDS: dict[str, Transport] = {kind: t for t in ALL for kind in t.kinds}


def by_name(name: str) -> Transport:
    """The transport called ``name``; BadInput, naming the known ones, for another."""
    for transport in ALL:
        if transport.name == name:
            return transport
    raise BadInput(f"unknown transport {name!r}", hint="one of " + ", ".join(NAMES))


def needs_kgdb(name: str) -> bool:
    """Whether a target reached over transport ``name`` must run kgdb (CONFIG_KGDB)."""
    return by_name(name).kgdb
