"""What kdbg keeps of a lab guest's facts, and when it reads them again: a fake exec
channel records every command (the real one runs in tests/vm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdbg.errors import LabError
from kdbg.lab import guest
from kdbg.lab.guest import Completed

CORE = "ffffffff81000000 T _text\nffffffff81000000 T _stext\nffffffff81400000 T _etext\n"


class FakeGuest:
    def __init__(self) -> None:
        self.modules = "virtio_net 65536 0 - Live 0xffffffffc0000000\n"
        self.modsyms = "ffffffffc0000000 t virtnet_probe\t[virtio_net]\n"
        self.running = True
        self.commands: list[str] = []

    def run(self, name: str, argv: list[str], **kw: Any) -> Completed:
        assert self.running, "the exec channel was used while the guest was halted"
        cmd = " ".join(argv)
        self.commands.append(cmd)
        if argv == ["cat", "/proc/modules"]:
            out = self.modules
        elif argv[0] == "grep" and "-v" in argv:
            out = CORE
        elif cmd.startswith("sh -c cat /proc/modules; echo @@"):
            out = f"{self.modules}@@\n{self.modsyms}@@\n{self.modules}"
        elif argv[:2] == ["cat", "/proc/version"]:
            out = "Linux version 6.1.0-57-amd64 (debian)\n"
        else:
            return Completed(1, b"", b"no such file")
        return Completed(0, out.encode(), b"")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGuest:
    g = FakeGuest()

    class Info:
        state_dir = str(tmp_path)
        boot_id = "b00t"

    monkeypatch.setattr(guest.registry, "require", lambda name: Info())
    monkeypatch.setattr(guest, "run", g.run)
    monkeypatch.setattr(guest, "is_running", lambda name, timeout=0: g.running)
    return g


def test_kallsyms_is_read_again_only_when_modules_move(fake: FakeGuest) -> None:
    first, mods = guest.kallsyms_files("lab")
    assert "virtnet_probe" in first.read_text() and "virtio_net" in mods.read_text()
    reads = [c for c in fake.commands if "kallsyms" in c]
    assert len(reads) == 2  # the core once per boot, the modules' symbols once
    assert guest.kallsyms_files("lab")[0] == first
    assert [c for c in fake.commands if "kallsyms" in c] == reads  # nothing read again
    fake.modules += "nf_tables 311296 0 - Live 0xffffffffc0100000\n"
    fake.modsyms += "ffffffffc0100000 t nft_do_chain\t[nf_tables]\n"
    second, _ = guest.kallsyms_files("lab")
    assert second != first and not first.exists()
    assert "nft_do_chain" in second.read_text() and "_stext" in second.read_text()
    again = [c for c in fake.commands if "kallsyms" in c][len(reads):]
    assert len(again) == 1 and "grep -v" not in again[0]  # only the modules' symbols
    # a refcount changes nothing
    fake.modules = fake.modules.replace(" 0 - Live 0xffffffffc0100000", " 3 nft_x, Live "
                                        "0xffffffffc0100000")
    assert guest.kallsyms_files("lab")[0] == second


def test_a_halted_guest_gets_the_kept_copies(fake: FakeGuest) -> None:
    fake.running = False
    with pytest.raises(LabError, match="kept no copy of its kallsyms"):
        guest.kallsyms_files("lab")
    with pytest.raises(LabError, match="kept no copy of its /proc/version"):
        guest.read_fact("lab", "/proc/version")
    fake.running = True
    copy, _ = guest.kallsyms_files("lab")
    version = guest.read_fact("lab", "/proc/version")
    sections_seen = guest.module_sections("lab")
    assert guest.read_fact("lab", "/nonexistent") is None
    fake.running = False
    n = len(fake.commands)
    assert guest.kallsyms_files("lab")[0] == copy
    assert guest.read_fact("lab", "/proc/version") == version
    assert guest.read_fact("lab", "/nonexistent") is None  # unreadable, and kept so
    assert guest.module_sections("lab") == sections_seen
    assert len(fake.commands) == n  # nothing went through the exec channel
