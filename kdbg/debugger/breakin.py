"""Getting back a KGDBoE target whose debugger died.

When gdb goes away without detaching (killed, a laptop lid, a dropped ssh) while the
target runs, kgdb still counts a debugger as attached and KGDBoE answers no gdb packet
until the kernel stops again: a fresh gdb waits out its whole timeout. KGDBoE's receive
handler still honours the break-in byte (0x03, what gdb's Ctrl-C sends): the kernel
stops in kgdb at once and answers gdb's next packet. So when a ``udp:`` stub does not
answer gdb's attach within :data:`ANSWER_WITHIN` seconds, the session sends that byte
(:func:`nudge`) and lets gdb's attach go on (see ``Session._attach``).

The byte must come from where gdb runs (a lab's KGDBoE port is inside the lab's network
namespace): under gdb's command prefix :func:`nudge` runs a two-line Python child there.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Sequence

from kdbg.debugger.endpoint import Endpoint

ANSWER_WITHIN = 4.0  # s: a live KGDBoE answered an attach in 1.2-1.7 s in the lab
BREAK_IN = b"\x03"
_CHILD = ("import socket, sys\n"
          "h, p = sys.argv[1], int(sys.argv[2])\n"
          "socket.socket(socket.AF_INET6 if ':' in h else socket.AF_INET,"
          " socket.SOCK_DGRAM).sendto(b'\\x03', (h, p))\n")
BROKE_IN = ("the target was running with no debugger attached (a debugger died?); "
            "stopped it with a break-in (0x03)")
SYSRQ_G = ("kgdb did not answer (the target was running): stopped it with SysRq-G "
           "through the lab's exec channel")


def send_break(host: str, port: int) -> None:
    """One datagram holding the break-in byte to ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(BREAK_IN, (host, port))


def nudge(ep: Endpoint, prefix: Sequence[str] = ()) -> None:
    """Send the break-in byte to a ``udp:`` endpoint, from under ``prefix`` (``ip netns
    exec NS`` for a lab) when there is one. Best effort: errors are left to gdb's attach."""
    if not prefix:
        with contextlib.suppress(OSError):
            send_break(ep.host, ep.port)
        return
    argv = [*prefix, sys.executable, "-c", _CHILD, ep.host, str(ep.port)]
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(argv, capture_output=True, timeout=15, stdin=subprocess.DEVNULL)

