"""One owner for every fact of a lab target: each read once per attach, read again
after the module list changed, and answered from kept copies while the guest is halted."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from kdbg.debugger import attach
from kdbg.debugger.livemodules import LabModules
from kdbg.symbols.evidence import BLOCKLIST_PATH
from kdbg.targetfacts import LabFacts
from tests.unit.fake_guest import FakeGuest, kallsyms_copy

ORDER = "/lib/modules/6.1.0-test-amd64/modules.order"


@pytest.fixture
def guest(tmp_path: Path) -> FakeGuest:
    (tmp_path / "debug").mkdir()
    (tmp_path / "debug" / "virtio_net.ko").write_bytes(b"")
    g = FakeGuest(kallsyms_copy(tmp_path, "a", {"virtio_net": 0xFFFFFFFFC0000000}),
                  debug_root=tmp_path / "debug")
    g.sections = {"virtio_net": 0xFFFFFFFFC0000000}
    g.files = {"/proc/version": b"Linux version 6.1.0-test-amd64\n",
               str(BLOCKLIST_PATH): b"0xffffffff81000000-0xffffffff81000010\t_text\n",
               ORDER: b"kernel/drivers/net/virtio_net.ko\n"}
    return g


def test_one_read_per_fact_per_attach(guest: FakeGuest, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    """What watch --break asks at attach (the target, the guard's evidence, the drop
    lines' version and module debug files, the module follower's first look) costs one
    read of each fact."""
    info = SimpleNamespace(transport="gdbstub", gdb_endpoint="tcp:127.0.0.1:1234",
                           gdb_prefix=[], release="6.1.0-test-amd64")
    monkeypatch.setattr("kdbg.lab.registry.require", lambda name: info)
    monkeypatch.setattr(attach, "LabFacts", lambda name: LabFacts(name, guest))
    target = attach.from_lab("lab", want_vmlinux=False)  # no DWARF file in a unit test
    facts = target.facts
    assert facts is not None
    assert target.kallsyms == guest.copy and not target.stopped
    modules = attach.lab_modules(facts, tmp_path / "debug")  # as with a vmlinux
    assert [m.name for m in modules] == ["virtio_net"]
    symbols = facts.symbols()
    assert facts.symbols() is symbols and target.guard_symbols() is symbols
    assert symbols.blocklist is not None and len(symbols.blocklist) == 1
    assert symbols.modules == {"virtio_net": "drivers/net/virtio_net.ko"}
    for _ in range(2):  # the drop lines and the follower ask again: kept answers
        assert facts.version() == "Linux version 6.1.0-test-amd64\n"
        assert facts.debug_root() == tmp_path / "debug"
        assert facts.kallsyms() is facts.kallsyms()
    assert not LabModules(facts, facts.debug_root(), modules).facts.refresh()
    assert guest.reads == {"ping": 1, "/proc/modules": 2, "sections": 1, "module_debug": 1,
                           "/proc/version": 1, str(BLOCKLIST_PATH): 1, ORDER: 1,
                           "/sys/kernel/btf/vmlinux": 1, "release": 1, "vmlinux": 1}


def test_a_module_change_refreshes_what_moves_with_modules(guest: FakeGuest,
                                                           tmp_path: Path) -> None:
    facts = LabFacts("lab", guest)
    symbols = facts.symbols()
    old = facts.kallsyms()
    assert facts.module_sections() and facts.version()
    guest.copy = kallsyms_copy(tmp_path, "b", {"virtio_net": 0xFFFFFFFFC0000000,
                                               "nf_tables": 0xFFFFFFFFC0100000})
    guest.sections["nf_tables"] = 0xFFFFFFFFC0100000
    assert facts.refresh()
    assert facts.kallsyms_file == guest.copy and facts.kallsyms() is not old
    assert "nf_tables" in (facts.kallsyms().modules or {})
    assert symbols.kallsyms is facts.kallsyms()  # the guard judges from the new table
    assert "nf_tables" in facts.module_sections()
    facts.version()
    assert guest.reads["/proc/modules"] == 2 and guest.reads["sections"] == 2
    assert guest.reads[str(BLOCKLIST_PATH)] == 2  # it moves with the modules
    assert guest.reads["/proc/version"] == 1  # it does not
    assert not facts.refresh() and guest.reads["/proc/modules"] == 3


def test_a_halted_guest_answers_from_kept_copies(guest: FakeGuest) -> None:
    guest.running = False
    facts = LabFacts("lab", guest)
    assert not facts.running
    symbols = facts.symbols()
    assert facts.version() == "Linux version 6.1.0-test-amd64\n"
    assert symbols.missing["btf"] == ("lab lab is halted and kdbg kept no copy of its "
                                      "/sys/kernel/btf/vmlinux")
    assert guest.reads["ping"] == 1
