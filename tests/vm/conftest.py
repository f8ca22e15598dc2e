"""What every vm test needs, checked once before it runs: root, QEMU, virtme-ng in the
venv and Debian's kernel headers. Without them a vm test skips with the fix (or, under
the README's test command, fails), instead of erroring half-way through a boot.

``default_lab`` is the one default lab (Debian 6.1, QEMU's gdb stub) the whole session
shares: booted at its first use, under a name unique to this run, and stopped at the
end; or, with ``KDBG_TEST_LAB=NAME``, a lab already running, left running. Tests that
need another kernel or transport (6.12, the kgdb kernel) boot their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need

# Lab names ([a-z0-9][a-z0-9-]{0,19}) are unique to this run, so two runs never share a
# lab, nor the network namespace a KGDBoE lab is named after; KDBG_TEST_LAB_PREFIX
# starts them (default "t").
LAB_PREFIX = os.environ.get("KDBG_TEST_LAB_PREFIX", "t")


def lab_name(what: str = "") -> str:
    """The name of this run's lab ``what`` (a few letters)."""
    return f"{LAB_PREFIX}{what}{os.getpid()}"


RUN_LAB = lab_name()


def lab_needs() -> None:
    """Skip (or fail, under KDBG_REQUIRE_ALL=1) unless a lab can boot here."""
    need(os.geteuid() == 0, "the lab needs root (run as root, or ./run test)")
    need(shutil.which("qemu-system-x86_64") is not None,
         "qemu-system-x86_64 missing: apt-get install qemu-system-x86 (scripts/setup.sh)")
    need((Path(sys.executable).parent / "virtme-run").exists(),
         "virtme-ng missing in the venv: pip install -e .[lab] (scripts/setup.sh)")
    need(bool(list(Path("/usr/src").glob("linux-headers-*-amd64"))),
         "Debian kernel headers missing: scripts/setup.sh installs linux-headers-amd64")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture of a vm test boots a lab."""
    lab_needs()


@pytest.fixture(scope="session")
def default_lab() -> Iterator[str]:
    """The name of the session's default lab (see the module's docstring)."""
    lab_needs()
    from kdbg import lab as labmod

    existing = os.environ.get("KDBG_TEST_LAB")
    if existing:
        labmod.require(existing)
        yield existing
        return
    info = labmod.up(labmod.LabConfig(name=RUN_LAB), progress=lambda m: print(m, file=sys.stderr))
    try:
        yield RUN_LAB
    finally:
        labmod.down(RUN_LAB)
        assert not Path(f"/proc/{info.pid}").exists()


@contextlib.contextmanager
def debian_612_lab(name: str) -> Iterator[str]:
    """A lab named ``name`` on Debian's newest 6.12 kernel (skipped when apt knows of
    none), stopped afterwards."""
    need(os.geteuid() == 0, "the lab needs root (./run test)")
    from kdbg import lab as labmod
    from kdbg.errors import BadInput
    from kdbg.lab.debian import DebianSpec, resolve_debian

    try:
        resolve_debian(DebianSpec(series="6.12"))
    except BadInput as err:
        need(False, f"no Debian 6.12 kernel known to apt: {err} (scripts/setup.sh)")
    with contextlib.suppress(Exception):
        labmod.down(name)
    labmod.up(labmod.LabConfig(name=name, kernel="debian:6.12"))
    try:
        yield name
    finally:
        labmod.down(name)


def wait_until(ok: Callable[[], object], timeout: float, what: str,
               every: float = 0.1) -> None:
    """Poll ``ok`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() >= deadline:
            pytest.fail(f"not within {timeout:g} s: {what}", pytrace=False)
        time.sleep(every)


def wait_halted(lab: str, timeout: float = 60) -> None:
    """Wait until lab ``lab``'s guest stops answering its exec channel: kgdb has the
    kernel (after SysRq-G or a break-in). The console is no sign of it: kgdb's own
    "Entering KGDB" line reaches the console only once the kernel runs again."""
    from kdbg.lab import guest

    wait_until(lambda: not guest.is_running(lab, timeout=1.0), timeout,
               f"lab {lab}'s guest halted in kgdb")


def start_time(pid: int) -> str | None:
    """``pid``'s start time from /proc (None once it is gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid``, with its start time (to tell a reused PID)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d.name))
    out: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        start = start_time(p)
        if start is not None:
            out[p] = start
        todo += children.get(p, [])
    return out


# -- drops in a lab, and kdbg watch against it ----------------------------------

KDBG = [sys.executable, "-m", "kdbg"]


SENDER = "kdbgsend"  # the sender's command name in the guest, for lx-ps to find


@contextlib.contextmanager
def udp_drops(lab: str, port: int, every: float) -> Iterator[None]:
    """A DROP rule for UDP to ``port`` in lab ``lab``'s guest, and a datagram into it
    every ``every`` seconds, for as long as the block runs; both gone after it. The
    sender is bash under the name :data:`SENDER` (a copy in the guest's own /tmp)."""
    from kdbg import lab as labmod

    rule = ["INPUT", "-p", "udp", "--dport", str(port), "-j", "DROP"]
    traffic = None
    try:
        done = labmod.run(lab, ["iptables", "-A", *rule])
        assert done.status == 0, done.stderr
        # (already there, and running, when another port's sender is made too)
        labmod.run(lab, ["sh", "-c", f"[ -x /tmp/{SENDER} ] || cp /bin/bash /tmp/{SENDER}"]
                   ).check()
        traffic = labmod.stream(lab, [f"/tmp/{SENDER}", "-c", f"while :; do echo x > "
                                      f"/dev/udp/127.0.0.1/{port}; sleep {every:g}; done"])
        yield
    finally:
        if traffic is not None:
            traffic.close()
        with contextlib.suppress(Exception):
            labmod.run(lab, ["iptables", "-D", *rule])


def kdbg_json(*args: str, timeout: float = 900) -> tuple[int, list[dict[str, Any]], str]:
    """``kdbg watch --json ARGS``: exit status, its JSON records, its stderr."""
    proc = subprocess.run([*KDBG, "watch", "--json", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    recs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, recs, proc.stderr


def of(recs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The records of type ``kind``."""
    return [r for r in recs if r["type"] == kind]


def netfilter_break(recs: list[dict[str, Any]], callee: str, port: int,
                    err: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one ``armed`` and the one hit of ``watch --reason NETFILTER_DROP --break``,
    checked: armed (allowed) at nft_do_chain's call to ``callee`` (the kernel's drop
    function), and the hit at that call with the skb going to ``port`` (as gdb read it
    at the stop, with the reason), confirmed by the tracer's record (:func:`full_hit`)."""
    armed = of(recs, "armed")
    assert len(armed) == 1, err
    assert armed[0]["caller"].startswith("nft_do_chain+0x")
    assert armed[0]["callee"] == callee
    assert armed[0]["guard"]["verdict"] == "allow"
    hits = of(recs, "hit")
    assert len(hits) == 1, err
    hit = hits[0]
    assert hit["symbol"] == "nft_do_chain" and int(hit["address"], 16) == int(
        armed[0]["call_addr"], 16)
    assert hit["skb"]["dport"] == port and hit["skb"]["daddr"] == "127.0.0.1"
    assert hit["drop_reason"] == "NETFILTER_DROP" and hit["skb"]["ifname"] == "lo"
    return armed[0], full_hit(recs, hit)


def full_hit(recs: list[dict[str, Any]], hit: dict[str, Any]) -> dict[str, Any]:
    """``hit`` (reported at the stop, from gdb) with what its ``hit_record`` (the
    tracer's record of the stopped skb) adds: its cause, kernel stack and journey. The
    record must have come and agree with gdb's read of the skb."""
    (rec,) = [r for r in of(recs, "hit_record") if r["number"] == hit["number"]]
    after = [d for d in of(recs, "drop") if recs.index(d) > recs.index(hit)]
    last_hop = (hit.get("journey") or [{}])[-1].get("time_ns", 0)
    assert rec["found"] and rec["differences"] == [], (
        rec.get("kernel_stack_note"), hit["skb"], last_hop,
        [(d["skb"][-6:], (d["time_ns"] - last_hop) // 1_000_000, d.get("dport"))
         for d in after])
    assert rec["skb"]["address"] == hit["skb"]["address"], (rec, hit)
    assert recs.index(hit) < recs.index(rec)
    added = {k: v for k, v in rec.items() if k not in ("type", "number", "found", "skb")}
    return hit | added


def gdbs_on(lab: str) -> list[int]:
    """gdb processes whose command line names the lab's gdb endpoint (there must be none
    after kdbg ends)."""
    from kdbg import lab as labmod

    endpoint = labmod.gdb_endpoint(lab).split(":", 1)[1].encode()
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ")
                if b"gdb" in cmd.split(b" ")[0] and endpoint in cmd:
                    pids.append(int(d.name))
    return pids


# -- gdb's prompt at a stop, as a person uses it ------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROMPT = r"\(gdb\) "


def default_sigint() -> None:
    """Before exec: SIGINT at its default (a non-interactive shell's background job
    starts with it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Prompt:
    """``kdbg watch --break --interactive`` at a NETFILTER_DROP in lab ``lab`` (UDP to
    ``port``, whose DROP rule and traffic the caller runs), driven through a
    pseudo-terminal as a person would: :meth:`run` types a command at gdb's prompt and
    returns what it printed (colours stripped); :meth:`done` types kdbg-done and
    returns kdbg's exit status. ``transcript`` is everything seen."""

    def __init__(self, lab: str, port: int, *extra: str, timeout: float = 900) -> None:
        import pexpect

        self.child = pexpect.spawn(
            sys.executable, ["-m", "kdbg", "watch", "--lab", lab, "--reason", "NETFILTER_DROP",
                             "--proto", "udp", "--dport", str(port), "--break",
                             "--interactive", *extra],
            encoding="utf-8", codec_errors="replace", timeout=timeout,
            dimensions=(60, 250), preexec_fn=default_sigint)
        self.transcript = ""
        self._expect(PROMPT, timeout)
        self.banner = self._seen()

    def _expect(self, pattern: Any, timeout: float) -> None:
        try:
            self.child.expect(pattern, timeout=timeout)
        finally:
            self.transcript += ANSI.sub("", (self.child.before or "") + str(
                self.child.after if isinstance(self.child.after, str) else ""))

    def _seen(self) -> str:
        return ANSI.sub("", self.child.before or "").replace("\r", "")

    def run(self, command: str, timeout: float = 180) -> str:
        """Type ``command`` at gdb's prompt; what it printed until the next prompt."""
        self.child.sendline(command)
        self._expect(PROMPT, timeout)
        out = self._seen()
        return out.split("\n", 1)[1] if "\n" in out else ""  # the echoed command line off

    def done(self, timeout: float = 60) -> int:
        """kdbg-done: kdbg resumes the target and ends; its exit status."""
        import pexpect

        self.child.sendline("kdbg-done")
        self._expect(pexpect.EOF, timeout)
        self.tail = self._seen()
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)

    def close(self) -> None:
        self.child.close(force=True)


def rule_handle(lab: str, port: int) -> int:
    """The handle ``nft -a`` gives the rule that drops UDP to ``port`` in the guest."""
    from kdbg import lab as labmod

    out = labmod.run(lab, ["nft", "-a", "list", "chain", "ip", "filter", "INPUT"]).check()
    m = re.search(rf"dport {port} .*drop # handle (\d+)", out.stdout.decode())
    assert m, out.stdout
    return int(m[1])


# what a step that wandered off into an interrupt would show as its frame
IRQ_CODE = re.compile(r"\b(\w*sysvec\w*|\w*apic_timer\w*|hrtimer_\w+|\w*_irq_\w+|"
                      r"common_interrupt|irq_exit\w*|do_IRQ)\b")


def check_the_stop(lab: str, port: int, source_file: str = "net/netfilter/core.c") -> str:
    """At a NETFILTER_DROP stop in ``lab`` (its DROP rule on ``port`` and udp_drops'
    traffic running), what a kernel developer does at gdb's prompt works: kdbg-skb names
    the packet, kdbg-rule the rule nft -a names, no NULL is a per-CPU symbol, step,
    finish, next and until show the source line's text and stay in the stopped context
    (the same thread, no interrupt's code), list shows ``source_file``, Linux's lx-dmesg, lx-ps and
    $lx_current() work, and kdbg-done resumes the target and ends kdbg with 0. Returns
    the session's transcript."""
    handle = rule_handle(lab, port)
    p = Prompt(lab, port)
    try:
        assert "kdbgkdbg" not in p.banner, p.banner  # every kdbg message on its own line
        skb = p.run("kdbg-skb")
        assert f":{port}" in skb and "udp" in skb and "127.0.0.1" in skb, skb
        rule = p.run("kdbg-rule")
        assert f"handle {handle}" in rule and "filter" in rule and "INPUT" in rule, rule
        assert "differ" not in rule, rule
        looks = {look: p.run(look) for look in ("bt", "frame 1", "info locals", "p *$kdbg_skb")}
        for look, out in looks.items():
            assert "fixed_percpu_data" not in out, (look, out)
        assert "= 0x0" in looks["p *$kdbg_skb"], looks  # NULL members, printed plainly
        thread = p.run("p $_thread").split("=")[-1].strip()
        for step in ("step", "finish", "next", "until", "next"):
            stepped = p.run(step)
            assert re.search(r"^\d+\t.*\S", stepped, re.M), (step, stepped)  # line and text
            assert "No such file" not in stepped, stepped
            # still the stopped context: the same CPU's thread, not an interrupt's code
            assert p.run("p $_thread").split("=")[-1].strip() == thread, (step, stepped)
            assert not IRQ_CODE.search(p.run("frame")), (step, stepped)
        listed = p.run(f"list {source_file}:1,12")
        assert re.search(r"^\d+\t#include <", listed, re.M), listed  # the file's own lines
        assert "nf_hook_slow(struct sk_buff" in p.run("list nf_hook_slow")
        assert "Linux version" in p.run("lx-dmesg", timeout=300)
        assert SENDER in p.run("lx-ps", timeout=300)
        # the datagram is dropped in its sender's context, or in ksoftirqd's when the
        # loaded guest deferred the softirq work (seen once in a full run)
        comm = p.run("p $lx_current().comm")
        assert SENDER in comm or "ksoftirqd/" in comm, comm
        assert "kdbg-skb" in p.run("help kdbg")
        status = p.done()
    finally:
        p.close()
    assert status == 0, p.transcript[-3000:]
    assert "fixed_percpu_data" not in p.transcript
    assert "target running, no kdbg breakpoints" in p.tail, p.tail
    return p.transcript


# -- a packet's journey in a lab: two namespaces, a veth pair and a bridge -------------

JOURNEY_NS = "gj"  # the guest's namespaces: gj-a and gj-b


@contextlib.contextmanager
def journey_drops(lab: str, port: int, every: float) -> Iterator[dict[str, int]]:
    """In lab ``lab``'s guest, kdbg.demo.throwaway's VethBridgeLab (``gj-a`` joined to
    ``gj-b`` by veth-a/veth-b, veth-b a port of ``gj-b``'s bridge br0), a DROP rule for
    UDP to ``port`` in ``gj-b`` and a datagram into it from ``gj-a`` every ``every``
    seconds, for as long as the block runs; all gone after it. Yields the namespaces'
    inodes in the guest by name."""
    from kdbg import lab as labmod

    made = (f"from kdbg.demo.throwaway import VethBridgeLab as L; "
            f"l = L(prefix={JOURNEY_NS!r}, subnet=95)")
    traffic = None
    try:
        labmod.run(lab, [sys.executable, "-c", f"{made}; l.up(); l.drop_udp({port})"]).check()
        inodes = {}
        for ns in ("a", "b"):
            out = labmod.run(lab, ["stat", "-L", "-c", "%i", f"/var/run/netns/{JOURNEY_NS}-{ns}"])
            inodes[f"{JOURNEY_NS}-{ns}"] = int(out.check().stdout.decode())
        traffic = labmod.stream(lab, ["ip", "netns", "exec", f"{JOURNEY_NS}-a", "bash", "-c",
                                      f"while :; do echo x > /dev/udp/10.77.95.2/{port}; "
                                      f"sleep {every:g}; done"])
        yield inodes
    finally:
        if traffic is not None:
            traffic.close()
        with contextlib.suppress(Exception):
            labmod.run(lab, [sys.executable, "-c", f"{made}; l.down()"])


def check_journey(journey: list[dict[str, Any]], inodes: dict[str, int],
                  where: str = "before_drop_ns") -> None:
    """The hops of a datagram from gj-a into gj-b's DROP rule (:func:`journey_drops`): out
    of veth-a in gj-a, into veth-b then br0 in gj-b, each hop's time before the last."""
    a, b = inodes[f"{JOURNEY_NS}-a"], inodes[f"{JOURNEY_NS}-b"]
    assert [(h["netns"], h["ifname"]) for h in journey] == [
        (a, "veth-a"), (b, "veth-b"), (b, "veth-b"), (b, "br0"), (b, "br0")], journey
    assert [h["point"] for h in journey] == [
        "net:net_dev_queue", "net:netif_rx", "net:netif_receive_skb",
        "net:netif_receive_skb_entry", "net:netif_receive_skb"]
    assert [h["netns_name"] for h in journey] == [f"{JOURNEY_NS}-a"] + [f"{JOURNEY_NS}-b"] * 4
    befores = [h[where] for h in journey]
    assert befores == sorted(befores, reverse=True) and len(set(befores)) == 5, befores


def in_flight_at_attach(rec: dict[str, Any]) -> bool:
    """Whether ``rec``'s packet was under way when the tracer attached: its journey is
    said to be incomplete for that alone, and its first hop came no later than the
    window after the attach in which kdbg says so (by the record's own table); or no
    hop of it was seen and the drop itself came within that window, which kdbg says
    the same way (the drop program attaches before the hop programs: a packet between
    its hops and its drop then has no hop)."""
    from kdbg.trace.journey import ENTER_WINDOW_NS

    notes = rec.get("journey_incomplete") or []
    table = rec.get("journey_table") or {}
    if not notes or table.get("attached_ns") is None:
        return False
    if not all(n.startswith("it may have entered before the tracer") for n in notes):
        return False
    # Its first hop, or with no hop seen (all of them came before the hop programs
    # attached) the drop itself.
    first = (rec["journey"][0] if rec.get("journey") else rec)["time_ns"]
    return bool(first - table["wall_offset_ns"] - table["attached_ns"] < ENTER_WINDOW_NS)


def check_break_journey(lab: str, port: int, inodes: dict[str, int]) -> None:
    """``watch --break --json``: the hit's journey ends at the drop's netns and device
    (br0 in gj-b), as every drop's does; each hop before the drop itself."""
    rc, recs, err = kdbg_json("--lab", lab, "--reason", "NETFILTER_DROP", "--proto", "udp",
                              "--dport", str(port), "--break", timeout=900)
    assert rc == 0, err
    (hit,) = of(recs, "hit")
    hit = full_hit(recs, hit)
    drops = of(recs, "drop")
    assert drops, err
    # A datagram under way while the tracer attached is rightly said to be incomplete;
    # every other drop, and the hit (a later datagram), must not be.
    drops = [d for d in drops if not in_flight_at_attach(d)]
    assert drops, err
    for rec in [*drops, hit]:
        assert "journey_incomplete" not in rec, (rec.get("journey_incomplete"), rec, drops,
                                                 err[-3000:])
        check_journey(rec["journey"], inodes)
    for drop in drops:
        assert (drop["journey"][-1]["netns"], drop["journey"][-1]["ifname"]) == (
            drop["netns"], drop["ifname"]) == (inodes[f"{JOURNEY_NS}-b"], "br0")
    assert hit["skb"]["dport"] == port
    assert hit["journey_table"]["slots"] == 1024
