"""``kdbg doctor``: check each thing kdbg needs, and say how to fix what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from kdbg.errors import KdbgError
from kdbg.lab import accel, agent
from kdbg.symbols import tpformat
from kdbg.trace import fexitcheck, offsets
from kdbg.trace.objcache import check_headers
from kdbg.trace.probe import check_privileges

SETUP = "run scripts/setup.sh (as root)"


@dataclass(frozen=True)
class Check:
    """One capability: whether it is there, what was seen, and the fix if not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _guard(name: str, fn: Callable[[], str], fix: str, required: bool = True) -> Check:
    try:
        return Check(name, True, fn())
    except KdbgError as err:
        return Check(name, False, str(err.args[0]), err.hint or fix, required)
    except Exception as err:  # a probe must never crash the report
        return Check(name, False, f"{type(err).__name__}: {err}", fix, required)


def _privileges() -> str:
    check_privileges()
    return "root" if os.geteuid() == 0 else "CAP_BPF+CAP_PERFMON"


def _tracefs() -> str:
    return str(tpformat.ensure_tracefs())


def _tracepoint() -> str:
    fmt = tpformat.load("skb", "kfree_skb")
    fmt.field("reason")
    return f"skb:kfree_skb with reason field ({len(fmt.symbolic('reason'))} reasons)"


def _btf() -> str:
    offs = offsets.for_running_kernel()
    return f"/sys/kernel/btf/vmlinux ({len(offs)} struct offsets resolved)"


def _kallsyms() -> str:
    with open("/proc/kallsyms") as f:
        first = f.readline().split()[0]
    if int(first, 16) == 0:
        raise KdbgError("addresses hidden", hint="run as root or set kptr_restrict=0")
    return "addresses visible"


def _bcc() -> str:
    import bcc  # noqa: F401

    check_headers()
    build = os.path.realpath(f"/lib/modules/{os.uname().release}/build")
    return f"bcc importable; headers at {build}"


def _tool(cmd: list[str]) -> Callable[[], str]:
    def run() -> str:
        # Tools installed into kdbg's own venv (virtme-ng) count too.
        path = os.pathsep.join([os.environ.get("PATH", ""), os.path.dirname(sys.executable)])
        exe = shutil.which(cmd[0], path=path)
        if exe is None:
            raise KdbgError(f"{cmd[0]} not found")
        out = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True,
                             timeout=20).stdout
        return (out.splitlines() or ["?"])[0]
    return run


def _lab_agent() -> str:
    return f"built: {agent.ensure_built()}"


def _kvm() -> str:
    seen = "present" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "absent"
    probe = accel.kvm_probe()
    use = "the lab uses KVM" if probe.works else "the lab uses TCG"
    return f"/dev/kvm {seen}; {use} (--accel auto): {probe.why}"


def run_checks() -> list[Check]:
    """Every check, in the order a user would fix them."""
    return [
        _guard("privileges", _privileges, "run kdbg as root (sudo kdbg ...)"),
        _guard("tracefs", _tracefs, "mount -t tracefs nodev /sys/kernel/tracing"),
        _guard("tracepoint", _tracepoint,
               "needs Linux >= 5.17 for drop reasons; older kernels: bcc's tcpdrop"),
        _guard("btf", _btf, "a kernel with CONFIG_DEBUG_INFO_BTF=y"),
        _guard("kallsyms", _kallsyms, "run as root"),
        _guard("bcc", _bcc, SETUP),
        _guard("bpf progs", fexitcheck.check, "", required=False),
        _guard("gdb", _tool(["gdb", "--version"]), "apt-get install gdb"),
        _guard("qemu", _tool(["qemu-system-x86_64", "--version"]),
               "apt-get install qemu-system-x86"),
        _guard("virtme-ng", _tool(["vng", "--version"]), SETUP, required=False),
        _guard("lab agent", _lab_agent, SETUP, required=False),
        _guard("kvm", _kvm, "", required=False),
    ]
