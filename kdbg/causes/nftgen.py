"""The generation of a namespace's nftables ruleset, asked of the kernel over netlink.

nf_tables counts the transactions committed in each network namespace (``nft`` and
iptables-nft alike) and answers ``NFT_MSG_GETGEN`` with that count (``NFTA_GEN_ID``,
the namespace's ``base_seq``). A ruleset read at generation G is still that ruleset
while the count is G: the netfilter finder then reuses it instead of running ``nft``
twice again (seconds in a loaded TCG guest, on the way to a ``--break`` hit's report).
``nft`` itself asks the same question first, so this loads nothing ``nft`` would not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import threading

from kdbg.causes.netnsref import NetnsRef

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFTA_GEN_ID = 1
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
CLONE_NEWNET = 0x40000000
REPLY_WAIT = 1.0  # s for the kernel's answer (it answers at once)

_NLMSG = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NFGEN = struct.Struct("=BBH")  # nfgenmsg: family, version, res_id
_ATTR = struct.Struct("=HH")  # nlattr: len, type


def request(seq: int) -> bytes:
    """An ``NFT_MSG_GETGEN`` request with sequence number ``seq``."""
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, 0)
    return _NLMSG.pack(_NLMSG.size + len(body), (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
                       NLM_F_REQUEST, seq, 0) + body


def parse(data: bytes, seq: int) -> int | None:
    """The generation in the kernel's reply to request ``seq``; None for an error (no
    nf_tables) or a reply without one."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, kind, _flags, got_seq, _pid = _NLMSG.unpack_from(data, off)
        if length < _NLMSG.size:
            return None
        if got_seq == seq and kind == NLMSG_ERROR:
            return None
        if got_seq == seq and kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
            return _gen_id(data[off + _NLMSG.size + _NFGEN.size:off + length])
        off += (length + 3) & ~3
    return None


def _gen_id(attrs: bytes) -> int | None:
    off = 0
    while off + _ATTR.size <= len(attrs):
        length, kind = _ATTR.unpack_from(attrs, off)
        if length < _ATTR.size:
            return None
        if kind & 0x3FFF == NFTA_GEN_ID and length >= _ATTR.size + 4:
            return int(struct.unpack_from(">I", attrs, off + _ATTR.size)[0])
        off += (length + 3) & ~3
    return None


def _socket_in(path: str | None) -> socket.socket:
    """A netfilter netlink socket in the namespace ``path`` refers to (None: ours). The
    namespace is entered by a thread of its own, so no other thread of kdbg moves; a
    socket stays in the namespace it was made in."""
    if path is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    made: list[socket.socket | OSError] = []

    def enter() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {path}: {os.strerror(err)}")
            finally:
                os.close(fd)
            made.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER))
        except OSError as err:
            made.append(err)

    thread = threading.Thread(target=enter, name="kdbg-nftgen", daemon=True)
    thread.start()
    thread.join()
    if not made:
        raise OSError("the setns thread made no socket")
    if isinstance(made[0], OSError):
        raise made[0]
    return made[0]


class Generations:
    """Asks each namespace's nf_tables for its generation, one socket per namespace.
    A socket holds its namespace: one whose file no longer refers to it is closed."""

    def __init__(self) -> None:
        self._socks: dict[int, tuple[socket.socket, NetnsRef]] = {}
        self._seq = 0

    def of(self, ns: NetnsRef) -> int | None:
        """The generation of namespace ``ns``; None when it cannot be told (no
        nf_tables, no permission, the namespace gone)."""
        for inode, (_, ref) in list(self._socks.items()):
            if not ref.alive():
                self.forget(inode)
        inode = ns.inode
        try:
            held = self._socks.get(inode)
            if held is None:
                if not ns.alive():
                    return None
                held = self._socks[inode] = (_socket_in(None if ns.own else ns.path), ns)
                held[0].settimeout(REPLY_WAIT)
            sock = held[0]
            self._seq += 1
            sock.send(request(self._seq))
            while True:  # a late reply to an earlier request is skipped
                data = sock.recv(65536)
                gen = parse(data, self._seq)
                if gen is not None or _answers(data, self._seq):
                    return gen
        except OSError:
            self.forget(inode)
            return None

    def forget(self, inode: int) -> None:
        """Close namespace ``inode``'s socket (it went, or failed)."""
        held = self._socks.pop(inode, None)
        if held is not None:
            with contextlib.suppress(OSError):
                held[0].close()

    def close(self) -> None:
        for inode in list(self._socks):
            self.forget(inode)


def _answers(data: bytes, seq: int) -> bool:
    """Whether ``data`` holds a message for request ``seq``."""
    off = 0
    while off + _NLMSG.size <= len(data):
        length, _kind, _flags, got_seq, _pid = _NLMSG.unpack_from(data, off)
        if got_seq == seq:
            return True
        if length < _NLMSG.size:
            return False
        off += (length + 3) & ~3
    return False
