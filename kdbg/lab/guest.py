"""Working with a running lab's guest: run commands, read kallsyms and KASLR, console, KGDBoE."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kdbg.errors import BadInput, LabError
from kdbg.lab import channel, command, vm
from kdbg.lab.channel import ExecSession

# x86-64's __START_KERNEL_map + CONFIG_PHYSICAL_START (16 MiB), where _text sits without KASLR.
X86_64_TEXT_DEFAULT = 0xFFFFFFFF81000000


@dataclass(frozen=True)
class Completed:
    """A finished guest command's exit status and captured output."""

    status: int
    stdout: bytes
    stderr: bytes

    def check(self) -> Completed:
        """Raise LabError when the command failed."""
        if self.status != 0:
            err = self.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise LabError(f"guest command failed (exit {self.status}): {' / '.join(err)}")
        return self


@dataclass(frozen=True)
class Kaslr:
    """The guest kernel's KASLR state: ``offset`` is ``_text`` minus its link address."""

    enabled: bool  # booted without nokaslr
    text: int  # address of _text from /proc/kallsyms
    offset: int


def exec_(
    name: str,
    argv: list[str],
    *,
    stdout: Callable[[bytes], None] | None = None,
    stderr: Callable[[bytes], None] | None = None,
    stdin: BinaryIO | bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: str = "/",
    timeout: float | None = None,
) -> int:
    """Run ``argv`` in lab ``name``, streaming output to the callbacks; returns its status.

    Defaults write to this process's stdout/stderr as chunks arrive. ``timeout`` bounds
    each wait for output (None: wait forever, as a debugger may hold the guest stopped).
    """
    info = vm.require(name)
    if not argv:
        raise BadInput("no command given")

    def write(stream: Any) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            stream.buffer.write(data)
            stream.buffer.flush()

        return sink

    return channel.run_streaming(
        info.exec_port,
        argv,
        stdout=stdout or write(sys.stdout),
        stderr=stderr or write(sys.stderr),
        stdin=stdin,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def run(name: str, argv: list[str], *, timeout: float | None = 120.0,
        stdin: bytes | None = None) -> Completed:
    """Run ``argv`` in lab ``name`` and collect its output (for short commands)."""
    out: list[bytes] = []
    err: list[bytes] = []
    status = exec_(name, argv, stdout=out.append, stderr=err.append, stdin=stdin, timeout=timeout)
    return Completed(status, b"".join(out), b"".join(err))


def stream(name: str, argv: list[str], *, stdin: bool = False,
           env: dict[str, str] | None = None) -> ExecSession:
    """Start ``argv`` in lab ``name`` and return the session to iterate (long streams).

    ``for chunk in session: ...`` yields :class:`kdbg.lab.channel.Chunk`; afterwards
    ``session.status`` is the exit status. Closing the session kills the command.
    """
    info = vm.require(name)
    return ExecSession(info.exec_port, argv, stdin=stdin, env=env)


def kallsyms(name: str) -> str:
    """The guest's ``/proc/kallsyms`` text, read once per boot and cached in the lab's state."""
    info = vm.require(name)
    # The boot id recorded at up() is the only one: the lab runs with -no-reboot.
    cache = Path(info.state_dir) / f"kallsyms-{info.boot_id or 'unknown'}.txt"
    if cache.exists():
        return cache.read_text()
    text = run(name, ["cat", "/proc/kallsyms"], timeout=120.0).check().stdout.decode()
    if not any(ln.endswith(" T _text") and ln.strip("0")[0] != " " for ln in text.splitlines()):
        raise LabError("the guest's /proc/kallsyms hides addresses (kptr_restrict?)")
    for old in Path(info.state_dir).glob("kallsyms-*.txt"):
        old.unlink(missing_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(cache)
    return text


def symbol_address(name: str, symbol: str) -> int:
    """Address of ``symbol`` (a text or data symbol of vmlinux) in lab ``name``'s kernel."""
    for line in kallsyms(name).splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == symbol and len(parts) == 3:
            return int(parts[0], 16)
    raise BadInput(f"symbol {symbol} is not in lab {name!r}'s kallsyms")


def kaslr(name: str) -> Kaslr:
    """Whether the guest kernel is randomised, and by how much (from ``_text``)."""
    info = vm.require(name)
    text = symbol_address(name, "_text")
    return Kaslr(enabled=not info.nokaslr, text=text, offset=text - X86_64_TEXT_DEFAULT)


def vmlinux(name: str, progress: Callable[[str], None] | None = None) -> Path:
    """The DWARF vmlinux matching lab ``name``'s kernel (fetched for Debian kernels)."""
    info = vm.get(name)
    if info.vmlinux:
        return Path(info.vmlinux)
    if info.kernel_kind == "debian":
        from kdbg.lab.kernel import debian_vmlinux

        return debian_vmlinux(info.release, progress or (lambda _: None))
    raise LabError(f"no vmlinux with debug info known for lab {name!r} ({info.image})")


def module_debug(name: str) -> Path | None:
    """Where debug ``.ko`` files of lab ``name``'s modules are, if anywhere: the ones
    fetched with Debian's vmlinux, or the build tree of a built kernel."""
    info = vm.get(name)
    if info.kernel_kind == "debian":
        from kdbg.lab.kernel import debian_module_debug

        return debian_module_debug(info.release)
    if info.kernel_kind == "build" and info.vmlinux:
        return Path(info.vmlinux).parent
    return None


def console(name: str) -> Any:
    """A pexpect child attached to the lab's interactive serial console (ttyS2, a root shell).

    Call ``.interact()`` to hand it to a user (Ctrl-] leaves), or ``.sendline``/``.expect``.
    """
    import pexpect

    info = vm.require(name)
    socat = shutil.which("socat")
    if not socat:
        raise LabError("socat not found", hint="apt-get install socat")
    return pexpect.spawn(
        socat, ["-,raw,echo=0", f"UNIX-CONNECT:{info.console_socket}"], timeout=30, encoding=None
    )


def kgdboe_load(name: str, module: Path, udp_port: int = command.KGDBOE_UDP_PORT) -> Completed:
    """insmod a KGDBoE module the user built, with the parameters this lab needs.

    ``kallsyms_lookup_name_address`` comes from the guest's kallsyms, ``device_name``
    is the e1000 that sits on the lab's namespace tap. kdbg never builds KGDBoE.
    """
    info = vm.require(name)
    if info.transport != "kgdboe":
        raise BadInput(f"lab {name!r} uses {info.transport}, not kgdboe",
                       hint=f"kdbg lab up --name {name} --transport kgdboe --kernel built")
    module = module.expanduser().resolve()
    if not module.is_file() or module.suffix != ".ko":
        raise BadInput(f"{module} is not a kernel module (.ko) file")
    address = symbol_address(name, "kallsyms_lookup_name")
    found = run(name, ["sh", "-c",
                       f"grep -il '^{command.OE_MAC}$' /sys/class/net/*/address"]).check()
    device = Path(found.stdout.decode().split()[0]).parent.name
    argv = ["insmod", str(module), f"kallsyms_lookup_name_address=0x{address:x}",
            f"device_name={device}", f"udp_port={udp_port}"]
    return run(name, argv, timeout=120.0).check()
