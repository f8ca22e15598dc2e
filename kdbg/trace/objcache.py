"""Compiled BPF programs, kept per program text and kernel, loaded without bcc.

bcc compiles C with clang in process: about 0.45 s, and 200 MB of LLVM mapped for the
rest of the run. A program's instructions depend only on its text (every struct offset
and filter is in it, filled from this kernel's BTF and tracefs) and the headers it was
compiled against, so kdbg compiles each text once, in a child (:mod:`kdbg.trace.bccbuild`),
and keeps the result under ``~/.cache/kdbg/bpf``, keyed by the text, the kernel's
version and its headers. Loading one is what bcc does after clang: create its maps, put
their fds in the instructions that load them, load, attach.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbg.dirs import BPF_DIR, cache_dir
from kdbg.errors import BpfLoadError, ProbeUnavailable
from kdbg.trace import bpfsys, offsets

FORMAT = 1  # of a cache entry; bumped when the entry's shape changes
CFLAGS = [f"-I{BPF_DIR}", "-Wno-unused-variable"]
EXIT_COMPILE, EXIT_NO_BCC = 3, 4  # kdbg.trace.bccbuild's exit statuses
COMPILE_TIMEOUT = 600.0  # bcc in a TCG guest takes about 9 s; a loaded host much more
VERIFIER_LOG = 4 << 20


@dataclass(frozen=True)
class MapSpec:
    """A map the program declares, as bcc created it."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int


@dataclass(frozen=True)
class Compiled:
    """A compiled program text: its maps, and per function its instructions and which
    instructions load which map."""

    license: str
    maps: tuple[MapSpec, ...]
    insns: dict[str, bytes]
    map_loads: dict[str, tuple[tuple[int, str], ...]]

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Compiled:
        progs = doc["programs"]
        return cls(doc["license"], tuple(MapSpec(**m) for m in doc["maps"]),
                   {f: base64.b64decode(p["insns"]) for f, p in progs.items()},
                   {f: tuple((int(i), str(n)) for i, n in p["maps"]) for f, p in progs.items()})


def summarize(log: str) -> str:
    """The compiler's or verifier's complaint in one line."""
    lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith(";")]
    errors = [ln for ln in lines if "error" in ln.lower()]
    pick = errors[:2] or lines[-2:]
    return " | ".join(s.strip() for s in pick) or "no diagnostics"


def check_headers() -> None:
    """ProbeUnavailable unless bcc will find kernel headers to compile against."""
    build = Path("/lib/modules", os.uname().release, "build")
    if (build / "include").exists() or Path("/sys/kernel/kheaders.tar.xz").exists():
        return
    raise ProbeUnavailable(
        f"bcc needs kernel headers and {build} is missing",
        hint="run scripts/setup.sh, which installs or links Debian's headers",
    )


def headers_dir() -> str:
    """Where bcc finds this kernel's headers (part of the cache key)."""
    return os.path.realpath(Path("/lib/modules", os.uname().release, "build"))


@functools.cache
def own_headers() -> str:
    """A digest of kdbg's own headers (``bpf/*.h``), which the texts include: a program
    compiled before one of them changed is not the program of the same text now."""
    digest = hashlib.sha256()
    for path in sorted(BPF_DIR.glob("*.h")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_key(text: str, funcs: list[str]) -> str:
    """The entry's name: the text, its functions, kdbg's headers it includes, the kernel
    and its headers."""
    try:
        version = Path("/proc/version").read_text()
    except OSError:
        version = os.uname().version
    doc = json.dumps([FORMAT, text, sorted(funcs), own_headers(), version, headers_dir(),
                      CFLAGS])
    return hashlib.sha256(doc.encode()).hexdigest()[:32]


def _entry(text: str, funcs: list[str]) -> Path:
    return cache_dir("bpf") / f"{cache_key(text, funcs)}.json"


def is_cached(text: str, attachments: list[tuple[str, str]]) -> bool:
    """Whether :func:`load` finds ``text`` compiled (else bcc compiles it: seconds, tens
    of them in a TCG guest)."""
    return _entry(text, sorted({fn for _, fn in attachments})).exists()


def compiled(text: str, funcs: list[str], what: str) -> Compiled:
    """The program for ``text``: from the cache, else compiled by bcc in a child and
    cached. Compile errors and a missing bcc are one line each."""
    path = _entry(text, funcs)
    try:
        return Compiled.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    check_headers()
    proc = subprocess.run([sys.executable, "-m", "kdbg.trace.bccbuild", *funcs], input=text,
                          capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    reason = proc.stderr.strip().splitlines()[-1:] or [f"status {proc.returncode}"]
    if proc.returncode == EXIT_NO_BCC:
        raise ProbeUnavailable(
            reason[0], hint="install python3-bpfcc and run kdbg from a venv made with "
            "/usr/bin/python3 -m venv --system-site-packages (scripts/setup.sh does)")
    if proc.returncode != 0:
        raise BpfLoadError(f"bcc could not compile the {what}: {reason[0]}")
    doc = json.loads(proc.stdout)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
    return Compiled.from_json(doc)


def patched(insns: bytes, loads: tuple[tuple[int, str], ...], fds: dict[str, int]) -> bytes:
    """``insns`` with each map load's immediate set to the new map's fd."""
    code = bytearray(insns)
    for index, name in loads:
        struct.pack_into("<i", code, index * 8 + 4, fds[name])
    return bytes(code)


class Loaded:
    """A compiled program's maps created and its functions loaded and attached.
    :meth:`close` detaches and frees all of it."""

    def __init__(self, prog: Compiled, attachments: list[tuple[str, str]], what: str) -> None:
        self.fds: dict[str, int] = {}
        self.specs = {m.name: m for m in prog.maps}
        self._links: list[int] = []
        self._progs: list[int] = []
        self.runnable: dict[str, int] = {}  # "run:" functions: loaded, never attached
        self._btf_fns: dict[str, tuple[int, int | None]] = {}  # "btf:" fn -> (prog, link)
        self._compiled = prog
        try:
            for spec in prog.maps:
                self.fds[spec.name] = bpfsys.map_create(
                    spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags,
                    spec.name)
            for tp, fn in attachments:
                self._attach(prog, tp, fn, what)
        except BaseException:
            self.close()
            raise

    def _attach(self, prog: Compiled, tp: str, fn: str, what: str) -> None:
        how, _, name = (tp.rpartition(":") if tp.startswith(("raw:", "btf:", "run:"))
                        else ("", "", tp))
        kind = {"raw": bpfsys.PROG_RAW_TRACEPOINT, "btf": bpfsys.PROG_TRACING,
                "run": bpfsys.PROG_RAW_TRACEPOINT}.get(how, bpfsys.PROG_TRACEPOINT)
        btf_id = offsets.tracepoint_args(name, {})["BTF_ID"] if how == "btf" else 0
        code = patched(prog.insns[fn], prog.map_loads[fn], self.fds)
        fd, _ = bpfsys.prog_load(kind, code, fn, prog.license, btf_id=btf_id)
        if fd < 0:  # load again for the verifier's reasons
            _, log = bpfsys.prog_load(kind, code, fn, prog.license, VERIFIER_LOG, btf_id)
            raise BpfLoadError(f"the kernel refused the {what}: {os.strerror(-fd)}: "
                               f"{summarize(log)}")
        self._progs.append(fd)
        if how == "run":
            self.runnable[fn] = fd
            return
        try:
            if how == "raw":
                link = bpfsys.raw_tracepoint_open(name, fd)
            elif how == "btf":
                link = bpfsys.raw_tracepoint_open(None, fd)
                self._btf_fns[fn] = (fd, link)
            else:
                link = bpfsys.perf_tracepoint_attach(tracepoint_id(tp), fd)
        except OSError as err:
            raise BpfLoadError(f"cannot attach the {what} to {tp}: {err.strerror}") from None
        self._links.append(link)

    def test_run(self, fn: str, args: list[int]) -> int:
        """Run "run:" function ``fn`` once in the calling thread (``BPF_PROG_TEST_RUN``)
        with ``args`` as its raw tracepoint arguments; its return value."""
        try:
            return bpfsys.prog_test_run(self.runnable[fn], args)
        except bpfsys.BpfCallError as err:
            raise BpfLoadError(f"cannot run {fn}: {err.strerror}") from None

    def attach_fexit(self, fn: str, target_fd: int, func_btf_id: int, what: str) -> int:
        """Load ``fn`` as an fexit program on the BPF program behind ``target_fd`` (its
        main function, ``func_btf_id`` in its own BTF) and attach it; the link's fd, for
        :meth:`unlink`."""
        code = patched(self._compiled.insns[fn], self._compiled.map_loads[fn], self.fds)
        fd, _ = bpfsys.prog_load(bpfsys.PROG_TRACING, code, fn, self._compiled.license,
                                 btf_id=func_btf_id, target_fd=target_fd)
        if fd < 0:
            _, log = bpfsys.prog_load(bpfsys.PROG_TRACING, code, fn, self._compiled.license,
                                      VERIFIER_LOG, func_btf_id, target_fd)
            raise BpfLoadError(f"the kernel refused the {what}: {os.strerror(-fd)}: "
                               f"{summarize(log)}")
        try:
            link = bpfsys.raw_tracepoint_open(None, fd)
        except OSError as err:
            os.close(fd)
            raise BpfLoadError(f"cannot attach the {what}: {err.strerror}") from None
        self._progs.append(fd)
        self._links.append(link)
        return link

    def unlink(self, link: int) -> None:
        """Detach one link :meth:`attach_fexit` made (its program stays loaded until
        :meth:`close`)."""
        if link in self._links:
            self._links.remove(link)
            os.close(link)

    def pause(self, fns: list[str]) -> None:
        """Detach the BTF-typed functions ``fns`` (loaded and attached as ``btf:``): they
        stop running until :meth:`resume`."""
        for fn in fns:
            prog, link = self._btf_fns[fn]
            if link is not None:
                self._btf_fns[fn] = (prog, None)
                self.unlink(link)

    def resume(self, fns: list[str]) -> None:
        """Attach again the functions :meth:`pause` detached."""
        for fn in fns:
            prog, link = self._btf_fns[fn]
            if link is None:
                try:
                    link = bpfsys.raw_tracepoint_open(None, prog)
                except OSError as err:
                    raise BpfLoadError(f"cannot attach {fn} again: {err.strerror}") from None
                self._links.append(link)
                self._btf_fns[fn] = (prog, link)

    def detach(self) -> None:
        """Stop running the programs; the maps stay readable."""
        links, self._links = self._links, []
        self._btf_fns = {fn: (prog, None) for fn, (prog, _link) in self._btf_fns.items()}
        for fd in links:
            os.close(fd)

    def close(self) -> None:
        """Detach, unload, free the maps (idempotent)."""
        self.detach()
        for fd in [*self._progs, *self.fds.values()]:
            os.close(fd)
        self._progs, self.fds, self.runnable = [], {}, {}


def tracepoint_id(tp: str) -> int:
    """The tracefs id of tracepoint ``category:name``."""
    cat, name = tp.split(":", 1)
    for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        try:
            return int(Path(root, "events", cat, name, "id").read_text())
        except OSError:
            continue
    raise ProbeUnavailable(f"no tracepoint {tp} in tracefs",
                           hint="mount -t tracefs nodev /sys/kernel/tracing")


def load(text: str, attachments: list[tuple[str, str]], what: str,
         later: tuple[str, ...] = ()) -> Loaded:
    """Compile (or take from the cache) ``text`` and attach each ``(tracepoint, function)``:
    ``system:name`` through the tracepoint's perf event, ``raw:NAME`` as a raw tracepoint,
    ``btf:NAME`` as a BTF-typed raw tracepoint (tp_btf); ``run:NAME`` loads a raw
    tracepoint program without attaching it, for :meth:`Loaded.test_run`. ``later``:
    functions compiled too, for :meth:`Loaded.attach_fexit`."""
    prog = compiled(text, sorted({fn for _, fn in attachments} | set(later)), what)
    try:
        return Loaded(prog, attachments, what)
    except bpfsys.BpfCallError as err:
        raise BpfLoadError(f"cannot load the {what}: {err.strerror}") from None
