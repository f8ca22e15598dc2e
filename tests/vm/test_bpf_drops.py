"""kdbg watch --bpf in the lab guest: an XDP program's drops, named to it and its line.

The host kernel refuses fexit programs (EPERM; ``kdbg doctor`` says so), so this runs
in the default lab (Debian 6.1: BTF, a JIT and fexit). In the guest, a veth pair joins
the guest's own namespace to a throw-away one; tests/data/bpfprog/xdp_drop_port.c,
built by bcc there (tests/vm/xdp_loader.py), runs on the inner end and drops UDP to
one port. Seven datagrams go to that port and seven to another: ``kdbg watch --bpf``
must report exactly the seven, each naming the program, XDP_DROP, the interface and
the line that decides the drop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kdbg import lab as labmod

DROP_PORT, PASS_PORT, SENT = 7777, 7778, 7
LOADER = Path(__file__).with_name("xdp_loader.py")
DROP_IF = "if (udp->dest == htons(DROP_PORT))"

SCENARIO = """
import json, os, signal, socket, subprocess, sys, time
PY, LOADER, NS = {py!r}, {loader!r}, "bpfx%d" % os.getpid()
OUTER, INNER = "bpfo%d" % (os.getpid() % 10000), "bpfi%d" % (os.getpid() % 10000)
def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)
loader = watch = None
sh("ip netns add " + NS)
try:
    sh(f"ip link add {{OUTER}} type veth peer name {{INNER}} netns {{NS}}")
    sh(f"ip addr add 10.99.0.1/24 dev {{OUTER}} && ip link set {{OUTER}} up")
    sh(f"ip -n {{NS}} addr add 10.99.0.2/24 dev {{INNER}} && ip -n {{NS}} link set {{INNER}} up")
    loader = subprocess.Popen(["ip", "netns", "exec", NS, PY, LOADER, INNER, "{drop}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = loader.stdout.readline().split()
    assert ready[:1] == ["ready"], ready
    watch = subprocess.Popen([PY, "-m", "kdbg", "watch", "--bpf", "--json",
                              "--prog", "kdbg_test_xdp"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = watch.stderr.readline()
    assert first.startswith("kdbg: watching"), first + watch.stderr.read()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"arp", ("10.99.0.2", {other}))  # resolves the neighbour first; passed
    time.sleep(1)
    for i in range({sent}):
        s.sendto(b"drop%d" % i, ("10.99.0.2", {drop}))
        s.sendto(b"pass%d" % i, ("10.99.0.2", {other}))
        time.sleep(0.05)
    time.sleep(3)
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=120)
    print(json.dumps({{"prog": int(ready[1]), "inner": INNER, "status": watch.returncode,
                       "out": out, "err": first + err}}))
finally:
    if watch is not None and watch.poll() is None:
        watch.kill()
    if loader is not None:
        loader.stdin.close()
        loader.wait(timeout=120)
    subprocess.run(f"ip link del {{OUTER}}; ip netns del {{NS}}", shell=True)
"""


@pytest.mark.slow
def test_xdp_drop_named_to_program_interface_and_line(default_lab: str) -> None:
    script = SCENARIO.format(py=sys.executable, loader=str(LOADER), drop=DROP_PORT,
                             other=PASS_PORT, sent=SENT)
    done = labmod.run(default_lab, [sys.executable, "-c", script], timeout=1200)
    assert done.status == 0, done.stderr.decode()[-3000:]
    res = json.loads(done.stdout.decode().splitlines()[-1])
    assert res["status"] == 0, res["err"]
    recs = [json.loads(line) for line in res["out"].splitlines()]
    drops = [r for r in recs if r["type"] == "drop"]
    assert len(drops) == SENT, res["out"]
    for r in drops:
        assert (r["reason"], r["proto"], r["dport"]) == ("XDP_DROP", "udp", DROP_PORT)
        assert (r["saddr"], r["daddr"], r["ifname"]) == ("10.99.0.1", "10.99.0.2", res["inner"])
        prog = r["prog"]
        assert (prog["id"], prog["name"], prog["type"]) == (res["prog"], "kdbg_test_xdp", "xdp")
        assert r["location"] == f"bpf_prog_{prog['tag']}_kdbg_test_xdp+0x0"
        assert [ln["text"] for ln in prog["verdict_lines"]] == [DROP_IF]
        assert r["line"] == prog["verdict_lines"][0]["line"]
    assert sorted(r["len"] for r in drops) == [14 + 20 + 8 + 5] * SENT  # b"dropN"
    (summary,) = [r for r in recs if r["type"] == "summary"]
    assert summary["matched"] == SENT and summary["lost"] == 0
    # Nothing of ours is left in the guest: the netns, the veth, the program.
    left = labmod.run(default_lab, ["sh", "-c", "ip netns list; ip -o link"], timeout=120)
    assert "bpfx" not in left.stdout.decode() and res["inner"] not in left.stdout.decode()
