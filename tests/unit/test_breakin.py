"""Attaching to a KGDBoE target whose debugger died: real gdb against a small fake
UDP stub on loopback that, like KGDBoE in that state, ignores every gdb packet until
it gets the break-in byte (the real one is tests/vm/test_kgdboe.py's, opt-in)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kdbg.debugger import breakin

REPLIES = {"?": "S05", "qAttached": "1", "Hg0": "OK", "Hc-1": "OK", "Hc0": "OK",
           "D": "OK", "qSymbol::": "OK"}


def packet(payload: str) -> bytes:
    return f"${payload}#{sum(payload.encode()) % 256:02x}".encode()


class FakeKgdboe:
    """A minimal gdb remote stub over UDP: ``deaf`` until 0x03 arrives (a debugger died
    while the target ran), or answering from the start (``live``)."""

    def __init__(self, mode: str) -> None:
        self.live = mode == "live"
        self.got: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def answer(self, payload: str) -> str:
        if payload.startswith("qSupported"):
            return "PacketSize=1000"
        if payload == "g":
            return "00" * 8 * 17  # rax..r15, rip: the rest is unavailable
        return REPLIES.get(payload, "E01" if payload[:1] in "mMpP" else "")

    def serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.got.append(data)
            if b"\x03" in data:
                self.live = True
                self.sock.sendto(packet("S05"), peer)
            if not self.live:
                continue
            text = data.decode(errors="replace")
            while "$" in text and "#" in text.split("$", 1)[1]:
                body, text = text.split("$", 1)[1].split("#", 1)
                text = text[2:]
                self.sock.sendto(b"+" + packet(self.answer(body)), peer)

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def stub(request: pytest.FixtureRequest) -> Iterator[FakeKgdboe]:
    s = FakeKgdboe(request.param)
    yield s
    s.close()


def connect(port: int):  # type: ignore[no-untyped-def]
    from kdbg.debugger.session import Session

    if shutil.which("gdb") is None:
        pytest.skip("gdb missing (scripts/setup.sh installs it)")
    return Session.connect(f"udp:127.0.0.1:{port}", timeout=30, watchdog=False,
                           handle_sigterm=False)


@pytest.mark.parametrize("stub", ["deaf"], indirect=True)
def test_a_deaf_kgdboe_gets_a_break_in_and_the_attach_goes_on(stub: FakeKgdboe) -> None:
    started = time.monotonic()
    s = connect(stub.port)
    try:
        took = time.monotonic() - started
        assert s.attach_note == breakin.BROKE_IN
        assert b"\x03" in stub.got
        assert breakin.ANSWER_WITHIN <= took < breakin.ANSWER_WITHIN + 10
        assert not s.running
    finally:
        report = s.close()
    assert any(d.startswith(b"$D") for d in stub.got), stub.got  # detached at the end
    assert report.ok, report


@pytest.mark.parametrize("stub", ["live"], indirect=True)
def test_a_live_kgdboe_is_not_interrupted(stub: FakeKgdboe) -> None:
    s = connect(stub.port)
    try:
        assert s.attach_note is None
        assert not any(b"\x03" in d for d in stub.got)
    finally:
        s.close()


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
