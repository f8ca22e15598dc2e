"""GDB/MI records: parsing and token matching, with no I/O.

gdb's MI output is a stream of lines. Each line is one record:

* a *result* record (``TOKEN^done,...``, ``^running``, ``^connected``, ``^error,msg=...``,
  ``^exit``) answers exactly one command, and carries that command's token;
* *exec* (``*stopped``, ``*running``), *status* (``+``) and *notify* (``=``) records are
  asynchronous: they may arrive before, between or after result records, so they are queued;
* *stream* records (``~`` console, ``@`` target, ``&`` log) are text;
* ``(gdb)`` ends a batch; anything else is output that is not MI at all.

pygdbmi's parser turns one line into a dict, but folds ``*`` and ``=`` records into one
"notify" type and reads on a timer; here each line is classified from its own prefix,
and replies are found by token (:class:`Router`), never by timing.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pygdbmi import gdbmiparser

_PREFIX = re.compile(r"^(?P<token>\d*)(?P<sigil>[\^*+=~@&])")
_KINDS = {
    "^": "result",
    "*": "exec",
    "+": "status",
    "=": "notify",
    "~": "console",
    "@": "target",
    "&": "log",
}
ASYNC_KINDS = frozenset({"exec", "status", "notify"})
STREAM_KINDS = frozenset({"console", "target", "log"})


@dataclass(frozen=True)
class Record:
    """One MI output line, parsed.

    ``kind`` is one of result, exec, status, notify, console, target, log, prompt or
    output (not MI). ``klass`` is the record's class (``done``, ``stopped``, ...) and
    ``text`` the payload of a stream record.
    """

    kind: str
    klass: str | None = None
    token: int | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    raw: str = ""
    at: float = field(default=0.0, compare=False)  # time.monotonic() when kdbg read it

    @property
    def is_async(self) -> bool:
        return self.kind in ASYNC_KINDS

    @property
    def error(self) -> str | None:
        """gdb's message for an ``^error`` record, else None."""
        if self.kind == "result" and self.klass == "error":
            return str(self.payload.get("msg", "unknown gdb error"))
        return None


def parse_line(line: str) -> Record:
    """Parse one line of MI output (without its newline) into a :class:`Record`."""
    line = line.rstrip("\r\n")
    if gdbmiparser.response_is_finished(line):
        return Record("prompt", raw=line)
    m = _PREFIX.match(line)
    if m is None:
        return Record("output", text=line, raw=line)
    kind = _KINDS[m["sigil"]]
    token = int(m["token"]) if m["token"] else None
    if kind in STREAM_KINDS:
        if token is not None:  # a token never precedes a stream record
            return Record("output", text=line, raw=line)
        parsed = gdbmiparser.parse_response(line)
        return Record(kind, text=str(parsed.get("payload") or ""), raw=line)
    klass = re.match(r"[\w-]*", line[m.end() :])
    try:
        parsed = gdbmiparser.parse_response(line)
    except Exception:  # noqa: BLE001 - pygdbmi raises bare errors on input it cannot parse
        # e.g. +download,{section=".text",...}: a bare tuple where key=value is expected.
        return Record(kind, klass.group(0) if klass else None, token, raw=line)
    if parsed.get("type") not in ("result", "notify"):
        return Record(kind, klass.group(0) if klass else None, token, raw=line)
    payload = parsed.get("payload") or {}
    if not isinstance(payload, dict):
        payload = {}
    return Record(kind, parsed.get("message"), token, payload, raw=line)


class LineSplitter:
    """Turns chunks of bytes into complete lines, keeping a partial last line for later."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        return [ln.decode(errors="replace").rstrip("\r") for ln in lines if ln.strip()]

    @property
    def pending(self) -> bytes:
        return self._buf


@dataclass
class Reply:
    """A command's result record and the stream text gdb printed while running it."""

    record: Record
    console: str = ""
    log: str = ""

    @property
    def klass(self) -> str | None:
        return self.record.klass

    @property
    def payload(self) -> dict[str, Any]:
        return self.record.payload


class Router:
    """Matches result records to commands by token; queues async records.

    Stream records are attributed to the oldest command still waiting for its reply
    (gdb runs MI commands one at a time, in order), so ``-interpreter-exec console``
    output comes back with its command. A reply whose token nobody waits for (a
    command that timed out) is dropped and counted in ``stale``.
    """

    def __init__(self, on_async: Callable[[Record], None] | None = None) -> None:
        self._waiting: dict[int, Reply | None] = {}
        self._order: deque[int] = deque()
        self._text: dict[int, tuple[list[str], list[str]]] = {}
        self.events: deque[Record] = deque()
        self.untokened: deque[Record] = deque()
        self.stale = 0
        self.console_tail: deque[str] = deque(maxlen=200)
        self._on_async = on_async

    def expect(self, token: int) -> None:
        """Register ``token`` as sent; its result record will be kept for :meth:`take`."""
        self._waiting[token] = None
        self._order.append(token)
        self._text[token] = ([], [])

    def forget(self, token: int) -> None:
        """Stop waiting for ``token`` (its command timed out): a late reply becomes stale."""
        self._waiting.pop(token, None)
        self._text.pop(token, None)
        if token in self._order:
            self._order.remove(token)

    def feed(self, records: Iterable[Record]) -> None:
        for rec in records:
            self._route(rec)

    def _route(self, rec: Record) -> None:
        if rec.is_async:
            self.events.append(rec)
            if self._on_async is not None:
                self._on_async(rec)
            return
        if rec.kind in ("console", "log", "target"):
            if rec.kind == "console":
                self.console_tail.append(rec.text)
            head = self._head()
            if head is not None and rec.kind != "target":
                self._text[head][0 if rec.kind == "console" else 1].append(rec.text)
            return
        if rec.kind != "result":
            return
        if rec.token is None:
            # gdb answers a command sent without a token, or one of its own (a CLI UI's).
            self.untokened.append(rec)
            return
        if rec.token not in self._waiting:
            self.stale += 1
            return
        console, log = self._text.pop(rec.token, ([], []))
        self._waiting[rec.token] = Reply(rec, "".join(console), "".join(log))
        if rec.token in self._order:
            self._order.remove(rec.token)

    def _head(self) -> int | None:
        for tok in self._order:
            if self._waiting.get(tok) is None:
                return tok
        return None

    def take(self, token: int) -> Reply | None:
        """The reply for ``token`` if it has arrived (and forget the token), else None."""
        reply = self._waiting.get(token)
        if reply is not None:
            del self._waiting[token]
        return reply

    def pop_event(self, match: Callable[[Record], bool]) -> Record | None:
        """Remove and return the oldest queued async record that ``match`` accepts."""
        for i, rec in enumerate(self.events):
            if match(rec):
                del self.events[i]
                return rec
        return None


def quote(text: str) -> str:
    """Quote ``text`` as an MI c-string (for ``-interpreter-exec console "..."``)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def as_int(value: Any) -> int | None:
    """An MI number (``"0xffff..."`` or ``"12"``) as an int; None when absent or not one."""
    if value is None:
        return None
    try:
        return int(str(value), 0)
    except ValueError:
        m = re.match(r"\s*(0x[0-9a-fA-F]+|\d+)", str(value))
        return int(m.group(1), 0) if m else None
