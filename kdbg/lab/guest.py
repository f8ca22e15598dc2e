"""Working with a running lab's guest: run commands, read kallsyms and KASLR, console, KGDBoE."""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pexpect

from kdbg.errors import BadInput, LabError
from kdbg.lab import channel, command, kinds, registry
from kdbg.lab.channel import ExecSession
from kdbg.lab.kernel import Kernel, Progress, image_version_string, quiet
from kdbg.lab.source import KernelSource
from kdbg.lab.wiring import KGDBOE_UDP_PORT, wiring
from kdbg.symbols.kallsyms import modules_key


def kdbg_argv() -> list[str]:
    """How the guest runs this very kdbg: the host's interpreter and package, which the
    guest sees at the same paths (the host's root is its read-only root). Never a bare
    ``kdbg`` from the guest's PATH, which may be another checkout's."""
    return [sys.executable, "-m", "kdbg"]


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


def exec_(name: str, argv: list[str], *, stdout: Callable[[bytes], None] | None = None,
          stderr: Callable[[bytes], None] | None = None,
          stdin: BinaryIO | bytes | None = None, env: dict[str, str] | None = None,
          cwd: str = "/", timeout: float | None = None, forward_sigint: bool = True) -> int:
    """Run ``argv`` in lab ``name``, streaming output to the callbacks; returns its status.

    Defaults write to this process's stdout/stderr as chunks arrive. ``timeout`` bounds
    each wait for output (None: wait forever, as a debugger may hold the guest stopped).
    """
    info = registry.require(name)
    if not argv:
        raise BadInput("no command given")

    def write(stream: Any) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            stream.buffer.write(data)
            stream.buffer.flush()

        return sink

    return channel.run_streaming(
        info.exec_access(),
        argv,
        stdout=stdout or write(sys.stdout),
        stderr=stderr or write(sys.stderr),
        stdin=stdin,
        env=env,
        cwd=cwd,
        timeout=timeout,
        forward_sigint=forward_sigint,
    )


def run(name: str, argv: list[str], *, timeout: float | None = 120.0,
        stdin: bytes | None = None) -> Completed:
    """Run ``argv`` in lab ``name`` and collect its output (for short commands)."""
    out: list[bytes] = []
    err: list[bytes] = []
    # kdbg's own short commands: Ctrl-C is the caller's, not the remote command's
    status = exec_(name, argv, stdout=out.append, stderr=err.append, stdin=stdin,
                   timeout=timeout, forward_sigint=False)
    return Completed(status, b"".join(out), b"".join(err))


def stream(name: str, argv: list[str], *, stdin: bool = False,
           env: dict[str, str] | None = None) -> ExecSession:
    """Start ``argv`` in lab ``name`` and return the session to iterate (long streams).

    ``for chunk in session: ...`` yields :class:`kdbg.lab.channel.Chunk`; afterwards
    ``session.status`` is the exit status. Closing the session kills the command.
    """
    info = registry.require(name)
    return ExecSession(info.exec_access(), argv, stdin=stdin, env=env)


STOPPED_PING = 3.0  # s: a running guest's agent answers a ping well within this


def is_running(name: str, timeout: float = STOPPED_PING) -> bool:
    """Whether lab ``name``'s guest answers now. A guest halted by a debugger (or left
    halted by one that died) does not: its exec channel pauses until it runs again, so
    facts must then come from the copies kdbg kept (see :func:`read_fact`)."""
    info = registry.require(name)
    try:
        channel.ping(info.exec_access(), timeout=timeout)
    except (OSError, LabError):
        return False
    return True


def _facts_stem(info: registry.LabInfo) -> str:
    return f"fact-{info.boot_id or 'unknown'}"


def read_fact(name: str, path: str, *, running: bool | None = None,
              variant: str = "") -> bytes | None:
    """The bytes of ``path`` in lab ``name``'s guest (None if it cannot be read), kept in
    the lab's state directory for this boot (and ``variant``: give the module list's
    kallsyms copy for a fact that changes with modules, like the kprobe blocklist). When
    the guest is stopped the kept copy is returned; with none, LabError."""
    info = registry.require(name)
    digest = hashlib.sha256(f"{path}\0{variant}".encode()).hexdigest()[:12]
    keep = Path(info.state_dir) / f"{_facts_stem(info)}-{digest}"
    if running is None:
        running = is_running(name)
    if not running:
        if keep.exists():
            kept = keep.read_bytes()
            return None if kept == _UNREADABLE else kept
        raise LabError(f"lab {name!r}'s guest is stopped (halted in a debugger?) and kdbg "
                       f"kept no copy of its {path}",
                       hint=f"attach to resume it: kdbg gdb attach --lab {name}, then quit")
    done = run(name, ["cat", path], timeout=120.0)
    data = done.stdout if done.status == 0 else None
    _write_bytes(keep, _UNREADABLE if data is None else data)
    return data


_UNREADABLE = b"\0kdbg: unreadable\0"


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


def kallsyms_files(name: str, *, running: bool | None = None) -> tuple[Path, Path]:
    """Copies of lab ``name``'s ``/proc/kallsyms`` and ``/proc/modules`` as they are now.

    The copies live in the lab's state directory, keyed by boot and by the loaded
    modules (names and addresses): while no module loads or unloads, a call costs one
    read of ``/proc/modules``. The core kernel's symbols are read once per boot; after
    a module change only the modules' symbols are read again (between two reads of
    the module list, retried until they agree). The modules file sits next to the
    kallsyms copy, where :meth:`kdbg.symbols.kallsyms.Kallsyms.load` finds it.
    Needs the guest running (the exec channel): read facts before stopping it.
    """
    info = registry.require(name)
    state = Path(info.state_dir)
    boot = info.boot_id or "unknown"  # the lab runs with -no-reboot: one boot id
    if not (is_running(name) if running is None else running):
        kept = sorted((p for p in state.glob(f"kallsyms-{boot}-*.txt")
                       if p.with_suffix(".modules").exists()), key=lambda p: p.stat().st_mtime)
        if not kept:
            raise LabError(f"lab {name!r}'s guest is stopped (halted in a debugger?) and kdbg "
                           "kept no copy of its kallsyms",
                           hint=f"attach to resume it: kdbg gdb attach --lab {name}, then quit")
        return kept[-1], kept[-1].with_suffix(".modules")
    now = run(name, ["cat", "/proc/modules"], timeout=120.0).check().stdout.decode()
    copy = state / f"kallsyms-{boot}-{modules_key(now)}.txt"
    if copy.exists() and copy.with_suffix(".modules").exists():
        return copy, copy.with_suffix(".modules")
    core = state / f"kallsyms-{boot}-core.txt"
    if not core.exists():
        text = run(name, ["grep", "-v", r"\]$", "/proc/kallsyms"],
                   timeout=120.0).check().stdout.decode()
        if not any(ln.endswith(" T _text") and ln.strip("0")[0] != " "
                   for ln in text.splitlines()):
            raise LabError("the guest's /proc/kallsyms hides addresses (kptr_restrict?)")
        for old in state.glob("kallsyms-*-core.txt"):
            old.unlink(missing_ok=True)
        _write(core, text)
    script = r"cat /proc/modules; echo @@; grep '\]$' /proc/kallsyms; echo @@; cat /proc/modules"
    for _ in range(5):
        out = run(name, ["sh", "-c", script], timeout=120.0).check().stdout.decode()
        before, modsyms, after = out.split("@@\n")
        if modules_key(before) == modules_key(after):
            break
    else:
        raise LabError(f"lab {name!r}: modules kept loading while kallsyms was read")
    copy = state / f"kallsyms-{boot}-{modules_key(before)}.txt"
    for old in [*state.glob("kallsyms-*.modules"), *state.glob("kallsyms-*.txt")]:
        if old != core:
            old.unlink(missing_ok=True)
    _write(copy.with_suffix(".modules"), before)
    _write(copy, core.read_text() + modsyms)
    return copy, copy.with_suffix(".modules")


def module_sections(name: str, only: Collection[str] | None = None, *,
                    running: bool | None = None, copy: Path | None = None) -> str:
    """``/sys/module/*/sections`` of lab ``name``'s modules (of those in ``only``), as
    ``grep -r .`` prints them. The full listing is kept with the kallsyms copy of the
    same module list (``copy``, when the caller has it), and returned when the guest is
    stopped."""
    running = is_running(name) if running is None else running
    if copy is None:
        copy, _ = kallsyms_files(name, running=running)
    keep = copy.with_suffix(".sections")
    if not running:
        if keep.exists():
            return keep.read_text()
        raise LabError(f"lab {name!r}'s guest is stopped (halted in a debugger?) and kdbg "
                       "kept no copy of its module sections")
    dirs = "/sys/module/*/sections/" if only is None else \
        " ".join(f"/sys/module/{m}/sections/" for m in sorted(only))
    text = run(name, ["sh", "-c", f"grep -r . {dirs} 2>/dev/null"]).stdout.decode(
        errors="replace")
    if only is None:
        _write(keep, text)
    return text


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def kallsyms(name: str) -> str:
    """The guest's ``/proc/kallsyms`` text as it is now (see :func:`kallsyms_files`)."""
    return kallsyms_files(name)[0].read_text()


def symbol_address(name: str, symbol: str) -> int:
    """Address of ``symbol`` (a text or data symbol of vmlinux) in lab ``name``'s kernel."""
    for line in kallsyms(name).splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == symbol and len(parts) == 3:
            return int(parts[0], 16)
    raise BadInput(f"symbol {symbol} is not in lab {name!r}'s kallsyms")


def kaslr(name: str) -> Kaslr:
    """Whether the guest kernel is randomised, and by how much (from ``_text``)."""
    info = registry.require(name)
    text = symbol_address(name, "_text")
    return Kaslr(enabled=not info.nokaslr, text=text, offset=text - X86_64_TEXT_DEFAULT)


def vmlinux(name: str, progress: Callable[[str], None] | None = None) -> Path:
    """The DWARF vmlinux matching lab ``name``'s kernel: the one its record names, else
    its kind's (fetched for Debian kernels)."""
    info = registry.get(name)
    if info.vmlinux:
        return Path(info.vmlinux)
    kind = kinds.kind_of_lab(info.kernel_kind)
    found = kind.debug_vmlinux(info.release, progress or quiet) if kind else None
    if found is not None:
        return found
    raise LabError(f"no vmlinux with debug info known for lab {name!r} ({info.image})")


def module_debug(name: str) -> Path | None:
    """Where debug ``.ko`` files of lab ``name``'s modules are, if anywhere: the ones
    fetched with Debian's vmlinux, or the build tree of a built kernel (as its kind says)."""
    info = registry.get(name)
    kind = kinds.kind_of_lab(info.kernel_kind)
    return kind.module_debug(info.release, info.vmlinux) if kind else None


VERSION_PATH = "/proc/version"


def kernel_source(name: str = "default", *, progress: Progress = quiet, fetch: bool = True,
                  running: str | None = None) -> KernelSource:
    """Where lab ``name``'s kernel source and Linux's gdb scripts are, as its kind says
    (fetched and prepared once into the cache with ``fetch``; without, the cache alone
    answers and the note says what a fetch would do).

    ``running`` is the guest's ``/proc/version`` when the caller has read it (the
    debugger's facts); else the copy kdbg kept of it for this boot, else the lab's
    bzImage's header, which holds the same string (no round trip to a guest that may be
    halted). Raises BadInput for an unknown lab, LabError when a fetch or make fails.
    """
    info = registry.get(name)
    kind = kinds.kind_of_lab(info.kernel_kind)
    if kind is None:
        return KernelSource(note=f"lab {name!r} records a kernel kind kdbg does not know "
                                 f"({info.kernel_kind}): no source is known")
    image = Path(info.image)
    kernel = Kernel(info.kernel_kind, info.release, image,
                    vmlinux=Path(info.vmlinux) if info.vmlinux else None)
    return kind.source(kernel, running or _running_version(info) or image_version_string(image),
                       progress=progress, fetch=fetch)


def _running_version(info: registry.LabInfo) -> str | None:
    """The copy of the guest's /proc/version kept for this boot, if kdbg read it."""
    if not info.alive:
        return None
    try:
        data = read_fact(info.name, VERSION_PATH, running=False)
    except LabError:
        return None
    return data.decode(errors="replace") if data else None


def console(name: str) -> Any:
    """A pexpect child attached to the lab's interactive serial console (ttyS2, a root shell).

    Call ``.interact()`` to hand it to a user (Ctrl-] leaves), or ``.sendline``/``.expect``.
    """
    info = registry.require(name)
    socat = shutil.which("socat")
    if not socat:
        raise LabError("socat not found", hint="apt-get install socat")
    return pexpect.spawn(
        socat, ["-,raw,echo=0", f"UNIX-CONNECT:{info.console_socket}"], timeout=30, encoding=None
    )


def kgdboe_load(name: str, module: Path, udp_port: int = KGDBOE_UDP_PORT) -> Completed:
    """insmod a KGDBoE module the user built, with the parameters this lab needs.

    ``kallsyms_lookup_name_address`` comes from the guest's kallsyms, ``device_name``
    is the e1000 that sits on the lab's namespace tap. kdbg never builds KGDBoE.
    """
    info = registry.require(name)
    if not wiring(info.transport).own_netns:
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
