"""file:line for drops, on a real ELF with real DWARF: a tiny "kernel" compiled here.

``net/core/drop.c`` drops through an always-inline wrapper in ``include/fake.h`` (as
``kfree_skb()`` wraps ``kfree_skb_reason()``); the line reported must be the ``.c``
line, found by addr2line from the call's return address, and the image must carry the
target's ``Linux version`` banner.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from kdbg.errors import BadInput
from kdbg.symbols.droplines import DropLines, ModuleDebug, linux_banners, source_line
from kdbg.symbols.dwarf import SourceFrame, SourceLine, elf_sections
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.trace.event import DropEvent

BANNER = "Linux version 9.9.9-test (t@example) (gcc) #1 SMP PREEMPT_DYNAMIC"
HEADER = """\
void drop(void *p);
static inline __attribute__((always_inline)) void free_it(void *p)
{
\tdrop(p);
}
"""
SOURCE = f"""\
#include "fake.h"
__attribute__((used)) const char linux_banner[] = "{BANNER}\\n";
__attribute__((noinline)) void drop(void *p) {{ __asm__ volatile("" :: "r"(p) : "memory"); }}
__attribute__((noinline)) void rcv(void *p)
{{
\tif (p)
\t\tfree_it(p);  /* DROP LINE */
}}
int main(void) {{ rcv((void *)1); return 0; }}
"""


def build(tmp: Path, debug: bool = True) -> Path:
    (tmp / "include").mkdir(exist_ok=True)
    (tmp / "net" / "core").mkdir(parents=True, exist_ok=True)
    (tmp / "include" / "fake.h").write_text(HEADER)
    src = tmp / "net" / "core" / "drop.c"
    src.write_text(SOURCE)
    out = tmp / ("vmlinux" if debug else "vmlinux-stripped")
    flags = ["-g"] if debug else []
    # a real call, as at a kernel drop site (not a tail jump)
    subprocess.run(["cc", "-O2", "-fno-optimize-sibling-calls", "-no-pie", *flags,
                    f"-I{tmp / 'include'}", "-o", str(out), str(src)],
                   check=True, capture_output=True)
    return out


def drop_line_number() -> int:
    return next(i for i, ln in enumerate(SOURCE.splitlines(), 1) if "DROP LINE" in ln)


def return_address(elf: Path, caller: str, callee: str) -> int:
    """The address after ``caller``'s call to ``callee``: what the tracer reports."""
    dis = subprocess.run(["objdump", "-dr", "--no-show-raw-insn", str(elf)], check=True,
                         capture_output=True, text=True).stdout
    body = dis.split(f"<{caller}>:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    insns = [ln for ln in body if "R_X86_64" not in ln]
    for i, line in enumerate(insns):
        # linked: "call 401140 <drop>"; a module (.o): "call 15 <rcv+0x5>" + a relocation
        reloc = body[body.index(line) + 1] if body.index(line) + 1 < len(body) else ""
        if "call" in line and (f"<{callee}>" in line or re.search(rf"R_X86_64_\w+\s+{callee}\b",
                                                                   reloc)):
            return int(insns[i + 1].split(":")[0], 16)
    raise AssertionError(f"no call to {callee} in {caller}")


def kallsyms_for(elf: Path, shift: int = 0) -> Kallsyms:
    """A /proc/kallsyms for the image loaded ``shift`` bytes above its link address."""
    nm = subprocess.run(["nm", str(elf)], check=True, capture_output=True, text=True).stdout
    lines = [f"{int(a, 16) + shift:016x} T {name}" for a, t, name in
             (ln.split() for ln in nm.splitlines() if len(ln.split()) == 3) if t in "Tt"]
    lines.append(f"{elf_sections(elf)['.text'].address + shift:016x} T _stext")
    return Kallsyms.parse("\n".join(lines) + "\n")


def event(address: int, module: str | None = None) -> DropEvent:
    return DropEvent.from_json({
        "time_ns": 1, "cpu": 0, "pid": 1, "comm": "t", "reason": "NO_SOCKET",
        "reason_code": 2, "address": f"0x{address:x}", "symbol": "rcv", "offset": 0x10,
        "module": module,
    })


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("fakekernel"))


def test_the_line_is_the_c_call_site_not_the_inline_wrapper(kernel: Path) -> None:
    ret = return_address(kernel, "rcv", "drop")
    lines = DropLines(kernel, lambda: kallsyms_for(kernel), BANNER + "\n")
    try:
        ev = lines.annotate(event(ret))
    finally:
        lines.close()
    assert (ev.file, ev.line) == ("net/core/drop.c", drop_line_number())
    assert lines.error is None


def test_kaslr_offset_is_taken_off(kernel: Path) -> None:
    shift = 0x1E00000
    ret = return_address(kernel, "rcv", "drop") + shift
    lines = DropLines(kernel, lambda: kallsyms_for(kernel, shift), BANNER)
    lines.warm()
    ev = lines.annotate(event(ret))
    lines.close()
    assert (ev.file, ev.line) == ("net/core/drop.c", drop_line_number())


def test_module_addresses_without_their_debug_file_are_left_alone(kernel: Path) -> None:
    lines = DropLines(kernel, lambda: kallsyms_for(kernel), BANNER)
    ev = event(return_address(kernel, "rcv", "drop"), module="nf_tables")
    assert lines.annotate(ev) is ev


def test_module_location_is_looked_up_in_its_debug_ko(kernel: Path, tmp_path: Path) -> None:
    """A module is a relocatable object: symbol+offset is an offset in its section."""
    src = kernel.parent / "net" / "core" / "drop.c"
    tree = tmp_path / "kernel" / "net" / "fake"
    tree.mkdir(parents=True)
    ko = tree / "fake-mod.ko"  # a dash in the file name, an underscore in kallsyms
    subprocess.run(["cc", "-O2", "-fno-optimize-sibling-calls", "-g", "-c",
                    f"-I{kernel.parent / 'include'}", "-o", str(ko), str(src)],
                   check=True, capture_output=True)
    dis = subprocess.run(["objdump", "-d", str(ko)], check=True, capture_output=True,
                         text=True).stdout
    rcv = int(re.search(r"^([0-9a-f]+) <rcv>:", dis, re.M)[1], 16)  # type: ignore[index]
    offset = return_address(ko, "rcv", "drop") - rcv
    lines = DropLines(kernel, lambda: kallsyms_for(kernel), BANNER, modules=tmp_path / "kernel")
    ev = DropEvent.from_json({**event(0xFFFFFFFFC0001234).to_json(), "module": "fake_mod",
                              "symbol": "rcv", "offset": offset})
    try:
        got = lines.annotate(ev)
    finally:
        lines.close()
    assert (got.file, got.line) == ("net/core/drop.c", drop_line_number())
    unknown = DropEvent.from_json({**ev.to_json(), "symbol": "no_such_function"})
    assert lines.annotate(unknown).file is None


def test_another_build_is_refused(kernel: Path) -> None:
    assert linux_banners(kernel) == [BANNER]
    with pytest.raises(BadInput, match="not the target's kernel: it is 9.9.9-test, "
                                       "the target runs 6.1.0-56-amd64"):
        DropLines(kernel, lambda: kallsyms_for(kernel),
                  "Linux version 6.1.0-56-amd64 (d@d) #1 SMP")
    with pytest.raises(BadInput, match="a different build of 9.9.9-test"):
        DropLines(kernel, lambda: kallsyms_for(kernel), BANNER.replace("#1", "#2"))


def test_no_dwarf_is_refused(tmp_path: Path) -> None:
    plain = build(tmp_path, debug=False)
    with pytest.raises(BadInput, match="has no DWARF"):
        DropLines(plain, lambda: kallsyms_for(plain), BANNER)
    with pytest.raises(BadInput, match="no vmlinux at"):
        DropLines(tmp_path / "nope", lambda: kallsyms_for(plain), BANNER)


def test_frame_choice() -> None:
    chain = SourceLine(0, (SourceFrame("kfree_skb", "include/linux/skbuff.h", 1200),
                           SourceFrame("udp_queue", "net/ipv4/udp.c", 2100),
                           SourceFrame("__udp4_lib_rcv", "net/ipv4/udp.c", 2552)))
    assert source_line(chain) == ("net/ipv4/udp.c", 2100)
    only_headers = SourceLine(0, (SourceFrame("a", "include/a.h", 1),
                                  SourceFrame("b", "include/b.h", 2)))
    assert source_line(only_headers) == ("include/b.h", 2)


def test_module_debug_gdb_command() -> None:
    m = ModuleDebug("nf_tables", Path("/d/nf_tables.ko"),
                    ((".bss", 0xFFFFFFFFC03A0000), (".init.text", 0xFFFFFFFFC03D2000),
                     (".text", 0xFFFFFFFFC0370000)))
    assert m.gdb_command() == ("add-symbol-file /d/nf_tables.ko 0xffffffffc0370000 "
                               "-s .bss 0xffffffffc03a0000")
