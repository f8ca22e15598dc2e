"""The lab's guest agent: readies the guest, then serves ``kdbg lab exec`` over TCP.

It runs inside the guest as virtme-ng's boot command, from the host's files that the
guest sees over 9p, with the same Python as the host's kdbg. It uses the standard
library only and imports nothing from kdbg, so it starts fast under TCG.

Setup, in order: tracefs and debugfs mounted, ``/lib/modules/$(uname -r)/{build,source}``
present when the host's headers match, loopback up, the exec NIC (found by MAC) at
``10.0.2.15/24``, the KGDBoE NIC (if any) at its address, a root shell on the
interactive console tty. Then it listens on ``PORT`` and prints ``kdbg-agent: ready``.

Wire protocol, both ways: frames of ``kind`` (1 byte), ``length`` (4 bytes, big
endian), ``payload``. The client opens with ``P`` (ping; answered with ``P`` + JSON of
guest facts) or ``R`` (run; JSON ``{"argv", "env", "cwd", "stdin"}``). During a run the
client may send ``I`` (stdin bytes), ``C`` (close stdin) and ``K`` (signal number, ASCII);
the agent sends ``O`` (stdout bytes), ``E`` (stderr bytes) and finally ``X`` (JSON
``{"status"}``, 128+N when killed by signal N). When the client goes away the agent kills
the command's process group. The stream has no timers of its own, so a guest halted by
a debugger only pauses it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

PING = b"P"
RUN = b"R"
STDIN = b"I"
STDIN_EOF = b"C"
SIGNAL = b"K"
STDOUT = b"O"
STDERR = b"E"
EXIT = b"X"
HEADER = struct.Struct(">cI")
MAX_FRAME = 16 << 20

GUEST_EXEC_IP = "10.0.2.15"
GUEST_PORT = 7022
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def send_frame(sock: socket.socket, kind: bytes, payload: bytes = b"") -> None:
    """Write one frame (the caller serialises writers)."""
    sock.sendall(HEADER.pack(kind, len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """Read one frame; None at end of stream."""
    head = _recv_exact(sock, HEADER.size)
    if head is None:
        return None
    kind, length = HEADER.unpack(head)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    payload = _recv_exact(sock, length) if length else b""
    if payload is None:
        return None
    return kind, payload


def log(msg: str) -> None:
    print(f"kdbg-agent: {msg}", flush=True)


def sh(*argv: str) -> bool:
    """Run a setup command; report, never raise."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        log(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc.returncode == 0


# --- guest setup -------------------------------------------------------------------------


def mount_fs() -> None:
    with open("/proc/mounts") as fh:
        mounts = {line.split()[1] for line in fh}
    for fstype, where in (("tracefs", "/sys/kernel/tracing"), ("debugfs", "/sys/kernel/debug")):
        if where not in mounts:
            sh("mount", "-t", fstype, "nodev", where)


def link_headers() -> None:
    release = os.uname().release
    moddir = f"/lib/modules/{release}"
    flavour = release.rsplit("-", 1)[0]
    for link, target in (
        ("build", f"/usr/src/linux-headers-{release}"),
        ("source", f"/usr/src/linux-headers-{flavour}-common"),
    ):
        path = os.path.join(moddir, link)
        if not os.path.exists(path) and os.path.isdir(target):
            try:
                os.makedirs(moddir, exist_ok=True)
                os.symlink(target, path)
            except OSError as err:
                log(f"cannot link {path}: {err}")


def iface_by_mac(mac: str, wait: float = 10.0) -> str | None:
    deadline = time.monotonic() + wait
    while True:
        for name in os.listdir("/sys/class/net"):
            try:
                with open(f"/sys/class/net/{name}/address") as fh:
                    if fh.read().strip().lower() == mac.lower():
                        return name
            except OSError:
                continue
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def setup_nic(mac: str, cidr: str, module: str) -> None:
    subprocess.run(["modprobe", "-q", module], capture_output=True)
    name = iface_by_mac(mac)
    if name is None:
        log(f"no NIC with MAC {mac}")
        return
    sh("ip", "addr", "add", cidr, "dev", name)
    sh("ip", "link", "set", name, "up")
    log(f"{name} ({mac}) at {cidr}")


def shell_on(tty: str) -> None:
    """Keep a root login shell on ``tty`` (the interactive console), respawning it."""

    def loop() -> None:
        while True:
            pid = os.fork()
            if pid == 0:
                try:
                    os.setsid()
                    fd = os.open(tty, os.O_RDWR)  # first tty opened: our controlling tty
                    for std in (0, 1, 2):
                        os.dup2(fd, std)
                    env = dict(os.environ, TERM="linux", PATH=DEFAULT_PATH, HOME="/root")
                    env["PS1"] = "lab# "
                    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
                    args = [shell, "--norc", "-i"] if "bash" in shell else [shell, "-i"]
                    os.execve(shell, args, env)
                finally:
                    os._exit(127)
            os.waitpid(pid, 0)
            time.sleep(1)

    if os.path.exists(tty):
        threading.Thread(target=loop, daemon=True).start()


# --- serving -----------------------------------------------------------------------------


def guest_facts() -> dict[str, Any]:
    def read(path: str) -> str:
        try:
            with open(path) as fh:
                return fh.read().strip()
        except OSError:
            return ""

    return {
        "release": os.uname().release,
        "boot_id": read("/proc/sys/kernel/random/boot_id"),
        "cmdline": read("/proc/cmdline"),
        "tracefs": os.path.exists("/sys/kernel/tracing/events"),
        "headers": os.path.exists(f"/lib/modules/{os.uname().release}/build/include"),
    }


class Session:
    """One ``R`` request: a command whose output streams back until it exits."""

    def __init__(self, conn: socket.socket, request: dict[str, Any]) -> None:
        self.conn = conn
        self.request = request
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_gone = False
        self.reader: threading.Thread | None = None

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        with self.lock:
            if self.client_gone:
                return
            try:
                send_frame(self.conn, kind, payload)
            except OSError:
                self.client_gone = True

    def run(self) -> None:
        req = self.request
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        env.update(req.get("env") or {})
        try:
            self.proc = subprocess.Popen(
                req["argv"],
                stdin=subprocess.PIPE if req.get("stdin") else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=req.get("cwd") or "/",
                env=env,
                start_new_session=True,
            )
        except OSError as err:
            self.send(STDERR, f"kdbg-agent: {req['argv'][0]}: {err.strerror}\n".encode())
            self.send(EXIT, json.dumps({"status": 127}).encode())
            return
        pumps = [
            threading.Thread(target=self.pump, args=(self.proc.stdout, STDOUT), daemon=True),
            threading.Thread(target=self.pump, args=(self.proc.stderr, STDERR), daemon=True),
        ]
        for t in pumps:
            t.start()
        self.reader = threading.Thread(target=self.read_client, daemon=True)
        self.reader.start()
        code = self.proc.wait()
        for t in pumps:
            t.join(timeout=2.0)
        status = code if code >= 0 else 128 - code
        self.send(EXIT, json.dumps({"status": status}).encode())

    def pump(self, pipe: Any, kind: bytes) -> None:
        fd = pipe.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            self.send(kind, data)

    def read_client(self) -> None:
        assert self.proc is not None
        try:
            while True:
                frame = recv_frame(self.conn)
                if frame is None:
                    break
                kind, payload = frame
                if kind == STDIN and self.proc.stdin:
                    try:
                        self.proc.stdin.write(payload)
                        self.proc.stdin.flush()
                    except OSError:
                        pass
                elif kind == STDIN_EOF and self.proc.stdin:
                    with contextlib.suppress(OSError):
                        self.proc.stdin.close()
                elif kind == SIGNAL:
                    self.killpg(int(payload))
        except (OSError, ValueError):
            pass
        if self.proc.poll() is None:
            with self.lock:
                self.client_gone = True
            self.killpg(signal.SIGHUP)
            self.killpg(signal.SIGTERM)
            deadline = time.monotonic() + 3
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            self.killpg(signal.SIGKILL)

    def killpg(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def handle(conn: socket.socket) -> None:
    session = None
    try:
        frame = recv_frame(conn)
        if frame is None:
            return
        kind, payload = frame
        if kind == PING:
            send_frame(conn, PING, json.dumps(guest_facts()).encode())
        elif kind == RUN:
            session = Session(conn, json.loads(payload))
            session.run()
    except (OSError, ValueError) as err:
        log(f"connection: {err}")
    finally:
        _linger_close(conn, session.reader if session else None)


def _linger_close(conn: socket.socket, reader: threading.Thread | None) -> None:
    """Close after the client has read everything: closing with unread client data
    (stdin nobody wanted) would reset the connection and could lose the exit frame."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_WR)
    if reader is not None:
        reader.join(timeout=10)
    else:
        conn.settimeout(10)
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass
    conn.close()


def serve(port: int, bind: str) -> None:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(16)
    log(f"ready on {bind}:{port}")
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=GUEST_PORT)
    ap.add_argument("--exec-mac", required=True)
    ap.add_argument("--oe-mac")
    ap.add_argument("--oe-cidr")
    ap.add_argument("--shell-tty")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    mount_fs()
    link_headers()
    sh("ip", "link", "set", "lo", "up")
    setup_nic(args.exec_mac, f"{GUEST_EXEC_IP}/24", "virtio_net")
    if args.oe_mac and args.oe_cidr:
        setup_nic(args.oe_mac, args.oe_cidr, "e1000")
    if args.shell_tty:
        shell_on(args.shell_tty)
    serve(args.port, GUEST_EXEC_IP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
