"""kdbg watch --bpf in the lab guest: an XDP program's and a tc program's drops, named
to the program and its line.

The host kernel refuses fexit programs (EPERM; ``kdbg doctor`` says so), so this runs
in the default lab (Debian 6.1: BTF, a JIT and fexit). In the guest, a veth pair joins
the guest's own namespace to a throw-away one. tests/data/bpfprog/xdp_drop_port.c,
built by bcc there (tests/vm/bpf_loader.py), runs on the inner end's XDP hook and drops
UDP to one port; or tc_shoot_port.c runs on the outer end's egress and shoots it.
Seven datagrams go to that port and seven to another: ``kdbg watch --bpf`` must report
exactly the seven, each naming the program, the verdict, the interface and the line
that decides the drop.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kdbg import lab as labmod

DROP_PORT, PASS_PORT, SENT = 7777, 7778, 7
LOADER = Path(__file__).with_name("bpf_loader.py")
# kind: (the program's name, its verdict, the end it runs on)
KINDS = {"xdp": ("kdbg_test_xdp", "XDP_DROP", "inner"),
         "tc": ("kdbg_test_tc", "TC_ACT_SHOT", "outer")}
# where each runs, as the record's attach says: bcc's attach_xdp with no flags on a veth
# (which has its own XDP: the driver's hook), and tc's egress
ATTACH = {"xdp": "xdp/driver", "tc": "tc/egress"}
DROP_IF = "if (udp->dest == htons(DROP_PORT))"

SCENARIO = """
import json, os, signal, socket, subprocess, sys, time
PY, LOADER, NS, KIND = {py!r}, {loader!r}, "bpfx%d" % os.getpid(), {kind!r}
OUTER, INNER = "bpfo%d" % (os.getpid() % 10000), "bpfi%d" % (os.getpid() % 10000)
def sh(cmd):
    subprocess.run(cmd, shell=True, check=True)
loader = watch = None
sh("ip netns add " + NS)
try:
    sh(f"ip link add {{OUTER}} type veth peer name {{INNER}} netns {{NS}}")
    sh(f"ip addr add 10.99.0.1/24 dev {{OUTER}} && ip link set {{OUTER}} up")
    sh(f"ip -n {{NS}} addr add 10.99.0.2/24 dev {{INNER}} && ip -n {{NS}} link set {{INNER}} up")
    where = ["ip", "netns", "exec", NS] if KIND == "xdp" else []
    loader = subprocess.Popen([*where, PY, LOADER, KIND, INNER if KIND == "xdp" else OUTER,
                               "{drop}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    ready = loader.stdout.readline().split()
    assert ready[:1] == ["ready"], ready
    watch = subprocess.Popen([PY, "-m", "kdbg", "watch", "--bpf", "--json",
                              "--prog", {name!r}],
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
    print(json.dumps({{"prog": int(ready[1]), "inner": INNER, "outer": OUTER,
                       "status": watch.returncode,
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
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bpf_drop_named_to_program_interface_and_line(default_lab: str, kind: str) -> None:
    name, verdict, end = KINDS[kind]
    script = SCENARIO.format(py=sys.executable, loader=str(LOADER), drop=DROP_PORT,
                             other=PASS_PORT, sent=SENT, kind=kind, name=name)
    done = labmod.run(default_lab, [sys.executable, "-c", script], timeout=1200)
    assert done.status == 0, done.stderr.decode()[-3000:]
    res = json.loads(done.stdout.decode().splitlines()[-1])
    assert res["status"] == 0, res["err"]
    recs = [json.loads(line) for line in res["out"].splitlines()]
    drops = [r for r in recs if r["type"] == "drop"]
    assert len(drops) == SENT, res["out"]
    for r in drops:
        assert (r["reason"], r["proto"], r["dport"]) == (verdict, "udp", DROP_PORT)
        assert (r["saddr"], r["daddr"], r["ifname"]) == ("10.99.0.1", "10.99.0.2", res[end])
        prog = r["prog"]
        assert (prog["id"], prog["name"], prog["type"]) == (res["prog"], name, kind)
        assert prog["attach"] == ATTACH[kind]
        assert r["location"] == f"bpf_prog_{prog['tag']}_{name}+0x0"
        assert [ln["text"] for ln in prog["verdict_lines"]] == [DROP_IF]
        assert r["line"] == prog["verdict_lines"][0]["line"]
    assert sorted(r["len"] for r in drops) == [14 + 20 + 8 + 5] * SENT  # b"dropN"
    (summary,) = [r for r in recs if r["type"] == "summary"]
    assert summary["matched"] == SENT and summary["lost"] == 0
    # Nothing of ours is left in the guest: the netns, the veth, the program.
    left = labmod.run(default_lab, ["sh", "-c", "ip netns list; ip -o link"], timeout=120)
    assert "bpfx" not in left.stdout.decode() and res["outer"] not in left.stdout.decode()
