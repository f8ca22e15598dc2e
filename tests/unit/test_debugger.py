"""Drop-site decoding, endpoints, vmlinux inspection and stop rendering: no gdb needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdbg.debugger import dropsite
from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.errors import NotADropSite
from kdbg.debugger.mi import parse_line
from kdbg.debugger.model import Frame, Instruction, KernelTree, Stop
from kdbg.debugger.run import render_stop
from kdbg.errors import BadInput
from kdbg.symbols.sources import line_text
from tests.conftest import DATA


def _insns() -> list[Instruction]:
    line = (DATA / "mi" / "disassemble.txt").read_text().splitlines()[-1]
    return dropsite.instructions(parse_line(line).payload["asm_insns"])


def test_call_before_return_address() -> None:
    ins = dropsite.call_before(_insns(), 0xFFFFFFFF818AC491)
    assert ins is not None
    assert ins.address == 0xFFFFFFFF818AC48C and ins.length == 5
    assert dropsite.call_target(ins.text) == (0xFFFFFFFF817C02A0, None)


def test_no_call_when_misaligned_or_not_a_call() -> None:
    assert dropsite.call_before(_insns(), 0xFFFFFFFF818AC490) is None  # inside the call
    assert dropsite.call_before(_insns(), 0xFFFFFFFF818AC48C) is None  # after a mov


@pytest.mark.parametrize("text,target,sym", [
    ("call   0xffffffff817c02a0", 0xFFFFFFFF817C02A0, None),
    ("call   0xffffffff817c02a0 <kfree_skb_reason>", 0xFFFFFFFF817C02A0, "kfree_skb_reason"),
    ("callq  0xffffffff817c02a0 <kfree_skb_reason+0>", 0xFFFFFFFF817C02A0, "kfree_skb_reason"),
    ("call   *0x10(%rax)", None, None),
    ("call   *%r11", None, None),
])
def test_call_target(text: str, target: int | None, sym: str | None) -> None:
    assert dropsite.call_target(text) == (target, sym)


def test_call_target_rejects_other_instructions() -> None:
    with pytest.raises(ValueError):
        dropsite.call_target("jmp    0xffffffff817c02a0")


def test_check_callee() -> None:
    ins = Instruction(1, 5, "call   0x2")
    assert dropsite.check_callee("kfree_skb_reason", "x", ins) == "kfree_skb_reason"
    with pytest.raises(NotADropSite, match="consume_skb"):
        dropsite.check_callee("consume_skb", "tcp_v4_rcv+0x81", ins)
    with pytest.raises(NotADropSite, match="indirect"):
        dropsite.check_callee(None, "x", ins)


@pytest.mark.parametrize("text,kind,target,transport", [
    ("tcp:127.0.0.1:1234", "tcp", "tcp:127.0.0.1:1234", "gdbstub"),
    ("serial:127.0.0.1:4555", "serial", "tcp:127.0.0.1:4555", "kgdboc"),
    ("/dev/ttyS1", "serial", "/dev/ttyS1", "kgdboc"),
    ("udp:10.213.0.2:31337", "udp", "udp:10.213.0.2:31337", "kgdboe"),
    ("tcp:[::1]:1234", "tcp", "tcp:[::1]:1234", "gdbstub"),
    ("unix:/s/labs/a/gdb.sock", "unix", "/s/labs/a/gdb.sock", "gdbstub"),
    ("serial:/s/labs/a/kgdboc.sock", "serial", "/s/labs/a/kgdboc.sock", "kgdboc"),
    ("serial:/dev/ttyUSB0", "serial", "/dev/ttyUSB0", "kgdboc"),
])
def test_endpoint(text: str, kind: str, target: str, transport: str) -> None:
    ep = Endpoint.parse(text)
    assert (ep.kind, ep.gdb_target, ep.transport.name) == (kind, target, transport)
    assert ep.can_break_in == (kind != "serial")
    assert Endpoint.parse(str(ep)) == ep


def test_socket_and_tty_endpoints() -> None:
    sock = Endpoint.parse("serial:/s/kgdboc.sock")
    assert (sock.path, sock.device) == ("/s/kgdboc.sock", None)  # no baud for a socket
    tty = Endpoint.parse("serial:/dev/ttyS1")
    assert (tty.path, tty.device) == (None, "/dev/ttyS1")


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_the_relay_answers_the_last_sender_as_kgdboe_does(kind: str, tmp_path: Path) -> None:
    """Datagrams from two sockets reach one stream connection to the stub; the stub's
    bytes go back to whichever sent last (kdbg's probe first, then gdb)."""
    import socket
    import threading

    from kdbg.debugger.relay import UdpRelay

    if kind == "tcp":
        server = socket.create_server(("127.0.0.1", 0))
        stub = f"tcp:127.0.0.1:{server.getsockname()[1]}"
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(tmp_path / "gdb.sock"))
        server.listen()
        stub = f"unix:{tmp_path / 'gdb.sock'}"
    accepted: list[socket.socket] = []

    def echo_upper() -> None:
        conn, _ = server.accept()
        accepted.append(conn)
        while data := conn.recv(100):
            conn.sendall(data.upper())

    echo = threading.Thread(target=echo_upper, daemon=True)
    echo.start()
    first, second = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    try:
        with UdpRelay(stub) as relay:
            host, port = relay.endpoint.split(":")[1:]
            for sock, word in ((first, b"probe"), (second, b"gdb"), (second, b"again")):
                sock.settimeout(5)
                sock.sendto(word, (host, int(port)))
                assert sock.recv(100) == word.upper()
        # the relay closed its end: the stub reads the end of its stream and returns
        echo.join(5)
        assert not echo.is_alive()
        assert len(accepted) == 1  # one stream connection for both senders
    finally:
        for sock in (first, second, server, *accepted):
            sock.close()


def test_the_relay_reaches_only_stream_stubs() -> None:
    from kdbg.debugger.relay import UdpRelay
    from kdbg.errors import GdbError

    with pytest.raises(BadInput):
        UdpRelay("udp:127.0.0.1:9")
    with pytest.raises(GdbError, match="cannot reach the stub"):
        UdpRelay("tcp:127.0.0.1:1")


@pytest.mark.parametrize("bad", ["localhost:1234", "tcp:host", "tcp:h:0", "tcp:h:70000", "x",
                                 "unix:relative.sock", "unix:"])
def test_bad_endpoint(bad: str) -> None:
    with pytest.raises(BadInput):
        Endpoint.parse(bad)


def test_render_and_json() -> None:
    stop = Stop(
        reason="breakpoint-hit", address=0x10, symbol="tcp_v4_rcv", offset=0x7C, breakpoint=1,
        backtrace=(Frame(0, 0x10, "tcp_v4_rcv", 0x7C, "net/ipv4/tcp_ipv4.c", 2034),
                   Frame(1, 0x20, "ip_protocol_deliver_rcu", 0x30)),
        truncated="frame 2 (0xffff888000000000) is not in kernel text",
    )
    text = render_stop(stop)
    assert text.splitlines()[0] == "hit: breakpoint 1 at tcp_v4_rcv+0x7c (0x10)"
    assert "at net/ipv4/tcp_ipv4.c:2034" in text and "backtrace ends" in text
    js = stop.to_json()
    assert js["type"] == "hit" and js["backtrace"][0]["line"] == 2034
    assert "file" not in js["backtrace"][1]


def test_a_frame_shows_its_source_lines_text(tmp_path: Path) -> None:
    """gdb gives each frame the file it found (``fullname``) through the kernel tree's
    directory; the report prints the line's text under the frame."""
    src = tmp_path / "net" / "netfilter" / "core.c"
    src.parent.mkdir(parents=True)
    src.write_text("int a;\n\n\tverdict = nf_hook_entry_hookfn(&e->hooks[s], skb, state);\n")
    assert line_text(str(src), 3) == "verdict = nf_hook_entry_hookfn(&e->hooks[s], skb, state);"
    assert line_text(str(src), 9) is None and line_text(None, 3) is None
    assert line_text(str(tmp_path / "gone.c"), 1) is None
    stop = Stop(reason="breakpoint-hit", address=0x10, symbol="nf_hook_slow", offset=0x41,
                breakpoint=1, backtrace=(Frame(0, 0x10, "nf_hook_slow", 0x41,
                                               "net/netfilter/core.c", 3,
                                               text=line_text(str(src), 3)),))
    lines = render_stop(stop).splitlines()
    assert lines[1].endswith("at net/netfilter/core.c:3")
    assert lines[2] == "    verdict = nf_hook_entry_hookfn(&e->hooks[s], skb, state);"
    assert stop.to_json()["backtrace"][0]["text"].startswith("verdict = ")


def test_a_tree_given_by_hand(tmp_path: Path) -> None:
    """--source DIR: gdb's source directory, and its vmlinux-gdb.py when it has one;
    without one, a line that says how to get Linux's gdb helpers."""
    bare = KernelTree.of(tmp_path)
    assert bare.dirs == (tmp_path,) and bare.gdb_scripts is None
    assert bare.note is not None and "CONFIG_GDB_SCRIPTS=y" in bare.note
    (tmp_path / "vmlinux-gdb.py").write_text("")
    assert KernelTree.of(tmp_path) == KernelTree((tmp_path,), tmp_path / "vmlinux-gdb.py")


def test_vmlinux_inspect(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kdbg.debugger.vmlinux import inspect

    with pytest.raises(BadInput):
        inspect(tmp_path / "missing")
    (tmp_path / "junk").write_bytes(b"not an elf")
    with pytest.raises(BadInput):
        inspect(tmp_path / "junk")


def test_backtrace_ends_where_kallsyms_sees_no_text() -> None:
    """gdb's DWARF names 0x6 fixed_percpu_data (per-CPU data sits at 0): with the
    target's kallsyms the frame is not in kernel text, and the backtrace ends there."""
    from types import SimpleNamespace

    from kdbg.debugger.inspection import Inspection
    from kdbg.debugger.mi import Record
    from kdbg.debugger.state import SessionState
    from kdbg.symbols.kallsyms import Kallsyms

    ksyms = Kallsyms.parse("ffffffff81000000 T _stext\nffffffff81368c00 T do_sys_openat2\n"
                           "ffffffff81369150 T __x64_sys_openat\nffffffff82000000 T _etext\n"
                           "0000000000000000 A fixed_percpu_data\n")
    stack = [{"frame": {"level": "0", "addr": "0xffffffff81368c00", "func": "do_sys_openat2",
                        "file": "fs/open.c", "line": "1306"}},
             {"frame": {"level": "1", "addr": "0xffffffff813691bc", "func": "__x64_sys_openat",
                        "file": "fs/open.c", "line": "1336"}},
             {"frame": {"level": "2", "addr": "0x6", "func": "fixed_percpu_data"}}]
    reply = Record(kind="result", klass="done", payload={"stack": stack}, token=None)
    state = SessionState(Endpoint.parse("tcp:127.0.0.1:1234"), kallsyms=ksyms, has_dwarf=True)
    insp = Inspection(SimpleNamespace(command=lambda *a: reply), state)  # type: ignore[arg-type]
    frames, why = insp.backtrace()
    assert [(f.symbol, f.offset) for f in frames] == [("do_sys_openat2", 0),
                                                     ("__x64_sys_openat", 0x6c)]
    assert why == "frame 2 (0x6) is not in kernel text"


def test_direct_call_reads_as_gdb_disassembles_it() -> None:
    # the call in the recorded disassembly: opcodes e8 0f 3e f1 ff, ending at ...c491
    ret = 0xFFFFFFFF818AC491
    ins = dropsite.direct_call(bytes.fromhex("e80f3ef1ff"), ret)
    assert ins == dropsite.call_before(_insns(), ret)
    assert ins is not None and dropsite.call_target(ins.text) == (0xFFFFFFFF817C02A0, None)


@pytest.mark.parametrize("code", [
    bytes.fromhex("ff d0 90 90 90"),  # not call rel32 (the last bytes of another)
    bytes.fromhex("e8 00 00 00"),  # too short
    b"",
])
def test_direct_call_needs_five_bytes_opening_with_e8(code: bytes) -> None:
    assert dropsite.direct_call(code, 0xFFFFFFFF818AC491) is None


def test_direct_call_forward_wraps_in_64_bits() -> None:
    ins = dropsite.direct_call(bytes.fromhex("e810000000"), 0xFFFFFFFFFFFFFFF8)
    assert ins is not None and dropsite.call_target(ins.text) == (0x8, None)
