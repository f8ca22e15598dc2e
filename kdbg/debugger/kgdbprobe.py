"""Is a KGDBoE stub answering? If it is not, stop its kernel so that it will.

Run from where gdb runs (a lab's KGDBoE port is inside the lab's network namespace) as
``python kgdbprobe.py HOST PORT`` while gdb loads its symbols; it imports nothing of
kdbg, so it starts at once under any command prefix. It prints one word: ``answered``,
``broke-in`` or ``silent``. ``--nudge`` sends only the break-in byte.

What it relies on, from KGDBoE's receive handler and kgdb's packet loop (gdbstub.c):

- KGDBoE keeps every byte it receives, whether the kernel runs or not, and sends its
  replies to the sender of the *last* datagram.
- The kernel stops for any datagram while no debugger is connected, but only for the
  break-in byte (0x03) while one is, as after a debugger died without detaching.
- A stopped kgdb that sends a packet waits for ``+``; a ``$`` instead makes it answer
  ``-`` and drop what it was sending. Reading a packet, it skips everything up to ``$``.

So the probe sends ``?``: an answer means a live stub (now stopped). Silence for
:data:`ANSWER_WITHIN` s means a kernel that runs with a debugger connected: the probe
sends 0x03, and kgdb's stop report follows. The probe acknowledges what it gets, which
leaves kgdb waiting for the next packet: gdb's own, so gdb's socket gets the answers.
Were the byte sent while gdb's first packets already waited in KGDBoE's buffer, kgdb
would answer them to the byte's sender, and gdb would sit out its ``remotetimeout``.
"""

from __future__ import annotations

import socket
import sys
import time

ANSWER_WITHIN = 2.5  # s: a live kgdb answered gdb's whole attach in 1.2-1.7 s in the lab
STOP_WITHIN = 5.0  # s: for the stop report after the break-in byte
QUERY = b"$?#3f"
BREAK_IN = b"\x03"
RESULTS = ("answered", "broke-in", "silent")


def has_packet(data: bytes) -> bool:
    """Whether ``data`` holds a whole ``$payload#cs`` packet."""
    start = data.find(b"$")
    end = data.find(b"#", start + 1) if start >= 0 else -1
    return end >= 0 and len(data) >= end + 3


def wait_packet(sock: socket.socket, within: float, resend: bytes | None) -> bool:
    """Wait up to ``within`` s for a packet and acknowledge it. A ``-`` (kgdb was
    waiting for an ack of an older packet) sends ``resend`` again."""
    deadline = time.monotonic() + within
    data = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except OSError:  # an ICMP error for an earlier datagram: keep listening
            continue
        data += chunk
        if has_packet(data):
            sock.send(b"+")
            return True
        if resend is not None and b"-" in chunk:
            sock.send(resend)
    return False


def probe(host: str, port: int, answer_within: float = ANSWER_WITHIN,
          stop_within: float = STOP_WITHIN) -> str:
    """``answered``, ``broke-in`` or ``silent`` (see the module docstring)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.send(QUERY)
        if wait_packet(sock, answer_within, QUERY):
            return "answered"
        sock.send(BREAK_IN)
        if wait_packet(sock, stop_within, None):
            return "broke-in"
    return "silent"


def nudge(host: str, port: int) -> None:
    """One datagram holding the break-in byte."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(BREAK_IN, (host, port))


def main(argv: list[str]) -> int:
    host, port = argv[0], int(argv[1])
    if argv[2:] == ["--nudge"]:
        nudge(host, port)
        return 0
    try:
        print(probe(host, port), flush=True)
    except OSError as err:
        print(f"silent ({err})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
