"""Hardware drops without a devlink device: layout, program text, decoding, netlink (no root)."""

from __future__ import annotations

import ctypes as ct
import ipaddress
import json
import os

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.dirs import BPF_DIR
from kdbg.hwdrops import devlink, event, output, probe
from tests.conftest import DATA
from tests.unit.cheaders import header_fields, mirror

# As read from Debian 6.1's BTF (devlink) and this project's 6.18 host (sk_buff)
OFFSETS = {"DEVLINK_DEV": 352, "DEVICE_NAME": 0, "DEVICE_BUS": 96, "BUS_NAME": 0,
           "DEVICE_DRIVER": 104, "DRIVER_NAME": 0, "MD_TRAP_NAME": 0, "MD_GROUP_NAME": 8,
           "MD_INPUT_DEV": 16, "MD_TRAP_TYPE": 32, "DEV_NAME": 0, "SKB_HEAD": 200,
           "SKB_NETWORK_HDR": 184, "SKB_LEN": 112}


def test_layout_matches_header() -> None:
    assert header_fields("hw_event.h", "kdbg_hw_event") == mirror(event.RawHwEvent)
    assert header_fields("hw_event.h", "kdbg_hw_key") == mirror(event.RawHwKey)
    assert ct.sizeof(event.RawHwEvent) == 216
    text = (BPF_DIR / "hw_event.h").read_text()
    assert f"#define KDBG_HW_CTR_LOST {event.CTR_LOST}" in text
    assert f"#define KDBG_HW_CTR_STATS_FULL {event.CTR_STATS_FULL}" in text
    assert f"#define KDBG_HW_NR_CTRS {event.NR_CTRS}" in text


def test_program_golden_and_count_only_variant() -> None:
    text = probe.build(OFFSETS, stream=True)
    path = DATA / "golden" / "devlink_trap.stream.c"
    if os.environ.get("KDBG_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), "golden changed; KDBG_UPDATE_GOLDEN=1 to accept"
    assert "{{" not in text and "#define DEVLINK_DEV      352" in text
    assert "#define STREAM           0" in probe.build(OFFSETS, stream=False)


def raw_event() -> event.RawHwEvent:
    raw = event.RawHwEvent()
    raw.time_ns, raw.cpu, raw.len, raw.trap_type = 5_000_000_000, 1, 42, 0
    raw.family, raw.l4proto, raw.l4_valid, raw.sport, raw.dport = 4, 17, 1, 1234, 53
    raw.saddr[:4] = list(ipaddress.IPv4Address("192.0.2.1").packed)
    raw.daddr[:4] = list(ipaddress.IPv4Address("198.51.100.1").packed)
    raw.bus, raw.device, raw.driver = b"netdevsim", b"netdevsim10", b"netdevsim"
    raw.trap, raw.group, raw.input_port = b"source_mac_is_multicast", b"l2_drops", b"eni10np1"
    return raw


def test_decode_names_device_trap_action_and_addresses() -> None:
    trap = devlink.Trap("netdevsim/netdevsim10", "source_mac_is_multicast", "l2_drops",
                        "trap", "drop")
    ev = event.HwDecoder(lambda: {(trap.device, trap.name): trap}).decode(raw_event())
    assert (ev.device, ev.driver, ev.trap, ev.group) == (
        "netdevsim/netdevsim10", "netdevsim", "source_mac_is_multicast", "l2_drops")
    assert (ev.action, ev.trap_type, ev.input_port, ev.len) == ("trap", "drop", "eni10np1", 42)
    assert (str(ev.saddr), str(ev.daddr), ev.sport, ev.dport, ev.proto) == (
        "192.0.2.1", "198.51.100.1", 1234, 53, "udp")
    rec = json.loads(output.hw_json(ev))
    assert rec["type"] == "hw_drop" and rec["saddr"] == "192.0.2.1" and rec["action"] == "trap"
    line = output.hw_line(ev)
    assert "netdevsim/netdevsim10" in line and line.endswith("198.51.100.1:53")
    assert line.index("source_mac_is_multicast") == output.header().index("TRAP")


def test_decode_without_packet_or_known_trap() -> None:
    raw = raw_event()
    raw.family, raw.l4_valid, raw.input_port = 0, 0, b""
    ev = event.HwDecoder(dict).decode(raw)
    assert ev.action is None and ev.saddr is None and ev.sport is None
    assert ev.input_port is None and ev.proto is None
    assert output.hw_line(ev).split()[5:8] == ["?", "drop", "-"]


def test_genetlink_dump_parses_real_families() -> None:
    """The netlink client reads the kernel's family list (nlctrl always exists)."""
    genl = devlink._Genl()
    try:
        families = genl.request(devlink.GENL_ID_CTRL, devlink.CTRL_CMD_GETFAMILY, 1, dump=True)
    finally:
        genl.close()
    names = {devlink._text(f[devlink.CTRL_ATTR_FAMILY_NAME]) for f in families}
    assert "nlctrl" in names
    assert devlink.has_devlink() == ("devlink" in names)
    if "devlink" not in names:
        assert devlink.devices() == [] and devlink.traps() == {}


@pytest.mark.parametrize("option", [["--reason", "NO_SOCKET"], ["--stats"], ["--dport", "53"]])
def test_watch_hw_refuses_kfree_skb_options(option: list[str]) -> None:
    result = CliRunner().invoke(main, ["watch", "--hw", *option])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"kdbg: error: {option[0]} does nothing with --hw "
                                     "(hardware drops come from devlink, not skb:kfree_skb)")
