"""Causes on real drops: rules, policies, missing sockets and settings, provoked for
real in throw-away namespaces, with exact counts; the ruleset is never changed.

One namespace pair carries every flow of the scenario, and one ``kdbg watch --json``
(and one ``kdbg diagnose --json``) sees them all, so bcc compiles twice, not per flow.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from kdbg.demo.throwaway import PY, VethLab

KDBG = [sys.executable, "-m", "kdbg"]

RULESET = """
table inet kdbgt {
	chain input {
		type filter hook input priority 10; policy accept;
		ct state established,related accept
		ip6 daddr fd77:9::2 udp dport 6001 counter drop
		tcp dport 22 accept
		jump checks
	}
	chain checks {
		udp sport 53 return
		iifname "veth*" udp dport 6666 counter drop
	}
}
table ip pol {
	chain in {
		type filter hook input priority 20; policy drop;
		udp dport != 7001 accept
		icmp type echo-request accept
	}
}
"""

# Sent from namespace a: (count, what, dport). Raw sockets craft the bad packets.
SEND = r"""
import socket, struct, time
A, B, A6, B6, SPOOF = {a!r}, {b!r}, {a6!r}, {b6!r}, {spoof!r}

def udp(n, dport, src=A, dst=B, size=8):
    fam = socket.AF_INET6 if ':' in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, 40000))
    for i in range(n):
        s.sendto(b'k' * size, (dst, dport))
    s.close()
    time.sleep(0.05)

def raw(n, dport, ulen, csum):
    # The kernel writes the IP header; we write the UDP header as given.
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.bind((A, 0))
    for i in range(n):
        s.sendto(struct.pack('!HHHH', 40001, dport, ulen, csum) + b'kdbg', (B, 0))
    s.close()
    time.sleep(0.05)

udp(23, 5555)
udp(13, 6666)
udp(11, 7001)
udp(7, 6001, A6, B6)
udp(17, 7777)
udp(5, 9000, src=SPOOF)
raw(3, 9100, 12, 0x1234)
raw(2, 9200, 200, 0)
udp(23, 8000, size=1400)
time.sleep(0.2)
"""

# Held open in namespace b while traffic flows: a listener at another address than
# the one the packets go to, and a datagram socket with a tiny buffer nobody reads.
LISTEN = r"""
import socket, sys, time
lo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
lo.bind(('127.0.0.1', 7777))
slow = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
slow.bind(({b!r}, 8000))
print('ready', flush=True)
sys.stdin.read()
"""


@dataclass
class Scene:
    lab: VethLab
    drops: list[dict[str, Any]]
    diagnosis: list[dict[str, Any]]
    before: str
    after: str
    rcvbuf_watch: int  # the socket's own drop counter, over the watch
    rcvbuf_diagnose: int  # and over the diagnose run
    stderr: str


def nft_stateless(lab: VethLab) -> str:
    return lab.b.run(["nft", "-s", "list", "ruleset"]).stdout


def socket_drops(lab: VethLab, port: int) -> int:
    table = lab.b.run(["cat", "/proc/net/udp"]).stdout.splitlines()[1:]
    for line in table:
        cols = line.split()
        if int(cols[1].split(":")[1], 16) == port:
            return int(cols[12])
    raise AssertionError(f"no socket on port {port}")


def run_json(argv: list[str], timeout: float = 180) -> tuple[list[dict[str, Any]], str]:
    proc = subprocess.run([*KDBG, *argv, "--json"], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    with VethLab(prefix="kdbgcause", subnet=9) as lab:
        spoof = "10.99.0.1"
        lab.drop_udp(5555)  # iptables (iptables-nft): table ip filter, chain INPUT
        lab.b.run(["nft", "-f", "-"], input_=RULESET)
        lab.a.run(["ip", "addr", "add", f"{spoof}/32", "dev", "veth-a"])
        # The route back to the spoofed source leaves by another interface: rp_filter.
        lab.b.run(["ip", "link", "add", "vx0", "type", "veth", "peer", "name", "vx1"])
        lab.b.run(["ip", "link", "set", "vx0", "up"])
        lab.b.run(["ip", "route", "add", "10.99.0.0/24", "dev", "vx0"])
        for conf in ("all", "veth-b"):
            lab.b.run(["sysctl", "-q", "-w", f"net.ipv4.conf.{conf}.rp_filter=1"])
        send = SEND.format(a=lab.addr_a, b=lab.addr_b, a6=lab.addr6_a, b6=lab.addr6_b,
                           spoof=spoof)
        cmd = shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", send])
        listener = lab.b.popen([PY, "-c", LISTEN.format(b=lab.addr_b)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
        try:
            assert listener.stdout is not None and listener.stdout.readline() == b"ready\n"
            before = nft_stateless(lab)
            watch_recs, err = run_json(["watch", "--netns", lab.b.name, "--cmd", cmd])
            first = socket_drops(lab, 8000)
            diag_recs, _ = run_json(["diagnose", "--netns", lab.b.name, "--cmd", cmd])
            second = socket_drops(lab, 8000)
            after = nft_stateless(lab)
        finally:
            listener.kill()
            listener.wait()
        drops = [r for r in watch_recs if r["type"] == "drop"]
        diagnosis = [r for r in diag_recs if r["type"] == "diagnosis"]
        yield Scene(lab, drops, diagnosis, before, after, first, second - first, err)


def flow(scene: Scene, dport: int, reason: str) -> list[dict[str, Any]]:
    return [d for d in scene.drops if d["dport"] == dport and d["reason"] == reason]


def test_the_ruleset_is_the_same_before_and_after(scene: Scene) -> None:
    assert scene.before == scene.after
    assert "table inet kdbgt" in scene.before
    assert "kdbg: watching" in scene.stderr


def test_iptables_rule_named_by_handle_and_text(scene: Scene) -> None:
    got = flow(scene, 5555, "NETFILTER_DROP")
    assert len(got) == 23
    for d in got:
        c = d["cause"]
        assert c["established"] is True and c["hook"] == "input"
        assert c["rule"] == {"family": "ip", "table": "filter", "chain": "INPUT",
                             "handle": c["rule"]["handle"],
                             "text": f"udp dport 5555 counter drop # handle "
                                     f"{c['rule']['handle']}"}


def test_nft_rule_behind_a_jump_names_its_own_rule(scene: Scene) -> None:
    got = flow(scene, 6666, "NETFILTER_DROP")
    assert len(got) == 13
    rule = got[0]["cause"]["rule"]
    assert (rule["family"], rule["table"], rule["chain"]) == ("inet", "kdbgt", "checks")
    assert rule["text"] == f'iifname "veth*" udp dport 6666 counter drop # handle {rule["handle"]}'
    # The drop record carries the conntrack state (new: the datagrams were never
    # answered), so 'ct state established,related accept' is evaluated, not assumed:
    # the rule is named outright, nothing left undecided.
    assert {d["ct_state"] for d in got} == {"new"}
    assert "not_evaluated" not in got[0]["cause"]
    assert "by elimination" not in got[0]["cause"]["summary"]
    assert all(d["cause"]["rule"] == rule for d in got)


def test_chain_policy_drop(scene: Scene) -> None:
    got = flow(scene, 7001, "NETFILTER_DROP")
    assert len(got) == 11
    # On 6.18 a policy drop happens in nft_do_chain too: only the evaluation tells.
    assert {d["symbol"] for d in got} == {"nft_do_chain"}
    for d in got:
        assert d["cause"]["rule"] == {"family": "ip", "table": "pol", "chain": "in",
                                      "policy": "drop"}


def test_ipv6_rule_in_inet_table(scene: Scene) -> None:
    got = flow(scene, 6001, "NETFILTER_DROP")
    assert len(got) == 7
    assert {d["family"] for d in got} == {"ipv6"}
    rule = got[0]["cause"]["rule"]
    assert (rule["family"], rule["table"], rule["chain"]) == ("inet", "kdbgt", "input")
    assert rule["text"].startswith("ip6 daddr fd77:9::2 udp dport 6001 counter drop # handle ")


def test_no_socket_names_the_listener_at_another_address(scene: Scene) -> None:
    got = flow(scene, 7777, "NO_SOCKET")
    assert len(got) == 17
    c = got[0]["cause"]
    assert c["established"] is True
    assert c["socket"] == {"proto": "udp", "family": "ipv4", "address": scene.lab.addr_b,
                           "port": 7777, "netns": scene.lab.b.inode}
    assert [s["endpoint"] for s in c["listeners"]] == ["udp 127.0.0.1:7777"]
    assert c["summary"].startswith(f"no udp socket is bound on {scene.lab.addr_b}:7777 in netns")
    assert c["confirm"] == f"ip netns exec {scene.lab.b.name} ss -lntu sport = :7777"


def test_rp_filter_reads_the_setting_and_the_route_back(scene: Scene) -> None:
    got = flow(scene, 9000, "IP_RPFILTER")
    assert len(got) == 5
    c = got[0]["cause"]
    assert c["facts"]["net.ipv4.conf.veth-b.rp_filter"] == "1"
    assert c["facts"]["effective_rp_filter"] == 1
    assert "dev vx0" in c["facts"]["route_back"]
    assert c["established"] is True


def test_bad_checksum_and_short_packet_from_a_raw_socket(scene: Scene) -> None:
    csum = flow(scene, 9100, "UDP_CSUM")
    assert len(csum) == 3
    assert csum[0]["cause"]["confirm"].startswith(f"ip netns exec {scene.lab.b.name} ethtool")
    short = flow(scene, 9200, "PKT_TOO_SMALL")
    assert len(short) == 2
    assert short[0]["cause"]["meaning"] == "the packet is shorter than its headers say"


def test_receive_buffer_full_counts_match_the_sockets_own(scene: Scene) -> None:
    got = flow(scene, 8000, "SOCKET_RCVBUFF")
    assert len(got) == scene.rcvbuf_watch > 0
    c = got[0]["cause"]
    assert c["established"] is True
    assert c["listeners"][0]["endpoint"] == f"udp {scene.lab.addr_b}:8000"
    assert "net.core.rmem_max" in c["facts"]


def test_at_least_six_reasons_each_with_its_cause(scene: Scene) -> None:
    reasons = {d["reason"] for d in scene.drops if d["cause"].get("summary")}
    assert reasons >= {"NETFILTER_DROP", "NO_SOCKET", "IP_RPFILTER", "UDP_CSUM",
                       "PKT_TOO_SMALL", "SOCKET_RCVBUFF"}


def test_diagnose_groups_by_cause_with_exact_counts(scene: Scene) -> None:
    by = {}
    for rec in scene.diagnosis:
        rule = rec.get("rule")
        key = (rec["reason"], rec["example"].get("dport"),
               None if rule is None else rule.get("handle", "policy"))
        by[key] = rec
    counts = {(r, p): rec["count"] for (r, p, _), rec in by.items()}
    assert counts[("NETFILTER_DROP", 5555)] == 23
    assert counts[("NETFILTER_DROP", 6666)] == 13
    assert counts[("NETFILTER_DROP", 7001)] == 11
    assert counts[("NETFILTER_DROP", 6001)] == 7
    assert counts[("NO_SOCKET", 7777)] == 17
    assert counts[("IP_RPFILTER", 9000)] == 5
    assert counts[("UDP_CSUM", 9100)] == 3
    assert counts[("PKT_TOO_SMALL", 9200)] == 2
    assert counts[("SOCKET_RCVBUFF", 8000)] == scene.rcvbuf_diagnose == 23  # queue still full
    # Most frequent first, every record with its cause, advice and example.
    assert [r["count"] for r in scene.diagnosis] == sorted(
        (r["count"] for r in scene.diagnosis), reverse=True)
    for rec in scene.diagnosis:
        assert rec["cause"] and rec["advice"] and rec["example"]["netns"] == scene.lab.b.inode
    pol = next(r for r in scene.diagnosis if r["example"].get("dport") == 7001)
    assert pol["rule"] == {"family": "ip", "table": "pol", "chain": "in", "policy": "drop"}
    assert "ruleset_changed" not in pol


@pytest.fixture
def lab() -> Iterator[VethLab]:
    with VethLab(prefix="kdbgcause2", subnet=10) as lab:
        yield lab


def send_cmd(lab: VethLab, count: int, dport: int) -> str:
    code = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(({lab.addr_a!r}, 40000)); "
            f"[s.sendto(b'kdbg', ({lab.addr_b!r}, {dport})) for i in range({count})]")
    return shlex.join(["ip", "netns", "exec", lab.a.name, PY, "-c", code])


def test_rule_deleted_before_the_report_is_said_and_its_text_kept(lab: VethLab) -> None:
    lab.b.run(["nft", "-f", "-"], input_="table ip t {\n chain c {\n"
              "  type filter hook input priority 0; policy accept;\n"
              "  udp dport 5000 counter drop\n }\n}\n")
    handle = lab.b.run(["nft", "-a", "list", "chain", "ip", "t", "c"]).stdout.split(
        "# handle ")[-1].split()[0]
    delete = shlex.join(["ip", "netns", "exec", lab.b.name, "nft", "delete", "rule", "ip", "t",
                         "c", "handle", handle])
    recs, _ = run_json(["diagnose", "--netns", lab.b.name, "--reason", "NETFILTER_DROP",
                        "--cmd", f"{send_cmd(lab, 19, 5000)}; sleep 0.5; {delete}"])
    [diag] = [r for r in recs if r["type"] == "diagnosis"]
    assert diag["count"] == 19
    assert diag["rule"]["text"] == f"udp dport 5000 counter drop # handle {handle}"
    assert diag["ruleset_changed"] == ("the ruleset changed after the drop: this rule was "
                                       "deleted since")


def test_diagnose_text_report_and_ctrl_c_ends_with_the_report(lab: VethLab) -> None:
    import os
    import signal

    lab.drop_udp(5555)
    # The reason filter keeps out the odd IPv6 router solicitation a new namespace drops.
    proc = subprocess.Popen([*KDBG, "diagnose", "--netns", lab.b.name, "--reason",
                             "NETFILTER_DROP"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("kdbg: watching"), line
        subprocess.run(send_cmd(lab, 23, 5555), shell=True, check=True, timeout=60)
        time.sleep(1)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("kdbg: 23 drops, 1 cause, in ")
    assert lines[2].startswith("    23 x NETFILTER_DROP  (")
    assert lines[3].startswith("    cause:   table ip filter chain INPUT rule handle ")
    assert lines[3].endswith(": udp dport 5555 counter drop # handle "
                             + lines[3].split("handle ")[1].split(":")[0])
    assert "    hook:    input" in lines
    assert any(ln.startswith(f"    confirm: ip netns exec {lab.b.name} nft -a list ruleset")
               for ln in lines)


def test_watch_text_line_ends_with_the_cause_and_stats_have_none(lab: VethLab) -> None:
    proc = subprocess.run([*KDBG, "watch", "--netns", lab.b.name, "--reason", "NO_SOCKET",
                           "--cmd", send_cmd(lab, 23, 7777)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 24
    want = (f"  cause: no udp socket is bound on {lab.addr_b}:7777 in netns {lab.b.inode} "
            f"({lab.b.name}); nothing is bound on port 7777 in that netns")
    assert all(line.endswith(want) for line in lines[1:])
    recs, _ = run_json(["watch", "--stats", "--netns", lab.b.name, "--reason", "NO_SOCKET",
                        "--cmd", send_cmd(lab, 23, 7777)])
    final = [r for r in recs if r["type"] == "stats"][-1]
    assert [c["count"] for c in final["counts"]] == [23]
    assert "cause" not in json.dumps(recs)


def test_diagnose_bad_input_is_one_line() -> None:
    proc = subprocess.run([*KDBG, "diagnose", "--reason", "NETFILTER_DORP"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("kdbg: error: unknown drop reason 'NETFILTER_DORP' on this kernel "
                           "(closest: NETFILTER_DROP")


def test_stats_program_is_the_same_with_and_without_causes() -> None:
    """--stats streams nothing, so causes change nothing in the kernel: the same C."""
    texts = []
    for extra in ([], ["--no-causes"]):
        proc = subprocess.run([*KDBG, "watch", "--stats", "--reason", "NETFILTER_DROP",
                               "--print-bpf", *extra], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        texts.append(proc.stdout)
    assert texts[0] == texts[1]
    assert "#define WANT_STACK       0" in texts[0]


def test_streaming_causes_take_only_netfilter_drop_stacks() -> None:
    """Only NETFILTER_DROP's cause reads the stack (the hook): the program walks no other
    drop's stack, unless --stack asks for every one."""
    from kdbg.symbols import tpformat
    from kdbg.symbols.reasons import ReasonTable

    code = ReasonTable.from_tpformat(tpformat.load("skb", "kfree_skb")).code("NETFILTER_DROP")

    def program(*extra: str) -> str:
        proc = subprocess.run([*KDBG, "watch", "--print-bpf", *extra], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    causes = program()
    assert "#define WANT_STACK       1" in causes
    assert f"#define STACK_WANTED(reason) ((reason) == {code})\n" in causes
    assert "#define STACK_WANTED(reason) (1)\n" in program("--stack")
    assert "#define WANT_STACK       0" in program("--no-causes")
