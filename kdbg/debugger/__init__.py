"""gdb over MI (pygdbmi) to a target kernel: QEMU's stub, kgdboc or KGDBoE.

The public API (see docs/gdb.md)::

    from kdbg.debugger import Session
    with Session.connect("tcp:127.0.0.1:1234", kallsyms="kallsyms.txt") as s:
        s.run.resume()
        site, bp = s.run.break_drop_site(location)
        stop = s.run.wait_stop(timeout=60)
        skb, reason = s.inspect.read_args(2)
"""

from kdbg.debugger.attach import Target, from_endpoint, from_lab
from kdbg.debugger.dropsite import DROP_FUNCTIONS
from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.errors import GdbDied, NotADropSite, SessionInterrupted, TargetUnreachable
from kdbg.debugger.model import Breakpoint, CleanupReport, DropSite, Frame, Stop
from kdbg.debugger.relay import UdpRelay
from kdbg.debugger.session import Session

__all__ = [
    "DROP_FUNCTIONS",
    "Breakpoint",
    "CleanupReport",
    "DropSite",
    "Endpoint",
    "Frame",
    "GdbDied",
    "NotADropSite",
    "Session",
    "SessionInterrupted",
    "Stop",
    "Target",
    "TargetUnreachable",
    "UdpRelay",
    "from_endpoint",
    "from_lab",
]
