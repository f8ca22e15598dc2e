"""A lab target's modules, followed while a debug session runs.

A session names addresses from the target's kallsyms and gives gdb the debug files of
loaded modules; both are facts of one moment. Modules load and unload under a
developer (the first nft rule loads ``nf_tables``), so a table read at attach names a
new module's addresses after another one. :class:`LabModules` keeps the session's
table, the gdb helpers' copy and gdb's module symbol files in step with the guest:

* :meth:`LabModules.refresh` asks the target's :class:`kdbg.targetfacts.LabFacts` to look
  again (one read of ``/proc/modules`` in the guest while nothing moved; otherwise
  kallsyms and the module sections are read again), then, with the target stopped
  for a moment if it runs, drops gdb's symbol files of modules gone and adds those of
  modules come;
* :class:`ModuleWatch` polls the guest's module list (one long-running command, no
  tracer needed, any transport) and flags a change for the caller to act on while the
  target runs.

Every read goes through the lab's exec channel, which needs the target running; the
callers refresh before they stop it or after it resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from kdbg.debugger.attach import lab_modules
from kdbg.debugger.session import Session
from kdbg.errors import KdbgError
from kdbg.lab import guest
from kdbg.symbols.droplines import ModuleDebug
from kdbg.symbols.kallsyms import ModuleSpan
from kdbg.targetfacts import LabFacts

WATCH_PERIOD = 1.0  # s between two looks at the guest's /proc/modules


def modules_digest(text: str) -> str:
    """What :class:`ModuleWatch`'s command prints for the ``/proc/modules`` ``text``: the
    MD5 of ``cut -d' ' -f1,6`` (each module's name and address)."""
    cut = "".join(" ".join(ln.split(" ")[0:1] + ln.split(" ")[5:6]) + "\n"
                  for ln in text.splitlines())
    return hashlib.md5(cut.encode()).hexdigest()


@dataclass(frozen=True)
class ModuleChange:
    """What a refresh found: modules that came and went since the last table, and
    where the ones that went had been (``gone_spans``)."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    debug_loaded: tuple[str, ...] = ()
    gone_spans: tuple[ModuleSpan, ...] = ()

    def covers_gone(self, address: int) -> bool:
        """Whether ``address`` was in a module that went."""
        return any(address in span for span in self.gone_spans)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append("loaded " + ", ".join(self.added))
        if self.removed:
            parts.append("unloaded " + ", ".join(self.removed))
        text = "; ".join(parts) or "no change"
        if self.debug_loaded:
            text += f" (gdb has the debug files of {', '.join(self.debug_loaded)})"
        return text


class LabModules:
    """The module facts of a lab (its :class:`LabFacts`) as one session knows them."""

    def __init__(self, facts: LabFacts, debug_root: Path | None,
                 loaded: tuple[ModuleDebug, ...] = ()) -> None:
        self.facts = facts
        self.debug_root = debug_root
        self.in_gdb: dict[str, ModuleDebug] = {m.name: m for m in loaded}

    def digest(self) -> str | None:
        """The module watch's digest of the list the session last read: a change the
        watch reports with it is one a drop already brought in (no second refresh,
        whose reads of a running guest a stop at the armed breakpoint would hold up)."""
        try:
            return modules_digest(self.facts.modules_file.read_text())
        except OSError:
            return None

    def refresh(self, session: Session, timeout: float = 60.0) -> ModuleChange:
        """Bring ``session`` up to date with the guest's modules (guest running)."""
        self.facts.refresh()
        copy = self.facts.kallsyms_file
        known = session.state.kallsyms
        if copy == session.state.kallsyms_file and known is not None:
            return ModuleChange((), ())
        table = self.facts.kallsyms()
        old_spans = (known.modules or {}) if known else {}
        new_spans = table.modules or {}
        before, now = set(old_spans), set(new_spans)
        # reloaded elsewhere since: gone, and come again
        moved = {n for n in before & now if old_spans[n] != new_spans[n]}
        added = (now - before) | moved
        gone = [m for n, m in self.in_gdb.items() if n not in now or n in moved]
        come: list[ModuleDebug] = []
        if self.debug_root is not None and added:
            come = list(lab_modules(self.facts, self.debug_root, only=added))
        loaded: list[str] = []
        if gone or come:
            with session.run.stopped(timeout):
                for mod in gone:
                    text = dict(mod.sections)[".text"]
                    with contextlib.suppress(KdbgError):
                        session.gdb.console(f"remove-symbol-file -a 0x{text:x}", timeout)
                    self.in_gdb.pop(mod.name, None)
                loaded = session.inspect.load_modules(come, timeout)
                self.in_gdb.update({m.name: m for m in come if m.name in loaded})
        session.use_kallsyms(table, copy, timeout)
        went = sorted((before - now) | moved)
        return ModuleChange(tuple(sorted(added)), tuple(went), tuple(loaded),
                            tuple(old_spans[n] for n in went))


class ModuleWatch:
    """A command in the guest that prints a line whenever ``/proc/modules`` changes;
    :meth:`take` says (once) that it did. Its output is read in a daemon thread."""

    SCRIPT = (f"old=; while :; do new=$(cut -d' ' -f1,6 /proc/modules | md5sum); "
              f"[ \"$new\" != \"$old\" ] && echo \"modules $new\"; old=$new; "
              f"sleep {WATCH_PERIOD:g}; done")

    def __init__(self, name: str) -> None:
        self._event = threading.Event()
        self._first = True
        self.latest: str | None = None  # the digest of the list last seen
        self._session = guest.stream(name, ["sh", "-c", self.SCRIPT])
        self._thread = threading.Thread(target=self._read, name="kdbg-module-watch",
                                        daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(KdbgError, OSError, ValueError):
            for chunk in self._session:
                for line in chunk.data.decode(errors="replace").splitlines():
                    if line.startswith("modules "):
                        self.latest = line.split()[1]
                        if self._first:
                            self._first = False  # the list at start: nothing moved yet
                        else:
                            self._event.set()

    def take(self) -> bool:
        """True (once) when the module list changed since the last take."""
        if self._event.is_set():
            self._event.clear()
            return True
        return False

    def close(self) -> None:
        self._session.close()
        self._thread.join(timeout=2.0)


class ModuleFollower:
    """What ``watch --break`` needs: a lab's modules followed for the whole session.

    :meth:`due` is true when the guest's module list changed (seen by a
    :class:`ModuleWatch`) or when a drop names a module the session does not know;
    :meth:`refresh` then brings the session up to date (guest running)."""

    def __init__(self, facts: LabFacts, debug_root: Path | None,
                 loaded: tuple[ModuleDebug, ...] = ()) -> None:
        self.modules = LabModules(facts, debug_root, loaded)
        self.watch = ModuleWatch(facts.name)

    def due(self, session: Session, module: str | None = None) -> bool:
        kallsyms = session.state.kallsyms
        known = (kallsyms.modules or {}) if kallsyms is not None else {}
        moved = self.watch.take() and self.watch.latest != self.modules.digest()
        return moved or (module is not None and module not in known)

    def refresh(self, session: Session) -> ModuleChange:
        return self.modules.refresh(session)

    def close(self) -> None:
        self.watch.close()
