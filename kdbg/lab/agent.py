"""The lab's guest agent: readies the guest, then serves ``kdbg lab exec`` over TCP.

It runs inside the guest as virtme-ng's boot command, from the host's files that the
guest sees over 9p, with the host's Python started with ``-S``. Under TCG every file
Python opens over 9p costs tens of milliseconds, so this file imports only built-in
modules (``_socket``, ``_thread``, ``_signal``, ``fcntl``, ``os``): that took the
agent's start from about 15 s to about 1 s. Nothing here imports kdbg.

Setup, in order: tracefs and debugfs mounted (virtme-ng-init usually did it),
``/lib/modules/$(uname -r)/{build,source}`` present when the host's headers match,
loopback up, the exec NIC (found by MAC; its driver is modprobed by the boot script
while Python starts) at ``10.0.2.15/24``, the KGDBoE NIC (if any) at its address, a root
shell on the interactive console tty. Then it listens and prints ``ready``.

Wire protocol, both ways: frames of ``kind`` (1 byte), ``length`` (4 bytes, big
endian), ``payload``. The client opens with ``P`` (ping; answered with ``P`` and
``key=value`` lines of guest facts) or ``R`` (run; NUL-separated fields: stdin flag
``0``/``1``, cwd, argc, argv..., then ``KEY=VALUE`` environment entries). During a run
the client may send ``I`` (stdin bytes), ``C`` (close stdin) and ``K`` (signal number,
ASCII); the agent sends ``O`` (stdout bytes), ``E`` (stderr bytes) and finally ``X``
(exit status, ASCII; 128+N when killed by signal N). When the client goes away the
agent kills the command's process group. The stream has no timers of its own, so a
guest halted by a debugger only pauses it.
"""

import _signal
import _socket
import _thread
import fcntl
import os
import sys
import time

PING = b"P"
RUN = b"R"
STDIN = b"I"
STDIN_EOF = b"C"
SIGNAL = b"K"
STDOUT = b"O"
STDERR = b"E"
EXIT = b"X"
HEADER_SIZE = 5
MAX_FRAME = 16 << 20

GUEST_EXEC_IP = "10.0.2.15"
GUEST_PORT = 7022
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SIGHUP, SIGKILL, SIGTERM = 1, 9, 15


# --- frames (also used by the host side, kdbg.lab.channel) ---------------------------------


def send_frame(sock: _socket.socket, kind: bytes, payload: bytes = b"") -> None:
    """Write one frame (the caller serialises writers)."""
    sock.sendall(kind + len(payload).to_bytes(4, "big") + payload)


def _recv_exact(sock: _socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: _socket.socket) -> tuple[bytes, bytes] | None:
    """Read one frame; None at end of stream."""
    head = _recv_exact(sock, HEADER_SIZE)
    if head is None:
        return None
    kind, length = head[:1], int.from_bytes(head[1:], "big")
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    payload = _recv_exact(sock, length) if length else b""
    if payload is None:
        return None
    return kind, payload


def encode_run(argv: list[str], env: dict[str, str], cwd: str, stdin: bool) -> bytes:
    """The ``R`` payload."""
    fields = ["1" if stdin else "0", cwd, str(len(argv)), *argv]
    fields += [f"{k}={v}" for k, v in env.items()]
    if any("\0" in f for f in fields):
        raise ValueError("NUL in a command, its environment or cwd")
    return "\0".join(fields).encode()


def decode_run(payload: bytes) -> tuple[list[str], dict[str, str], str, bool]:
    fields = payload.decode().split("\0")
    stdin, cwd, argc = fields[0] == "1", fields[1], int(fields[2])
    argv = fields[3 : 3 + argc]
    env = dict(f.split("=", 1) for f in fields[3 + argc :] if "=" in f)
    return argv, env, cwd, stdin


def encode_facts(facts: dict[str, str]) -> bytes:
    return "".join(f"{k}={v.replace(chr(10), ' ')}\n" for k, v in facts.items()).encode()


def decode_facts(payload: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in payload.decode().splitlines() if "=" in line)


# --- guest setup -------------------------------------------------------------------------


def log(msg: str) -> None:
    up = read("/proc/uptime").split(" ")[0] or "?"
    sys.stdout.write(f"[{up:>8}] kdbg-agent: {msg}\n")
    sys.stdout.flush()


def read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def run_tool(*argv: str) -> int:
    """fork+exec a setup tool and wait; its status (no subprocess module: see above)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.execvpe(argv[0], list(argv), {"PATH": DEFAULT_PATH})
        finally:
            os._exit(127)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def mount_fs() -> None:
    mounts = {line.split(" ")[1] for line in read("/proc/mounts").splitlines() if " " in line}
    for fstype, where in (("tracefs", "/sys/kernel/tracing"), ("debugfs", "/sys/kernel/debug")):
        if where not in mounts and run_tool("mount", "-t", fstype, "nodev", where) != 0:
            log(f"cannot mount {fstype} on {where}")


def link_headers() -> None:
    release = os.uname().release
    moddir = f"/lib/modules/{release}"
    flavour = release.rsplit("-", 1)[0]
    for link, target in (
        ("build", f"/usr/src/linux-headers-{release}"),
        ("source", f"/usr/src/linux-headers-{flavour}-common"),
    ):
        path = f"{moddir}/{link}"
        if not os.path.exists(path) and os.path.isdir(target):
            try:
                os.makedirs(moddir, exist_ok=True)
                os.symlink(target, path)
            except OSError as err:
                log(f"cannot link {path}: {err}")


SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK = 0x8913, 0x8914, 0x8916, 0x891C
IFF_UP = 0x1


def _ifreq_addr(name: str, ip: str) -> bytes:
    sin = (2).to_bytes(2, "little") + bytes(2) + _socket.inet_aton(ip) + bytes(8)
    return name.encode().ljust(16, b"\0") + sin + bytes(8)


def iface_config(name: str, cidr: str | None) -> None:
    """Set ``cidr`` (if any) on ``name`` and bring it up, with ioctls (no ``ip`` process)."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        if cidr:
            ip, bits = cidr.split("/")
            mask = (0xFFFFFFFF << (32 - int(bits))) & 0xFFFFFFFF
            fcntl.ioctl(s.fileno(), SIOCSIFADDR, _ifreq_addr(name, ip))
            dotted = ".".join(str((mask >> sh) & 0xFF) for sh in (24, 16, 8, 0))
            fcntl.ioctl(s.fileno(), SIOCSIFNETMASK, _ifreq_addr(name, dotted))
        req = name.encode().ljust(16, b"\0") + bytes(24)
        flags = int.from_bytes(fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req)[16:18], "little")
        req = name.encode().ljust(16, b"\0") + (flags | IFF_UP).to_bytes(2, "little") + bytes(22)
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, req)
    finally:
        s.close()


def iface_by_mac(mac: str, wait: float = 60.0) -> str | None:
    deadline = time.monotonic() + wait
    while True:
        for name in os.listdir("/sys/class/net"):
            if read(f"/sys/class/net/{name}/address").lower() == mac.lower():
                return name
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def setup_nic(mac: str, cidr: str) -> bool:
    name = iface_by_mac(mac)
    if name is None:
        log(f"no NIC with MAC {mac}")
        return False
    try:
        iface_config(name, cidr)
    except OSError as err:
        log(f"cannot configure {name}: {err}")
        return False
    log(f"{name} ({mac}) at {cidr}")
    return True


def shell_on(tty: str) -> None:
    """Keep a root shell on ``tty`` (the interactive console), respawning it."""

    def loop() -> None:
        while True:
            pid = os.fork()
            if pid == 0:
                try:
                    os.setsid()
                    fd = os.open(tty, os.O_RDWR)  # first tty opened: the controlling tty
                    for std in (0, 1, 2):
                        os.dup2(fd, std)
                    env = {"TERM": "linux", "PATH": DEFAULT_PATH, "HOME": "/root", "PS1": "lab# "}
                    shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
                    args = [shell, "--norc", "-i"] if "bash" in shell else [shell, "-i"]
                    os.execve(shell, args, env)
                finally:
                    os._exit(127)
            os.waitpid(pid, 0)
            time.sleep(1)

    if os.path.exists(tty):
        _thread.start_new_thread(loop, ())


# --- serving -----------------------------------------------------------------------------


def guest_facts() -> dict[str, str]:
    release = os.uname().release
    return {
        "release": release,
        "boot_id": read("/proc/sys/kernel/random/boot_id"),
        "cmdline": read("/proc/cmdline"),
        "tracefs": "1" if os.path.exists("/sys/kernel/tracing/events") else "0",
        "headers": "1" if os.path.exists(f"/lib/modules/{release}/build/include") else "0",
    }


class Done:
    """A one-shot event on a ``_thread`` lock (``threading`` costs a dozen imports)."""

    def __init__(self) -> None:
        self.lock = _thread.allocate_lock()
        self.lock.acquire()

    def set(self) -> None:
        if self.lock.locked():
            self.lock.release()

    def wait(self, timeout: float = -1) -> bool:
        got = bool(self.lock.acquire(True, timeout))
        if got:
            self.lock.release()
        return got


class Session:
    """One ``R`` request: a command whose output streams back until it exits."""

    def __init__(self, conn: _socket.socket, payload: bytes) -> None:
        self.conn = conn
        self.argv, self.env, self.cwd, self.want_stdin = decode_run(payload)
        self.lock = _thread.allocate_lock()
        self.client_gone = False
        self.pid = 0
        self.exited = False
        self.stdin_fd: int | None = None
        self.reader_done = Done()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        with self.lock:
            if self.client_gone:
                return
            try:
                send_frame(self.conn, kind, payload)
            except OSError:
                self.client_gone = True

    def spawn(self) -> str | None:
        """fork+exec the command in its own session; an error message if exec failed."""
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        env.update(self.env)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if self.want_stdin else (os.open(os.devnull, os.O_RDONLY), -1)
        ex_r, ex_w = os.pipe()  # close-on-exec: EOF means exec worked
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                os.dup2(in_r, 0)
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.chdir(self.cwd)
                os.execvpe(self.argv[0], self.argv, env)
            except OSError as err:
                os.write(ex_w, (err.strerror or str(err)).encode())
            finally:
                os._exit(127)
        for fd in (out_w, err_w, in_r, ex_w):
            os.close(fd)
        self.pid = pid
        self.stdin_fd = in_w if in_w >= 0 else None
        self.out_fd, self.err_fd = out_r, err_r
        failure = os.read(ex_r, 4096)
        os.close(ex_r)
        return failure.decode(errors="replace") if failure else None

    def run(self) -> None:
        if not self.argv:
            self.send(EXIT, b"127")
            return
        failure = self.spawn()
        if failure is not None:
            os.waitpid(self.pid, 0)
            self.exited = True
            for fd in (self.out_fd, self.err_fd, self.stdin_fd):
                if fd is not None:
                    os.close(fd)
            self.send(STDERR, f"kdbg-agent: {self.argv[0]}: {failure}\n".encode())
            self.send(EXIT, b"127")
            return
        pumps = [Done(), Done()]
        _thread.start_new_thread(self.pump, (self.out_fd, STDOUT, pumps[0]))
        _thread.start_new_thread(self.pump, (self.err_fd, STDERR, pumps[1]))
        _thread.start_new_thread(self.read_client, ())
        code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        self.exited = True
        for done in pumps:
            done.wait(2.0)
        self.send(EXIT, str(code if code >= 0 else 128 - code).encode())

    def pump(self, fd: int, kind: bytes, done: Done) -> None:
        try:
            while True:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.send(kind, data)
        finally:
            os.close(fd)
            done.set()

    def read_client(self) -> None:
        try:
            while True:
                frame = recv_frame(self.conn)
                if frame is None:
                    break
                kind, payload = frame
                if kind == STDIN and self.stdin_fd is not None:
                    try:  # noqa: SIM105 - contextlib is one more import
                        os.write(self.stdin_fd, payload)
                    except OSError:
                        pass
                elif kind == STDIN_EOF and self.stdin_fd is not None:
                    os.close(self.stdin_fd)
                    self.stdin_fd = None
                elif kind == SIGNAL:
                    self.killpg(int(payload))
        except (OSError, ValueError):
            pass
        finally:
            if not self.exited:
                with self.lock:
                    self.client_gone = True
                self.killpg(SIGHUP)
                self.killpg(SIGTERM)
                deadline = time.monotonic() + 3
                while not self.exited and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.killpg(SIGKILL)
            self.reader_done.set()

    def killpg(self, sig: int) -> None:
        if self.pid and not self.exited:
            try:  # noqa: SIM105
                os.killpg(self.pid, sig)
            except OSError:
                pass


def handle(conn: _socket.socket) -> None:
    session = None
    try:
        frame = recv_frame(conn)
        if frame is None:
            return
        kind, payload = frame
        if kind == PING:
            send_frame(conn, PING, encode_facts(guest_facts()))
        elif kind == RUN:
            session = Session(conn, payload)
            session.run()
    except (OSError, ValueError) as err:
        log(f"connection: {err}")
    finally:
        linger_close(conn, session)


def linger_close(conn: _socket.socket, session: Session | None) -> None:
    """Close after the client has read everything: closing with unread client data
    (stdin nobody wanted) would reset the connection and could lose the exit frame."""
    try:  # noqa: SIM105
        conn.shutdown(_socket.SHUT_WR)
    except OSError:
        pass
    if session is not None and session.pid:
        session.reader_done.wait(10.0)
    else:
        conn.settimeout(10)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
    conn.close()


def serve(port: int, bind: str) -> None:
    srv = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    srv.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(16)
    log(f"ready on {bind}:{port}")
    while True:
        fd, _ = srv._accept()  # type: ignore[attr-defined]
        conn = _socket.socket(fileno=fd)
        conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        _thread.start_new_thread(handle, (conn,))


def parse_args(argv: list[str]) -> dict[str, str]:
    """``--key value`` pairs (argparse alone costs a dozen imports)."""
    opts: dict[str, str] = {}
    for key, value in zip(argv[::2], argv[1::2], strict=False):
        if not key.startswith("--"):
            raise SystemExit(f"kdbg-agent: bad argument {key}")
        opts[key[2:]] = value
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    _signal.signal(SIGHUP, _signal.SIG_IGN)
    log("started")
    mount_fs()
    link_headers()
    iface_config("lo", None)
    if not setup_nic(opts["exec-mac"], f"{GUEST_EXEC_IP}/24"):
        return 1
    if opts.get("oe-mac") and opts.get("oe-cidr"):
        setup_nic(opts["oe-mac"], opts["oe-cidr"])
    if opts.get("shell-tty"):
        shell_on(opts["shell-tty"])
    serve(int(opts.get("port", GUEST_PORT)), GUEST_EXEC_IP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
