"""Which accelerator the lab's QEMU uses: KVM when a guest really runs under it, else TCG.

``/dev/kvm`` being there proves little: on some hosts ``KVM_CREATE_VM`` succeeds but a
guest never gets past its first instructions (seen here: nothing printed in 60 s, and
``-cpu host`` aborting on an MSR). So the probe runs a guest, with the CPU model
virtme-ng asks for under KVM (``-cpu host,topoext=on``): a 64 KiB firmware image whose
reset vector writes a marker to the first serial port and exits, then (if that ran) the
lab's own kernel up to its first console line (the firmware never leaves real mode).
Each must print within a few seconds; anything else (no device, an error, a hang)
means TCG. The firmware under TCG prints at once, which the unit tests check, so a
KVM failure is the accelerator's and not the probe's.

The verdict is cached per host boot and QEMU binary (``accel.json`` in the cache): a
new boot, a new kernel module or a new QEMU probes again.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from kdbg.dirs import cache_dir
from kdbg.errors import BadInput, LabError

ACCELS = ("auto", "kvm", "tcg")
KVM_DEVICE = Path("/dev/kvm")
PROBE_TIMEOUT = 4.0
KERNEL_PROBE_TIMEOUT = 5.0  # a KVM guest prints its banner in well under a second
MARKER = b"kdbg-kvm-ok"
KERNEL_MARKER = b"Linux version"
QEMU = "qemu-system-x86_64"
KVM_CPU = "host,topoext=on"  # what virtme-ng asks for when it uses KVM


@dataclass(frozen=True)
class Probe:
    """One probe's verdict: ``works``, why, how long it took, and what it was keyed on."""

    works: bool
    why: str
    seconds: float
    key: str = ""
    cached: bool = False


@dataclass(frozen=True)
class Choice:
    """The accelerator a lab will use (``kvm`` or ``tcg``) and the reason, for the user."""

    accel: str
    why: str


def firmware() -> bytes:
    """A 64 KiB BIOS image: at the reset vector (0xFFFF0, real mode) it writes
    :data:`MARKER` and a newline to COM1 (port 0x3f8) and halts."""
    # At 0xF000:0xE000 (file offset 0xE000): si = message; loop: cs lodsb; test al,al;
    # jz done; out dx,al; jmp loop; done: out 0xf4,al (isa-debug-exit: QEMU exits);
    # cli; hlt; jmp back.
    msg = MARKER + b"\n\0"
    code = bytes([
        0xBA, 0xF8, 0x03,              # 0: mov dx, 0x3f8
        0xBE, 0x00, 0xE1,              # 3: mov si, 0xE100 (the message)
        0x2E, 0xAC,                    # 6: cs lodsb
        0x84, 0xC0,                    # 8: test al, al
        0x74, 0x03,                    # 10: jz 15
        0xEE,                          # 12: out dx, al
        0xEB, 0xF7,                    # 13: jmp 6
        0xE6, 0xF4,                    # 15: out 0xf4, al (al is 0)
        0xFA,                          # 17: cli
        0xF4,                          # 18: hlt
        0xEB, 0xFC,                    # 19: jmp 17
    ])
    image = bytearray(b"\xf4" * 0x10000)
    image[0xE000:0xE000 + len(code)] = code
    image[0xE100:0xE100 + len(msg)] = msg
    # Reset vector at 0xFFF0: jmp far 0xF000:0xE000.
    image[0xFFF0:0xFFF5] = bytes([0xEA, 0x00, 0xE0, 0x00, 0xF0])
    return bytes(image)


def _guest_argv(binary: str, accel: str, tmp: Path, kernel: Path | None,
                cpu: str | None) -> list[str]:
    argv = [binary, "-nodefaults", "-no-user-config", "-display", "none", "-machine", "pc",
            "-accel", accel, "-serial", "stdio", "-monitor", "none", "-net", "none",
            "-no-reboot"]
    if kernel is None:
        bios = tmp / "probe.bin"
        bios.write_bytes(firmware())
        argv += ["-m", "16M", "-bios", str(bios),
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    else:
        argv += ["-m", "256M", "-kernel", str(kernel),
                 "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1 rdinit=/kdbg-probe"]
    if accel == "kvm" and cpu:
        argv += ["-cpu", cpu]
    return argv


def run_probe(accel: str = "kvm", timeout: float = PROBE_TIMEOUT, qemu: str | None = None,
              kernel: Path | None = None, cpu: str | None = KVM_CPU) -> Probe:
    """Run a guest under ``accel`` and wait up to ``timeout`` s for its first words: the
    probe firmware's marker, or with ``kernel`` that kernel's ``Linux version`` line
    (it runs in protected and long mode, where the firmware never goes). ``cpu`` is
    the CPU model under KVM (virtme-ng's by default; None: QEMU's default).

    Never raises for a failing accelerator: the Probe says why it failed.
    """
    binary = qemu or shutil.which(QEMU)
    if binary is None:
        return Probe(False, f"{QEMU} not found", 0.0)
    if accel == "kvm":
        if not KVM_DEVICE.exists():
            return Probe(False, f"{KVM_DEVICE} does not exist", 0.0)
        if not os.access(KVM_DEVICE, os.R_OK | os.W_OK):
            return Probe(False, f"{KVM_DEVICE} is not readable and writable by this user", 0.0)
    marker = MARKER if kernel is None else KERNEL_MARKER
    what = "the probe firmware" if kernel is None else f"kernel {kernel.name}"
    started = time.monotonic()
    out = b""
    with tempfile.TemporaryDirectory(prefix="kdbg-accel-") as tmp:
        proc = subprocess.Popen(_guest_argv(binary, accel, Path(tmp), kernel, cpu),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            deadline = started + timeout
            while marker not in out and (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([proc.stdout], [], [], left)
                if not ready:
                    break
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
        finally:
            if proc.poll() is None:
                proc.kill()
            err = proc.communicate()[1]
    took = time.monotonic() - started
    name = accel.upper()
    if marker in out:
        return Probe(True, f"a {name} guest ({what}) printed in {took:.2f}s", took)
    if proc.returncode in (-signal.SIGKILL, None):
        return Probe(False, f"a {name} guest ({what}) printed nothing in {timeout:.0f}s "
                            "(it hangs on this host)", took)
    last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
    return Probe(False, f"QEMU exited with status {proc.returncode} under {name}: "
                        f"{last[:160]}", took)


def _probe_key(qemu: str) -> str:
    """What a cached verdict is valid for: this boot of the host and this QEMU binary."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    try:
        st = os.stat(qemu)
        binary = f"{qemu}:{st.st_size}:{int(st.st_mtime)}"
    except OSError:
        binary = qemu
    return f"{boot} {binary}"


def kvm_probe(kernel: Path | None = None, refresh: bool = False) -> Probe:
    """Does a KVM guest run here? The probe firmware first (0.1 s), then, when it
    ran and ``kernel`` is given, that kernel up to its first line. Cached per host boot
    and QEMU binary."""
    qemu = shutil.which(QEMU) or QEMU
    key = _probe_key(qemu)
    path = cache_dir() / "accel.json"
    if not refresh:
        try:
            data = json.loads(path.read_text())
            if data.get("key") == key:
                return Probe(**{**data, "cached": True})
        except (OSError, ValueError, TypeError):
            pass
    probe = run_probe("kvm", qemu=qemu)
    if probe.works and kernel is not None and kernel.exists():
        second = run_probe("kvm", qemu=qemu, kernel=kernel, timeout=KERNEL_PROBE_TIMEOUT)
        probe = Probe(second.works, f"{probe.why}; {second.why}", probe.seconds + second.seconds)
    probe = Probe(probe.works, probe.why, probe.seconds, key=key)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({k: v for k, v in asdict(probe).items() if k != "cached"}) + "\n")
    tmp.rename(path)
    return probe


def choose(requested: str = "auto", kernel: Path | None = None) -> Choice:
    """The accelerator for ``--accel``: ``tcg`` as asked, ``kvm`` only when the probe
    passes (LabError otherwise), ``auto`` KVM when it passes and TCG when it does not.
    ``kernel`` (the lab's image) is the probe's second stage."""
    if requested not in ACCELS:
        raise BadInput(f"unknown accelerator {requested!r}: one of {', '.join(ACCELS)}")
    if requested == "tcg":
        return Choice("tcg", "TCG as asked (--accel tcg)")
    return decide(requested, kvm_probe(kernel))


def decide(requested: str, probe: Probe) -> Choice:
    """``auto`` or ``kvm`` given the KVM probe's verdict (see :func:`choose`)."""
    note = " (cached verdict)" if probe.cached else ""
    if probe.works:
        return Choice("kvm", f"KVM: {probe.why}{note}")
    if requested == "kvm":
        raise LabError(f"--accel kvm, but KVM does not work here: {probe.why}",
                       hint="--accel tcg (or auto)")
    return Choice("tcg", f"TCG: KVM does not work here: {probe.why}{note}")
