"""The module follower's bookkeeping, with a stand-in session and guest (the real one is
exercised end to end in tests/vm/test_watch_break.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdbg.debugger import livemodules
from kdbg.debugger.livemodules import LabModules
from kdbg.symbols.droplines import ModuleDebug
from kdbg.symbols.kallsyms import Kallsyms
from kdbg.targetfacts import LabFacts
from tests.unit.fake_guest import FakeGuest
from tests.unit.fake_guest import kallsyms_copy as copy


class FakeGdb:
    def __init__(self) -> None:
        self.commands: list[str] = []

    def console(self, cmd: str, timeout: float = 0) -> str:
        self.commands.append(cmd)
        return ""


class FakeState:
    def __init__(self, path: Path) -> None:
        self.kallsyms: Kallsyms | None = Kallsyms.load(path)
        self.kallsyms_file: Path | None = path


class FakeRunControl:
    def __init__(self) -> None:
        self.stops = 0

    @contextlib.contextmanager
    def stopped(self, timeout: float = 0) -> Iterator[None]:
        self.stops += 1
        yield


class FakeInspection:
    def __init__(self, gdb: FakeGdb) -> None:
        self.gdb = gdb

    def load_modules(self, mods: list[ModuleDebug], timeout: float = 0) -> list[str]:
        for m in mods:
            self.gdb.console(m.gdb_command())
        return [m.name for m in mods]


class FakeSession:
    """What the module follower uses of a Session: its state, gdb, run control (to stop
    the target), inspection (to load modules) and use_kallsyms."""

    def __init__(self, path: Path) -> None:
        self.state = FakeState(path)
        self.gdb = FakeGdb()
        self.run = FakeRunControl()
        self.inspect = FakeInspection(self.gdb)

    def use_kallsyms(self, table: Kallsyms, path: Path, timeout: float = 0) -> None:
        self.state.kallsyms, self.state.kallsyms_file = table, path


@pytest.fixture
def guest(tmp_path: Path) -> FakeGuest:
    for mod in ("nf_tables", "virtio_net"):
        (tmp_path / f"{mod}.ko").write_bytes(b"")
    return FakeGuest()


def test_load_unload_and_reload_elsewhere(guest: FakeGuest, tmp_path: Path) -> None:
    first = copy(tmp_path, "a", {"virtio_net": 0xFFFFFFFFC0000000})
    session = FakeSession(first)
    guest.copy = first
    lm = LabModules(LabFacts("lab", guest), tmp_path, (ModuleDebug("virtio_net", tmp_path / "v.ko",
                                                  ((".text", 0xFFFFFFFFC0000000),)),))
    assert not lm.refresh(session)  # type: ignore[arg-type]
    assert session.run.stops == 0 and session.gdb.commands == []

    # nf_tables loads after attach
    guest.copy = copy(tmp_path, "b", {"virtio_net": 0xFFFFFFFFC0000000,
                                         "nf_tables": 0xFFFFFFFFC0100000})
    guest.sections = {"nf_tables": 0xFFFFFFFFC0100000}
    change = lm.refresh(session)  # type: ignore[arg-type]
    assert (change.added, change.removed, change.debug_loaded) == (("nf_tables",), (),
                                                                   ("nf_tables",))
    assert session.gdb.commands[-1].startswith(f"add-symbol-file {tmp_path}/nf_tables.ko")
    assert session.state.kallsyms is not None
    assert str(session.state.kallsyms.lookup(0xFFFFFFFFC0100010)) == \
        "nf_tables_fn+0x10 [nf_tables]"

    # it goes: its debug file leaves gdb, its addresses name nothing
    guest.copy = copy(tmp_path, "c", {"virtio_net": 0xFFFFFFFFC0000000})
    guest.sections = {}
    change = lm.refresh(session)  # type: ignore[arg-type]
    assert change.removed == ("nf_tables",) and change.covers_gone(0xFFFFFFFFC0100010)
    assert session.gdb.commands[-1] == "remove-symbol-file -a 0xffffffffc0100000"
    assert str(session.state.kallsyms.lookup(0xFFFFFFFFC0100010)) == "0xffffffffc0100010 [?]"

    # back again, and elsewhere; then reloaded at yet another address in one step
    guest.copy = copy(tmp_path, "d", {"virtio_net": 0xFFFFFFFFC0000000,
                                         "nf_tables": 0xFFFFFFFFC0200000})
    guest.sections = {"nf_tables": 0xFFFFFFFFC0200000}
    assert lm.refresh(session).added == ("nf_tables",)  # type: ignore[arg-type]
    guest.copy = copy(tmp_path, "e", {"virtio_net": 0xFFFFFFFFC0000000,
                                         "nf_tables": 0xFFFFFFFFC0300000})
    guest.sections = {"nf_tables": 0xFFFFFFFFC0300000}
    change = lm.refresh(session)  # type: ignore[arg-type]
    assert (change.added, change.removed) == (("nf_tables",), ("nf_tables",))
    assert change.covers_gone(0xFFFFFFFFC0200010) and not change.covers_gone(0xFFFFFFFFC0300010)
    assert session.gdb.commands[-2:] == [
        "remove-symbol-file -a 0xffffffffc0200000",
        f"add-symbol-file {tmp_path}/nf_tables.ko 0xffffffffc0300000"]


def test_follower_is_due_for_an_unknown_module(guest: FakeGuest, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    class NoWatch:
        def __init__(self, name: str) -> None:
            self.flag = False
            self.latest: str | None = None

        def take(self) -> bool:
            flag, self.flag = self.flag, False
            return flag

        def close(self) -> None:
            pass

    monkeypatch.setattr(livemodules, "ModuleWatch", NoWatch)
    session = FakeSession(copy(tmp_path, "a", {"virtio_net": 0xFFFFFFFFC0000000}))
    guest.copy = session.state.kallsyms_file
    follower = livemodules.ModuleFollower(LabFacts("lab", guest), None)
    assert not follower.due(session)  # type: ignore[arg-type]
    assert not follower.due(session, "virtio_net")  # type: ignore[arg-type]
    assert follower.due(session, "nf_tables")  # type: ignore[arg-type]
    follower.watch.flag = True  # type: ignore[attr-defined]
    assert follower.due(session)  # type: ignore[arg-type]
    assert not follower.due(session)  # type: ignore[arg-type]
    # a change whose list the session already read (a drop brought it in): not due
    follower.watch.flag = True  # type: ignore[attr-defined]
    follower.watch.latest = livemodules.modules_digest(  # type: ignore[attr-defined]
        follower.modules.facts.modules_file.read_text())
    assert not follower.due(session)  # type: ignore[arg-type]
