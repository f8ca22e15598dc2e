"""kdbg watch --bpf --break: the lab's kernel stopped inside the JITed XDP program at the
line that decides its XDP_DROP, and let run again.

In the default lab (Debian 6.1: BTF, a JIT, fexit), tests/vm/bpf_traffic.py puts the
test XDP program (tests/data/bpfprog/xdp_drop_port.c, built by bcc in the guest) on a
veth's inner end in a throw-away netns and sends a datagram to the dropped port and one
to another every half second. On the host:

* judged as for KGDBoE (``--transport kgdboe``), the guard refuses to break in the
  program, naming its JITed code as an XDP program's (networking: KGDBoE's own path);
* on the lab's gdb stub, kdbg arms in the program's JITed image at the verdict line,
  the kernel stops there, the hit's backtrace names the program and gdb gives the stop
  the verdict's source line (the program's line table), the verdict record of
  the stopped packet follows once resumed, and the guest runs on: the traffic goes on
  being sent after the stop;
* nothing is left: no breakpoint (the clean-up says so), no synthetic symbol file in
  the host's temporary directory, the netns and veth gone from the guest.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from kdbg import lab as labmod

DROP_PORT, PASS_PORT = 7777, 7778
TRAFFIC = Path(__file__).with_name("bpf_traffic.py")
NAME = "kdbg_test_xdp"
DROP_IF = "if (udp->dest == htons(DROP_PORT))"


class Traffic:
    """bpf_traffic.py running in the guest: its output lines on a queue."""

    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.stop_file = f"/tmp/kdbg-bpf-break-stop-{threading.get_ident()}"
        self.lines: queue.Queue[str] = queue.Queue()
        self.session = labmod.stream(lab, [sys.executable, str(TRAFFIC), str(DROP_PORT),
                                           str(PASS_PORT), self.stop_file, "900"])
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        buf = b""
        for chunk in self.session:
            if chunk.stream == "stdout":
                buf += chunk.data
                *done, buf = buf.split(b"\n")
                for line in done:
                    self.lines.put(line.decode())
        self.lines.put("<end>")

    def expect(self, word: str, timeout: float) -> list[str]:
        line = self.lines.get(timeout=timeout)
        assert line.split()[:1] == [word], line
        return line.split()

    def stop(self) -> None:
        labmod.run(self.lab, ["touch", self.stop_file], timeout=120)


def watch(lab: str, *extra: str) -> tuple[int, list[dict[str, object]], str]:
    done = subprocess.run(
        [sys.executable, "-m", "kdbg", "watch", "--bpf", "--break", "--lab", lab, "--prog",
         NAME, "--json", *extra], capture_output=True, text=True, timeout=900, check=False)
    recs = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return done.returncode, recs, done.stderr


def of(recs: list[dict[str, object]], kind: str) -> list[dict[str, object]]:
    return [r for r in recs if r["type"] == kind]


@pytest.mark.slow
def test_break_stops_in_the_xdp_programs_jited_code_and_the_guest_runs_on(
        default_lab: str) -> None:
    before = set(Path(tempfile.gettempdir()).glob("kdbg-bpf-*"))
    traffic = Traffic(default_lab)
    try:
        _, prog_id, inner, outer = traffic.expect("ready", timeout=900)

        status, recs, err = watch(default_lab, "--transport", "kgdboe", "--count", "2")
        assert status == 3, err
        refused = of(recs, "refused")[0]
        assert (refused["verdict"], refused["rule"]) == ("refuse", "kgdboe-networking")
        assert f"the JITed code of xdp program {prog_id}" in str(refused["evidence"])

        status, recs, err = watch(default_lab)
        assert status == 0, err
        (armed,) = of(recs, "armed")
        prog = armed["prog"]
        assert isinstance(prog, dict)
        ksym = f"bpf_prog_{prog['tag']}_{NAME}"
        (line,) = prog["verdict_lines"]
        assert line["text"] == DROP_IF
        assert armed["call_addr"] == line["address"]
        assert str(armed["caller"]).startswith(ksym + "+0x")
        assert armed["guard"]["verdict"] == "allow"
        (hit,) = of(recs, "hit")
        assert (hit["symbol"], hit["address"]) == (ksym, line["address"])
        frame0 = hit["backtrace"][0]
        assert (frame0["symbol"], frame0["module"]) == (ksym, "bpf")
        # gdb's own line table for the program (the synthetic file's .debug_line)
        assert (hit["file"], hit["line"]) == (line["file"], line["line"])
        assert (frame0["file"], frame0["line"]) == (line["file"], line["line"])
        verdict = hit["verdict"]
        assert (verdict["reason"], verdict["dport"], verdict["ifname"]) == (
            "XDP_DROP", DROP_PORT, inner)
        assert verdict["prog"]["id"] == int(prog_id)
        (cleanup,) = of(recs, "cleanup")
        assert cleanup["ok"] and cleanup["target"] == "running, no kdbg breakpoints"
        assert set(Path(tempfile.gettempdir()).glob("kdbg-bpf-*")) == before
        # The guest runs on: the veth's count of packets sent grows after the stop.
        counted = f"/sys/class/net/{outer}/statistics/tx_packets"
        first = labmod.run(default_lab, ["cat", counted], timeout=120)
        second = labmod.run(default_lab, ["sh", "-c", f"sleep 3; cat {counted}"], timeout=120)
        assert int(second.stdout) > int(first.stdout) > 0
    finally:
        traffic.stop()
    (_, sent) = traffic.expect("sent", timeout=300)
    assert int(sent) > 0
    left = labmod.run(default_lab, ["sh", "-c", "ip netns list; ip -o link"], timeout=120)
    assert "bpfx" not in left.stdout.decode() and outer not in left.stdout.decode()
