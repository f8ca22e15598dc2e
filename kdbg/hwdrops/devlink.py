"""devlink over generic netlink: which devlink devices exist, and their packet traps.

Only the two dumps kdbg needs (``DEVLINK_CMD_GET`` and ``DEVLINK_CMD_TRAP_GET``),
spoken directly over an ``AF_NETLINK`` socket; numbers are from
``include/uapi/linux/devlink.h``, which keeps them stable (they are ABI).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from kdbg.errors import KdbgError

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3

DEVLINK_GENL_NAME = "devlink"
DEVLINK_GENL_VERSION = 1
DEVLINK_CMD_GET = 1
DEVLINK_CMD_TRAP_GET = 61
DEVLINK_ATTR_BUS_NAME = 1
DEVLINK_ATTR_DEV_NAME = 2
DEVLINK_ATTR_TRAP_NAME = 130
DEVLINK_ATTR_TRAP_ACTION = 131
DEVLINK_ATTR_TRAP_TYPE = 132
DEVLINK_ATTR_TRAP_GROUP_NAME = 135

ACTIONS = {0: "drop", 1: "trap", 2: "mirror"}
TRAP_TYPES = {0: "drop", 1: "exception", 2: "control"}


class DevlinkError(KdbgError):
    """devlink's netlink family did not answer as expected."""


@dataclass(frozen=True)
class Trap:
    """One packet trap of one devlink device (``devlink trap show``)."""

    device: str  # "bus/dev", as devlink(8) names it
    name: str
    group: str
    action: str
    type: str


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    pos = 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, pos)
        if length < 4:
            break
        yield kind & 0x3FFF, data[pos + 4: pos + length]
        pos += (length + 3) & ~3


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _text(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


class _Genl:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.settimeout(5)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, family: int, cmd: int, version: int, attrs: bytes = b"",
                dump: bool = False) -> list[dict[int, bytes]]:
        """Send one request; the attributes of every reply message (a dump's too)."""
        self.seq += 1
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else 0)
        body = struct.pack("=BBH", cmd, version, 0) + attrs
        self.sock.send(struct.pack("=IHHII", 16 + len(body), family, flags, self.seq,
                                   os.getpid()) + body)
        out: list[dict[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            pos = 0
            while pos + 16 <= len(data):
                length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, pos)
                if length < 16:
                    raise DevlinkError("malformed netlink reply")
                payload = data[pos + 16: pos + length]
                pos += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return out
                if kind == NLMSG_DONE:
                    return out
                out.append(dict(_attrs(payload[4:])))
                if not dump:
                    return out


def _family(genl: _Genl) -> int | None:
    try:
        reply = genl.request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1,
                             _attr(CTRL_ATTR_FAMILY_NAME, DEVLINK_GENL_NAME.encode() + b"\0"))
    except OSError as err:
        if err.errno == errno.ENOENT:
            return None
        raise DevlinkError(f"cannot ask netlink for devlink: {err.strerror}") from None
    return int(struct.unpack("=H", reply[0][CTRL_ATTR_FAMILY_ID][:2])[0])


def _name(attrs: dict[int, bytes]) -> str:
    return f"{_text(attrs[DEVLINK_ATTR_BUS_NAME])}/{_text(attrs[DEVLINK_ATTR_DEV_NAME])}"


def has_devlink() -> bool:
    """The kernel speaks devlink (CONFIG_NET_DEVLINK)."""
    genl = _Genl()
    try:
        return _family(genl) is not None
    finally:
        genl.close()


def devices() -> list[str]:
    """Every devlink device as ``bus/dev`` (empty without devlink or devices)."""
    genl = _Genl()
    try:
        family = _family(genl)
        if family is None:
            return []
        replies = genl.request(family, DEVLINK_CMD_GET, DEVLINK_GENL_VERSION, dump=True)
        return sorted(_name(r) for r in replies if DEVLINK_ATTR_DEV_NAME in r)
    finally:
        genl.close()


def traps() -> dict[tuple[str, str], Trap]:
    """Every packet trap of every device, by (device, trap name)."""
    genl = _Genl()
    try:
        family = _family(genl)
        if family is None:
            return {}
        try:
            replies = genl.request(family, DEVLINK_CMD_TRAP_GET, DEVLINK_GENL_VERSION, dump=True)
        except OSError as err:
            if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return {}
            raise DevlinkError(f"cannot list devlink traps: {err.strerror}") from None
        out = {}
        for r in replies:
            if DEVLINK_ATTR_TRAP_NAME not in r:
                continue
            trap = Trap(
                device=_name(r), name=_text(r[DEVLINK_ATTR_TRAP_NAME]),
                group=_text(r.get(DEVLINK_ATTR_TRAP_GROUP_NAME, b"")),
                action=ACTIONS.get(r.get(DEVLINK_ATTR_TRAP_ACTION, b"\xff")[0], "?"),
                type=TRAP_TYPES.get(r.get(DEVLINK_ATTR_TRAP_TYPE, b"\xff")[0], "?"),
            )
            out[trap.device, trap.name] = trap
        return out
    finally:
        genl.close()
