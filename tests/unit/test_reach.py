"""Nothing behind a gdb endpoint: said in one line, fast, before gdb starts, and without
connecting to a local stub (a connection would stop a QEMU guest)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.debugger import reach
from kdbg.debugger.endpoint import Endpoint
from kdbg.debugger.errors import TargetUnreachable
from tests.conftest import need


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
        yield s.getsockname()[1]


def test_tcp_nothing_listening(closed_port: int) -> None:
    with pytest.raises(TargetUnreachable, match=f"nothing listens on port {closed_port}"):
        reach.check(Endpoint.parse(f"tcp:127.0.0.1:{closed_port}"))


def test_tcp_listening_is_not_connected_to() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        srv.settimeout(0.2)
        port = srv.getsockname()[1]
        assert reach.check(Endpoint.parse(f"tcp:127.0.0.1:{port}")) == "listening"
        assert reach.check(Endpoint.parse(f"serial:localhost:{port}")) == "listening"
        with pytest.raises(TimeoutError):
            srv.accept()  # the check made no connection


def test_udp_bound_or_not() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert reach.check(Endpoint.parse(f"udp:127.0.0.1:{port}")) == "listening"
    with pytest.raises(TargetUnreachable, match="no UDP socket is bound"):
        reach.check(Endpoint.parse(f"udp:127.0.0.1:{port}"))


def test_unix_sockets(tmp_path: Path) -> None:
    path = tmp_path / "gdb.sock"
    with pytest.raises(TargetUnreachable, match="no socket at"):
        reach.check(Endpoint.parse(f"unix:{path}"))
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(str(path))
        with pytest.raises(TargetUnreachable, match="nothing listens on"):
            reach.check(Endpoint.parse(f"unix:{path}"))  # a stale socket file
        srv.listen(1)
        assert reach.check(Endpoint.parse(f"unix:{path}")) == "listening"
        assert reach.check(Endpoint.parse(f"serial:{path}")) == "listening"
    (tmp_path / "plain").write_text("")
    with pytest.raises(TargetUnreachable, match="is not a socket"):
        reach.check(Endpoint.parse(f"unix:{tmp_path / 'plain'}"))


def test_missing_tty() -> None:
    with pytest.raises(TargetUnreachable, match="no serial device"):
        reach.check(Endpoint.parse("/dev/ttyKDBG-none"))


@pytest.mark.parametrize("command", [["gdb", "attach"], ["gdb", "break", "tcp_v4_rcv"]])
def test_cli_fails_within_3_s_with_one_line(command: list[str], closed_port: int) -> None:
    t0 = time.monotonic()
    result = CliRunner().invoke(main, [*command, "--gdb", f"tcp:127.0.0.1:{closed_port}",
                                       "--kallsyms", "/dev/null"])
    took = time.monotonic() - t0
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbg: error: nothing listens on port")
    assert took < 3.0


def test_gdb_itself_gives_up_fast(closed_port: int) -> None:
    """Where the pre-flight cannot look (gdb under a prefix, in another netns), gdb's own
    connect does not retry: a refused connection fails at once, not after 15 s."""
    need(shutil.which("gdb") is not None, "gdb is not installed (apt-get install gdb)")
    from kdbg.debugger import Session

    t0 = time.monotonic()
    with pytest.raises(TargetUnreachable, match="cannot attach"):
        Session.connect(f"tcp:127.0.0.1:{closed_port}", gdb_prefix=("env",), timeout=10,
                        watchdog=False)
    assert time.monotonic() - t0 < 3.0


def test_remote_hosts_are_left_to_gdb() -> None:
    # 192.0.2.0/24 (TEST-NET-1) is never this host's address here unless configured
    addr = "198.51.100.7"
    need(not any(addr in line for line in os.popen("ip -o addr").read().splitlines()),
         f"{addr} is assigned to this host")
    assert reach.check(Endpoint.parse(f"tcp:{addr}:1234")) == "not checked (remote)"
