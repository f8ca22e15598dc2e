"""Load the drop program with bcc, attach it to ``skb:kfree_skb``, and read it back."""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kdbg.dirs import BPF_DIR
from kdbg.errors import BpfLoadError, ProbeUnavailable
from kdbg.trace import layout
from kdbg.trace.program import FUNC_NAME

TRACEPOINT = "skb:kfree_skb"


def check_privileges() -> None:
    """ProbeUnavailable unless this process may load BPF and read kernel addresses."""
    if os.geteuid() == 0:
        return
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(line for line in status.splitlines()
                           if line.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        cap_eff = 0
    cap_sys_admin, cap_perfmon, cap_bpf = 1 << 21, 1 << 38, 1 << 39
    if cap_eff & cap_sys_admin or (cap_eff & cap_bpf and cap_eff & cap_perfmon):
        return
    raise ProbeUnavailable(
        "loading BPF needs root (or CAP_BPF with CAP_PERFMON)", hint="run with sudo"
    )


def check_headers() -> None:
    """ProbeUnavailable unless bcc will find kernel headers to compile against."""
    build = Path("/lib/modules", os.uname().release, "build")
    if (build / "include").exists() or Path("/sys/kernel/kheaders.tar.xz").exists():
        return
    raise ProbeUnavailable(
        f"bcc needs kernel headers and {build} is missing",
        hint="run scripts/setup.sh, which installs or links Debian's headers",
    )


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """Collect what C code (clang, the verifier) writes to fd 2 while loading."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lambda: (tmp.seek(0), tmp.read().decode(errors="replace"))[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _summarize(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith(";")]
    errors = [ln for ln in lines if "error" in ln.lower()]
    pick = errors[:2] or lines[-2:]
    return " | ".join(s.strip() for s in pick) or "no diagnostics"


def load_bpf(text: str, attachments: list[tuple[str, str]], what: str) -> Any:
    """Compile ``text`` with bcc and attach each ``(tracepoint, function)``; a tracepoint
    named ``raw:NAME`` is attached as a raw tracepoint (its arguments, not its record).

    Checks privileges and headers first; compiler and verifier output becomes a
    one-line BpfLoadError instead of pages on stderr. Returns the bcc ``BPF``.
    """
    check_privileges()
    check_headers()
    try:
        from bcc import BPF
    except ImportError as err:
        raise ProbeUnavailable(
            f"cannot import bcc ({err})",
            hint="install python3-bpfcc and run kdbg from a venv made with "
            "/usr/bin/python3 -m venv --system-site-packages (scripts/setup.sh does)",
        ) from None
    with _captured_stderr() as log:
        try:
            bpf = BPF(text=text, cflags=[f"-I{BPF_DIR}", "-Wno-unused-variable"])
        except Exception as err:
            raise BpfLoadError(f"bcc could not compile the {what}: {_summarize(log())}"
                               ) from err
        for tp, fn in attachments:
            try:
                if tp.startswith("raw:"):
                    bpf.attach_raw_tracepoint(tp=tp.removeprefix("raw:"), fn_name=fn)
                else:
                    bpf.attach_tracepoint(tp=tp, fn_name=fn)
            except Exception as err:
                bpf.cleanup()
                raise BpfLoadError(f"cannot attach to {tp}: {_summarize(log())}") from err
    return bpf


class RingProbe:
    """A loaded program with a ring buffer named ``events`` and a per-CPU ``counters``
    array: the shape of both the drop and the path program. Subclasses name the record
    type and the counter slots."""

    RECORD: Any = None  # the ctypes struct of one ring-buffer record
    COUNTERS: dict[int, str] = {}  # counter slot -> name
    LABEL = "program"

    def __init__(self, text: str, attachments: list[tuple[str, str]]) -> None:
        self.text = text
        self.attachments = attachments
        self._bpf: Any = None

    def start(self, on_event: Callable[[Any], None]) -> None:
        """Compile, load and attach; ``on_event`` gets each raw record during :meth:`poll`."""
        self._bpf = load_bpf(self.text, self.attachments, self.LABEL)
        record = ct.POINTER(self.RECORD)

        def callback(_ctx: Any, data: Any, _size: int) -> None:
            on_event(ct.cast(data, record).contents)

        self._bpf["events"].open_ring_buffer(callback)

    @property
    def loaded(self) -> bool:
        return self._bpf is not None

    def poll(self, timeout_ms: int) -> None:
        """Deliver pending events (at most ``timeout_ms`` of waiting)."""
        self._bpf.ring_buffer_poll(timeout_ms)

    def consume(self) -> None:
        """Deliver whatever is pending without waiting."""
        self._bpf.ring_buffer_consume()

    def counters(self) -> dict[str, int]:
        """The per-CPU counters, summed, by name."""
        table = self._bpf["counters"]
        return {name: sum(int(v) for v in table[ct.c_int(slot)])
                for slot, name in self.COUNTERS.items()}

    def close(self) -> None:
        """Detach and free everything (idempotent)."""
        if self._bpf is not None:
            bpf, self._bpf = self._bpf, None
            bpf.cleanup()


class DropProbe(RingProbe):
    """The drop program: ring buffer, in-kernel stats, counters (lost, stats_full,
    seen) and stacks."""

    RECORD = layout.RawDropEvent
    COUNTERS = {layout.CTR_LOST: "lost", layout.CTR_STATS_FULL: "stats_full",
                layout.CTR_SEEN: "seen"}
    LABEL = "drop program"

    def __init__(self, text: str) -> None:
        super().__init__(text, [(TRACEPOINT, FUNC_NAME)])

    def stats(self) -> dict[tuple[int, int], int]:
        """In-kernel counts of matching drops per (reason code, location address)."""
        out: dict[tuple[int, int], int] = {}
        for (reason, location, _netns, _ifname), n in self.stats_by_dev().items():
            out[reason, location] = out.get((reason, location), 0) + n
        return out

    def stats_by_dev(self) -> dict[tuple[int, int, int, str], int]:
        """In-kernel counts per (reason code, location address, netns inode, ifname);
        netns and ifname are 0 and "" unless the program counts per device."""
        return {(k.reason, k.location, k.netns, k.ifname.decode(errors="replace")):
                sum(int(c) for c in v) for k, v in self._bpf["stats"].items()}

    def stack(self, stack_id: int) -> list[int]:
        """Return addresses of a captured kernel stack, innermost first."""
        try:
            return [int(a) for a in self._bpf["stacks"].walk(stack_id)]
        except KeyError:
            return []
