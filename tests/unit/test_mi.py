"""MI parsing and token matching, on literal transcripts (several seen against QEMU here)."""

from __future__ import annotations

import pytest

from kdbg.debugger.mi import LineSplitter, Router, as_int, parse_line, quote
from tests.conftest import DATA

# (line, kind, class, token, a payload key to check, its value)
RECORDS = [
    ('12^done,value="0xffffffff81000000"', "result", "done", 12, "value", "0xffffffff81000000"),
    ("3^connected", "result", "connected", 3, None, None),
    ("^running", "result", "running", None, None, None),
    ("5^exit", "result", "exit", 5, None, None),
    ('7^error,msg="No symbol \\"foo\\" in current context."', "result", "error", 7,
     "msg", 'No symbol "foo" in current context.'),
    ('*running,thread-id="all"', "exec", "running", None, "thread-id", "all"),
    ('*stopped,reason="breakpoint-hit",bkptno="1",frame={addr="0x1",func="??",args=[]}',
     "exec", "stopped", None, "bkptno", "1"),
    # *stopped without a reason: the stop reported on attach
    ('*stopped,frame={addr="0xffffffff81a592eb",func="??",args=[]},thread-id="1"',
     "exec", "stopped", None, "thread-id", "1"),
    ('=thread-group-added,id="i1"', "notify", "thread-group-added", None, "id", "i1"),
    ('=cmd-param-changed,param="pagination",value="off"', "notify", "cmd-param-changed", None,
     "param", "pagination"),
    ('+download,{section=".text",section-size="6668"}', "status", "download", None, None, None),
    ('~"0xffffffff81a592eb in ?? ()\\n"', "console", None, None, None, None),
    ('&"warning: No executable has been specified\\n"', "log", None, None, None, None),
    ('@"target says hi\\n"', "target", None, None, None, None),
    ("(gdb) ", "prompt", None, None, None, None),
    ("(gdb)", "prompt", None, None, None, None),
    # not MI at all: a stray line (gdb's stderr, or inferior output)
    ("Remote connection closed", "output", None, None, None, None),
    # a CRLF line from a pty in cooked mode
    ('4^done\r', "result", "done", 4, None, None),
]


@pytest.mark.parametrize("line,kind,klass,token,key,value", RECORDS)
def test_parse_line(line: str, kind: str, klass: str | None, token: int | None,
                    key: str | None, value: str | None) -> None:
    rec = parse_line(line)
    assert rec.kind == kind
    assert rec.klass == klass
    assert rec.token == token
    if key is not None:
        assert rec.payload[key] == value


def test_stream_text_is_unescaped() -> None:
    assert parse_line('~"Breakpoint 1, 0x1 in ?? ()\\n"').text == "Breakpoint 1, 0x1 in ?? ()\n"


def test_error_message() -> None:
    assert parse_line('9^error,msg="Remote connection closed"').error == "Remote connection closed"
    assert parse_line("9^done").error is None


def test_list_of_tuples_loses_frame_key() -> None:
    """pygdbmi's quirk: stack=[frame={..},frame={..}] becomes a list of the frames' dicts."""
    rec = parse_line('1^done,stack=[frame={level="0",addr="0x1",func="??"},'
                     'frame={level="1",addr="0x2",func="f",file="a.c",line="3"}]')
    assert [f["level"] for f in rec.payload["stack"]] == ["0", "1"]


def test_line_splitter_keeps_partial_lines() -> None:
    split = LineSplitter()
    assert split.feed(b'1^do') == []
    assert split.feed(b'ne\n*running,thread-id="all"\n(gd') == ['1^done',
                                                              '*running,thread-id="all"']
    assert split.pending == b"(gd"
    assert split.feed(b"b) \n") == ["(gdb) "]


def _replay(name: str, router: Router) -> None:
    for line in (DATA / "mi" / name).read_text().splitlines():
        if not line.startswith("#"):
            router.feed([parse_line(line)])


def test_stop_before_reply_is_queued() -> None:
    """On attach gdb prints *stopped before ^connected; the stop must wait in the queue."""
    r = Router()
    r.expect(2)
    r.expect(3)
    _replay("connect_qemu.txt", r)
    assert r.take(2) is not None and r.take(2) is None
    reply = r.take(3)
    assert reply is not None and reply.klass == "connected"
    assert reply.console == "0xffffffff81a592eb in ?? ()\n"
    stop = r.pop_event(lambda e: e.klass == "stopped")
    assert stop is not None and stop.payload["frame"]["addr"] == "0xffffffff81a592eb"


def test_replies_matched_by_token_not_order() -> None:
    r = Router()
    r.expect(4)
    r.expect(5)
    _replay("break_hit.txt", r)
    five = r.take(5)
    four = r.take(4)
    assert five is not None and five.klass == "running"
    assert four is not None and four.payload["bkpt"]["number"] == "1"
    kinds = [(e.kind, e.klass) for e in r.events]
    assert kinds == [("exec", "running"), ("notify", "breakpoint-modified"), ("exec", "stopped")]
    hit = r.pop_event(lambda e: e.klass == "stopped")
    assert hit is not None and hit.payload["reason"] == "breakpoint-hit"


def test_late_reply_after_timeout_is_stale() -> None:
    r = Router()
    r.expect(8)
    r.forget(8)  # the command timed out
    r.feed([parse_line("8^done"), parse_line("9^done")])
    assert r.take(8) is None and r.stale == 2


def test_untokened_result_is_not_taken_for_ours() -> None:
    """A result from the console UI (no token) must not answer an MI command."""
    r = Router()
    r.expect(1)
    r.feed([parse_line("^done")])
    assert r.take(1) is None and len(r.untokened) == 1


def test_interrupt_console_split() -> None:
    r = Router()
    r.expect(7)
    _replay("interrupt.txt", r)
    reply = r.take(7)
    assert reply is not None and reply.klass == "done"
    stop = r.pop_event(lambda e: e.klass == "stopped")
    assert stop is not None and stop.payload["signal-name"] == "SIGINT"
    assert "".join(r.console_tail).startswith("\nProgram received signal SIGINT")


def test_async_callback_sees_state_changes() -> None:
    seen: list[str] = []
    r = Router(on_async=lambda rec: seen.append(str(rec.klass)))
    _replay("break_hit.txt", r)
    assert seen == ["running", "breakpoint-modified", "stopped"]


def test_quote_and_as_int() -> None:
    assert quote('source "a b"\n') == '"source \\"a b\\"\\n"'
    assert as_int("0xffffffff818ac48c") == 0xFFFFFFFF818AC48C
    assert as_int("12") == 12
    assert as_int("0xffffffff81000000 <_text>") == 0xFFFFFFFF81000000
    assert as_int(None) is None and as_int("??") is None
