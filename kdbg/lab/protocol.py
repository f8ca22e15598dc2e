"""The exec channel's wire protocol, host side (the guest side is ``vm/kdbg-agent.c``).

Frames, both ways: ``kind`` (1 byte), ``length`` (4 bytes, big endian), ``payload``.
The client opens with ``P`` (ping; answered with ``P`` and ``key=value`` lines of guest
facts) or ``R`` (run; NUL-separated fields: stdin flag ``0``/``1``, cwd, argc, argv...,
then ``KEY=VALUE`` environment entries). During a run the client may send ``I`` (stdin
bytes), ``C`` (close stdin) and ``K`` (signal number, ASCII); the agent sends ``O``
(stdout bytes), ``E`` (stderr bytes) and finally ``X`` (exit status, ASCII; 128+N when
killed by signal N). When the client goes away the agent kills the command's process
group.
"""

from __future__ import annotations

import socket

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

GUEST_EXEC_IP = "10.0.2.15"
GUEST_PORT = 7022


def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    """Write one frame (the caller serialises writers)."""
    sock.sendall(kind + len(payload).to_bytes(4, "big") + payload)


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
