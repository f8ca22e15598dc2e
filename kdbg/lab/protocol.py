"""The exec channel's wire protocol, host side (the guest side is ``vm/kdbg-agent.c``).

Frames, both ways: ``kind`` (1 byte), ``length`` (4 bytes, big endian), ``payload``.
Every connection starts with ``A`` (authenticate), whose payload is the lab's exec key:
64 hex digits (256 random bits) that kdbg writes at ``up`` to a mode-0600 file in the
lab's state directory (mode 0700), which the agent reads from the host's files at
start. The agent compares it in constant time and closes the connection, running
nothing, on any other first frame, a wrong length or a wrong key. Then the client
sends ``P`` (ping; answered with ``P`` and ``key=value`` lines of guest
facts) or ``R`` (run; NUL-separated fields: stdin flag ``0``/``1``, cwd, argc, argv...,
then ``KEY=VALUE`` environment entries). During a run the client may send ``I`` (stdin
bytes), ``C`` (close stdin) and ``K`` (signal number, ASCII); the agent sends ``O``
(stdout bytes), ``E`` (stderr bytes) and finally ``X`` (exit status, ASCII; 128+N when
killed by signal N). When the client goes away the agent kills the command's process
group.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

AUTH = b"A"
PING = b"P"
RUN = b"R"
STDIN = b"I"
STDIN_EOF = b"C"
SIGNAL = b"K"
STDOUT = b"O"
STDERR = b"E"
EXIT = b"X"
HEADER_SIZE = 5
MAX_FRAME = 16 << 20
KEY_HEX_DIGITS = 64

GUEST_EXEC_IP = "10.0.2.15"
GUEST_PORT = 7022


def encode_frame(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + len(payload).to_bytes(4, "big") + payload


def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    """Write one frame (the caller serialises writers)."""
    sock.sendall(encode_frame(kind, payload))


def opening(key: bytes, kind: bytes, payload: bytes = b"") -> bytes:
    """The ``A`` frame and the first request, to be sent in one write: as two small
    writes, QEMU's user network holds the second back until the guest acknowledges the
    first (Nagle against a delayed ACK), which cost 0.3 s per exec under TCG."""
    return encode_frame(AUTH, key) + encode_frame(kind, payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """Read one frame; None at end of stream."""
    head = _recv_exact(sock, HEADER_SIZE)
    if head is None:
        return None
    kind, length = head[:1], int.from_bytes(head[1:], "big")
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    payload = _recv_exact(sock, length) if length else b""
    if payload is None:
        return None
    return kind, payload


def encode_run(argv: list[str], env: dict[str, str], cwd: str, stdin: bool) -> bytes:
    """The ``R`` payload."""
    fields = ["1" if stdin else "0", cwd, str(len(argv)), *argv]
    fields += [f"{k}={v}" for k, v in env.items()]
    if any("\0" in f for f in fields):
        raise ValueError("NUL in a command, its environment or cwd")
    return "\0".join(fields).encode()


def decode_facts(payload: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in payload.decode().splitlines() if "=" in line)


def write_key_file(path: Path) -> None:
    """Create ``path`` (mode 0600, exclusively) holding a fresh exec key. The key is never
    printed or logged; only its file's path is passed on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(KEY_HEX_DIGITS // 2))


def read_key_file(path: Path) -> bytes:
    """The exec key in ``path``; ValueError when it is not 64 hex digits."""
    key = path.read_bytes().strip()
    if len(key) != KEY_HEX_DIGITS or any(c not in b"0123456789abcdef" for c in key):
        raise ValueError(f"{path} does not hold an exec key")
    return key
