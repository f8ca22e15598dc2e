"""``kdbg-skb [EXPR]``: the stopped skb, read from the kernel's memory with its DWARF
types (loaded by kdbg_prompt.py); the text is :mod:`kdbg.prompt.skbview`'s.

Without EXPR: ``$kdbg_skb`` (set by ``kdbg-state``), else the skb argument of the drop
call the target is stopped at (``$rdi`` for kfree_skb_reason/kfree_skb, ``$rsi`` for
sk_skb_reason_drop), while the pc is still at that call (kdbg's state says which call)
or at a drop function's first instruction.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kdbg_state  # type: ignore[import-not-found]

import gdb  # type: ignore[import-not-found]
from kdbg.prompt.skbview import DropReason, SkbMemory, describe, recording
from kdbg.symbols.dropargs import DROP_ARGS, reason_register, skb_register

HEADER_BYTES = 64  # enough for an IPv6 header and the ports after it
_READ_ERRORS = (gdb.error, gdb.MemoryError, ValueError)


def _drop_call() -> tuple[str, str] | None:
    """(callee, where) when the target is stopped at a drop call, its arguments still in
    their registers; else None."""
    frame = gdb.newest_frame()
    pc = int(frame.pc())
    state = kdbg_state.current()
    stop = state.stop if state is not None else None
    if stop is not None and stop.callee in DROP_ARGS and pc == stop.address:
        return stop.callee, f"the call to {stop.callee} at {stop.label or hex(pc)}"
    fn = frame.function()
    if fn is not None and fn.name in DROP_ARGS and int(fn.value().address) == pc:
        return fn.name, f"the first instruction of {fn.name}"
    return None


def _register(name: str) -> int:
    return int(gdb.newest_frame().read_register(name)) & 0xFFFFFFFFFFFFFFFF


def _default_skb() -> tuple[Any, str]:
    conv = gdb.convenience_variable("kdbg_skb")
    if conv is not None:
        return conv, "$kdbg_skb"
    try:
        call = _drop_call()
    except gdb.error as err:
        raise gdb.GdbError(f"kdbg-skb: no skb to show: {err} (give one: kdbg-skb EXPR)") from err
    if call is None:
        raise gdb.GdbError("kdbg-skb: the target is not stopped at a drop call and $kdbg_skb "
                           "is not set: give the skb (kdbg-skb EXPR)")
    callee, where = call
    reg = skb_register(callee)
    return gdb.Value(_register(str(reg))), f"${reg} at {where}"


def _skb(arg: str) -> tuple[Any, str]:
    """The skb as ``struct sk_buff *``, and where it came from."""
    try:
        value, origin = (gdb.parse_and_eval(arg), arg) if arg else _default_skb()
        if value.type.code == gdb.TYPE_CODE_VOID:
            raise gdb.GdbError(f"kdbg-skb: {origin} has no value")
        return value.cast(kdbg_state.sk_buff_pointer()), origin
    except gdb.error as err:
        if "No struct type named sk_buff" in str(err):
            raise gdb.GdbError("kdbg-skb: gdb does not know struct sk_buff (load the "
                               "kernel's vmlinux with DWARF: symbol-file VMLINUX)") from err
        raise gdb.GdbError(f"kdbg-skb: {err}") from err


class _Reader:
    """Reads fields, keeping a note instead of failing for those that cannot be read."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def get(self, what: str, read: Any) -> Any:
        try:
            return read()
        except _READ_ERRORS as err:
            self.notes.append(f"{what} not read: {err}")
            return None


def _netns(net: Any) -> int:
    return int(net["ns"]["inum"])


def _ct_status(nfct: int) -> int | None:
    if not nfct & ~7:
        return None
    ct = gdb.Value(nfct & ~7).cast(gdb.lookup_type("struct nf_conn").pointer())
    return int(ct["status"])


def read_skb(skb: Any) -> SkbMemory:
    """What ``kdbg-skb`` shows of ``skb`` (a ``struct sk_buff *``), read from the target."""
    r = _Reader()
    s = skb.dereference()
    fields: dict[str, Any] = {
        k: r.get(k, lambda k=k: int(s[k])) for k in ("len", "data_len", "mark", "protocol")}
    dev = r.get("dev", lambda: s["dev"])
    if dev is not None and int(dev):
        fields["ifname"] = r.get("dev->name", lambda: dev["name"].string())
        fields["ifindex"] = r.get("dev->ifindex", lambda: int(dev["ifindex"]))
        fields["netns"] = r.get("dev_net(dev)", lambda: _netns(dev["nd_net"]["net"]))
        fields["netns_via"] = "device"
    sk = r.get("sk", lambda: s["sk"])
    fields["sk"] = int(sk) if sk is not None else None
    if fields.get("netns") is None and fields["sk"]:
        fields["netns"] = r.get("sock_net(sk)",
                                lambda: _netns(sk["__sk_common"]["skc_net"]["net"]))
        fields["netns_via"] = "socket"
    nfct = r.get("_nfct", lambda: int(s["_nfct"]))
    fields["nfct"] = nfct
    if nfct:
        fields["ct_status"] = r.get("nf_conn status", lambda: _ct_status(nfct))
    fields["header"] = r.get("headers", lambda: _header(s)) or b""
    return SkbMemory(int(skb), **fields, notes=tuple(r.notes))


def _header(s: Any) -> bytes:
    head, nh = int(s["head"]), int(s["network_header"])
    if not head or nh == 0xFFFF:  # (u16)~0U: no network header set
        return b""
    mem = gdb.selected_inferior()
    for size in (HEADER_BYTES, 40, 20):
        try:
            return bytes(mem.read_memory(head + nh, size))
        except gdb.MemoryError:
            continue
    raise gdb.MemoryError(f"cannot read the headers at 0x{head + nh:x}")


def status_bits() -> dict[int, str]:
    """nf_conn status bits by number, from the kernel's ``enum ip_conntrack_status``."""
    try:
        fields = gdb.lookup_type("enum ip_conntrack_status").fields()
    except gdb.error:
        return {}
    return {int(f.enumval): f.name.removeprefix("IPS_").removesuffix("_BIT")
            for f in fields if f.name.startswith("IPS_") and f.name.endswith("_BIT")}


def _reason(address: int) -> DropReason | None:
    """The drop reason of the skb at ``address``: the reason register at the drop call,
    named by gdb's ``enum skb_drop_reason``; else kdbg's state's."""
    try:
        call = _drop_call()
    except gdb.error:
        call = None
    state = kdbg_state.current()
    stop = state.stop if state is not None else None
    if call is not None and _register(str(skb_register(call[0]))) == address:
        reg = reason_register(call[0])
        if reg is not None:
            code = _register(reg) & 0xFFFFFFFF
            try:
                name = str(gdb.Value(code).cast(gdb.lookup_type("enum skb_drop_reason")))
            except gdb.error:
                name = str(code)
            return DropReason(name, f"${reg} at {call[1]}")
    if stop is not None and stop.reason and stop.skb == address:
        return DropReason(stop.reason, f"kdbg's state: the reason at {stop.name}")
    return None


def _moved_on(address: int) -> str | None:
    state = kdbg_state.current()
    stop = state.stop if state is not None else None
    try:
        pc = int(gdb.newest_frame().pc())
    except gdb.error:
        return None
    if stop is None or stop.skb != address or pc == stop.address:
        return None
    return (f"the target has moved on from {stop.name} (pc 0x{pc:x}): the skb may have "
            "been freed since")


class _SkbCommand(gdb.Command):  # type: ignore[misc]
    """kdbg-skb [EXPR]: the stopped skb: device, netns, packet, length, mark, conntrack, reason.

EXPR is a struct sk_buff * (default: $kdbg_skb, else the skb argument of the drop call
the target is stopped at). --record FILE also writes what was read, as JSON.
"""

    def __init__(self) -> None:
        super().__init__("kdbg-skb", gdb.COMMAND_DATA, gdb.COMPLETE_EXPRESSION)

    def invoke(self, arg: str, from_tty: bool) -> None:
        record, arg = kdbg_state.record_option(arg, "kdbg-skb [--record FILE] [EXPR]")
        skb, origin = _skb(arg)
        address = int(skb)
        if address == 0:
            raise gdb.GdbError(f"kdbg-skb: {origin} is NULL")
        moved = _moved_on(address)
        if moved:
            gdb.write(f"kdbg-skb: {moved}\n")
        try:
            int(skb.dereference()["len"])
        except (gdb.error, gdb.MemoryError) as err:
            raise gdb.GdbError(f"kdbg-skb: cannot read the skb at 0x{address:x}: {err}") from err
        mem = read_skb(skb)
        reason, bits = _reason(address), status_bits()
        lines = describe(mem, reason=reason, status_bits=bits)
        if origin not in (hex(address), str(address)):
            lines[0] += f"   ({origin})"
        gdb.write("\n".join(lines) + "\n")
        if record:
            Path(record).write_text(json.dumps(recording(mem, reason, bits), indent=1) + "\n")
            gdb.write(f"kdbg-skb: recorded in {record}\n")


_SkbCommand()
