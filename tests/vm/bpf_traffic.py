"""In a lab guest: a throw-away netns joined by a veth pair, the test XDP program on the
inner end (tests/vm/bpf_loader.py), and a datagram to DROP and one to PASS every
half second, until the file STOP exists or LIMIT seconds passed; then everything is
removed. ``bpf_traffic.py DROP PASS STOP LIMIT``. Prints ``ready ID`` once the program
is attached and ``sent N`` at the end. Run by tests/vm/test_bpf_break.py (the
break-watch on the host needs drops to come while it arms and stops).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOADER = Path(__file__).with_name("bpf_loader.py")


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


@contextlib.contextmanager
def xdp_on_veth(drop: int, subnet: int = 99, quiet: bool = False
                ) -> Iterator[tuple[int, str, str]]:
    """A throw-away netns joined by a veth pair (10.SUBNET.0.1 outside, .2 inside), the
    test XDP program dropping UDP to ``drop`` on the inner end: ``(program id, inner,
    outer)``; all of it removed at the end. Also bench/xdp_guest.py's. ``quiet``: no
    IPv6 on the pair and the inner end's address resolved for good, so that only what
    the caller sends reaches the program."""
    ns, tag = f"bpfx{os.getpid()}", os.getpid() % 10000
    outer, inner = f"bpfo{tag}", f"bpfi{tag}"
    loader = None
    sh(f"ip netns add {ns}")
    try:
        sh(f"ip link add {outer} type veth peer name {inner} netns {ns}")
        if quiet:
            sh(f"sysctl -qw net.ipv6.conf.{outer}.disable_ipv6=1 && ip netns exec {ns} "
               f"sysctl -qw net.ipv6.conf.{inner}.disable_ipv6=1")
        sh(f"ip addr add 10.{subnet}.0.1/24 dev {outer} && ip link set {outer} up")
        sh(f"ip -n {ns} addr add 10.{subnet}.0.2/24 dev {inner} && "
           f"ip -n {ns} link set {inner} up")
        if quiet:
            sh(f"ip neigh replace 10.{subnet}.0.2 lladdr $(ip -n {ns} -br link show {inner} "
               f"| awk '{{print $3}}') dev {outer} nud permanent")
        loader = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(LOADER),
                                   "xdp", inner, str(drop)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert loader.stdout is not None
        ready = loader.stdout.readline().split()
        if ready[:1] != ["ready"]:
            raise RuntimeError(f"the XDP program did not load: {ready}")
        yield int(ready[1]), inner, outer
    finally:
        if loader is not None:
            assert loader.stdin is not None
            loader.stdin.close()
            loader.wait(timeout=120)
        subprocess.run(f"ip link del {outer} 2>/dev/null; ip netns del {ns}", shell=True,
                       check=False)


def main(drop: int, other: int, stop: Path, limit: float) -> int:
    sent = 0
    try:
        with xdp_on_veth(drop) as (prog_id, inner, outer):
            print("ready", prog_id, inner, outer, flush=True)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            end = time.monotonic() + limit
            while time.monotonic() < end and not stop.exists():
                s.sendto(b"drop%d" % sent, ("10.99.0.2", drop))
                s.sendto(b"pass%d" % sent, ("10.99.0.2", other))
                sent += 1
                time.sleep(0.5)
    finally:
        stop.unlink(missing_ok=True)
    print("sent", sent, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])))
