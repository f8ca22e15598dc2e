"""Attaching to a KGDBoE target whose debugger died: real gdb against a fake UDP stub on
loopback that behaves as KGDBoE and kgdb's packet loop do (the real ones are in
tests/vm/test_kgdboe.py, opt-in)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kdbg.debugger import breakin, kgdbprobe

REPLIES = {"?": "S05", "qAttached": "1", "Hg0": "OK", "Hc-1": "OK", "Hc0": "OK",
           "D": "OK", "qSymbol::": "OK"}


def packet(payload: str) -> bytes:
    return f"${payload}#{sum(payload.encode()) % 256:02x}".encode()


class Closing(Exception):
    pass


class FakeKgdboe:
    """KGDBoE and kgdb, as far as attaching goes (kgdboe_io.c, gdbstub.c):

    - every byte received is kept in a ring, whether the kernel runs or not, and replies
      go to the sender of the last datagram;
    - the kernel stops for any datagram while no debugger is connected, only for 0x03
      while one is;
    - stopped, kgdb sends a stop report first if a debugger is connected; sending a
      packet it waits for ``+`` (a ``$`` instead is answered ``-`` and ends the send);
      reading one it skips to ``$``; a good packet makes a debugger connected.

    Modes: ``running`` (no debugger), ``orphaned`` (a debugger died while the kernel
    ran) and ``halted`` (stopped by a break-in nobody acknowledged).
    """

    def __init__(self, mode: str) -> None:
        self.connected = mode != "running"
        self.stopped = mode == "halted"
        self.got: list[bytes] = []
        self.ring = bytearray()
        self.peer: tuple[str, int] | None = None
        self.cond = threading.Condition()
        self.closing = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.rx, self.kgdb)]
        for t in self.threads:
            t.start()

    # KGDBoE's receive handler
    def rx(self) -> None:
        while not self.closing:
            try:
                data, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            with self.cond:
                self.got.append(data)
                self.peer = peer
                self.ring += data
                wake = (not self.connected and (len(data) != 1 or data == b"\x03")) \
                    or b"\x03" in data
                if wake and not self.stopped:
                    self.stopped = True
                self.cond.notify_all()

    def send(self, data: bytes) -> None:
        if self.peer is not None:
            self.sock.sendto(data, self.peer)

    def read_char(self) -> int:
        with self.cond:
            while not self.ring:
                if self.closing:
                    raise Closing
                self.cond.wait(0.1)
            return self.ring.pop(0)

    # kgdb's packet loop
    def put_packet(self, payload: str) -> None:
        while True:
            self.send(packet(payload))
            ch = self.read_char()
            if ch == 3:
                ch = self.read_char()
            if ch == ord("+"):
                return
            if ch == ord("$"):
                self.send(b"-")
                return

    def get_packet(self) -> str:
        while True:
            while self.read_char() != ord("$"):
                pass
            body = bytearray()
            while (ch := self.read_char()) != ord("#"):
                body.append(ch)
            cs = bytes([self.read_char(), self.read_char()]).decode(errors="replace")
            if cs == f"{sum(body) % 256:02x}":
                self.send(b"+")
                self.connected = True
                return body.decode()
            self.send(b"-")

    def answer(self, payload: str) -> str:
        if payload.startswith("qSupported"):
            return "PacketSize=1000"
        if payload == "g":
            return "00" * 8 * 17  # rax..r15, rip: the rest is unavailable
        return REPLIES.get(payload, "E01" if payload[:1] in "mMpP" else "")

    def stub(self) -> None:
        if self.connected:
            self.put_packet("T05thread:01;")
        while True:
            body = self.get_packet()
            if body[:1] in ("c", "s", "D"):
                # kgdb's state changes before its reply goes out: a test that reads it
                # once gdb heard the reply sees the kernel running
                self.stopped = False
                if body == "D":
                    self.connected = False
                    self.put_packet("OK")
                return
            self.put_packet(self.answer(body))

    def kgdb(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.stopped:
                        if self.closing:
                            return
                        self.cond.wait(0.1)
                self.stub()
        except Closing:
            return

    def close(self) -> None:
        self.closing = True
        for t in self.threads:
            t.join()
        self.sock.close()


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[FakeKgdboe]:
    s = FakeKgdboe(request.param)
    yield s
    s.close()


def need_gdb() -> None:
    if shutil.which("gdb") is None:
        pytest.skip("gdb missing (scripts/setup.sh installs it)")


def connect(port: int):  # type: ignore[no-untyped-def]
    from kdbg.debugger.session import Session

    need_gdb()
    return Session.connect(f"udp:127.0.0.1:{port}", timeout=30, watchdog=False,
                           handle_sigterm=False)


@pytest.mark.parametrize("stub", ["orphaned"], indirect=True)
def test_the_probe_stops_a_kgdboe_whose_debugger_died(stub: FakeKgdboe) -> None:
    assert kgdbprobe.probe("127.0.0.1", stub.port, answer_within=0.5) == "broke-in"
    assert stub.stopped
    assert stub.got[0] == kgdbprobe.QUERY and stub.got[1] == b"\x03", stub.got


@pytest.mark.parametrize("stub", ["running", "halted"], indirect=True)
def test_the_probe_gets_an_answer_from_a_live_or_halted_kgdboe(stub: FakeKgdboe) -> None:
    """A running kgdb with no debugger stops for the question; a halted one that waits
    for an ack answers ``-`` first, and the probe asks again."""
    assert kgdbprobe.probe("127.0.0.1", stub.port) == "answered"
    assert b"\x03" not in b"".join(stub.got)
    assert stub.stopped


def test_the_probe_hears_nothing_from_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        port = quiet.getsockname()[1]
        started = time.monotonic()
        assert kgdbprobe.probe("127.0.0.1", port, answer_within=0.3, stop_within=0.3) \
            == "silent"
        assert quiet.recv(16) == kgdbprobe.QUERY
        assert quiet.recv(16) == b"\x03"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("stub", ["orphaned"], indirect=True)
def test_a_deaf_kgdboe_gets_a_break_in_and_gdb_attaches_at_once(stub: FakeKgdboe) -> None:
    """The break-in comes before gdb's first packet, so kgdb answers gdb, not the byte's
    sender: the attach takes the probe's wait and no remotetimeout (10 s) on top."""
    started = time.monotonic()
    s = connect(stub.port)
    try:
        took = time.monotonic() - started
        assert s.state.attach_note == breakin.BROKE_IN
        assert kgdbprobe.ANSWER_WITHIN <= took < kgdbprobe.ANSWER_WITHIN + 4, took
        assert not s.state.running
    finally:
        report = s.close()
    assert any(d.startswith(b"$D") for d in stub.got), stub.got  # detached at the end
    assert report.ok, report
    assert not stub.stopped and not stub.connected


@pytest.mark.parametrize("stub", ["running", "halted"], indirect=True)
def test_a_live_kgdboe_is_not_interrupted(stub: FakeKgdboe) -> None:
    started = time.monotonic()
    s = connect(stub.port)
    try:
        assert s.state.attach_note is None
        assert time.monotonic() - started < kgdbprobe.ANSWER_WITHIN
        assert not any(b"\x03" in d for d in stub.got)
    finally:
        s.close()
    assert not stub.stopped


@pytest.mark.parametrize("stub", ["orphaned"], indirect=True)
def test_a_connect_that_fails_after_the_probe_releases_the_target(
        stub: FakeKgdboe, monkeypatch: pytest.MonkeyPatch) -> None:
    """gdb fails before it attached (here: its set-up, made to fail once the probe has
    stopped the kernel): a fresh gdb attaches and detaches, and the kernel runs."""
    from kdbg.debugger.connection import Connection
    from kdbg.errors import KdbgError

    def failing_setup(self: Connection, timeout: float) -> None:
        assert self.probe is not None
        self.probe.result()
        raise KdbgError("set-up failed")

    monkeypatch.setattr(Connection, "setup", failing_setup)
    with pytest.raises(KdbgError, match="set-up failed") as caught:
        connect(stub.port)
    report = caught.value.kdbg_cleanup  # type: ignore[attr-defined]
    assert report.ok, report
    assert report.steps == ["KGDBoE's probe may have stopped the target",
                            "reattached with a fresh gdb and detached (the target resumed)"]
    assert not stub.stopped and not stub.connected


def test_nudge_sends_the_byte_from_under_a_prefix() -> None:
    """Under gdb's command prefix (``ip netns exec NS`` in a lab; ``env`` here) the byte
    is sent by a child, from where gdb runs."""
    from kdbg.debugger.endpoint import Endpoint

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        ep = Endpoint.parse(f"udp:127.0.0.1:{rx.getsockname()[1]}")
        breakin.nudge(ep, prefix=("env",))
        assert rx.recv(16) == b"\x03"
        breakin.nudge(ep)
        assert rx.recv(16) == b"\x03"
    breakin.nudge(Endpoint.parse("udp:127.0.0.1:9"), prefix=("false",))  # best effort
