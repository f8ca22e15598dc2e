"""Lab kernels and accelerators without a lab: ``--kernel debian[:X]`` parsing and
resolution, the drop function chosen from a target's symbols, the KVM/TCG decision and
its probe guest (a real QEMU, when installed: the probe firmware runs in 0.1 s)."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbg.cli import main as cli_main
from kdbg.debugger import dropsite
from kdbg.debugger.errors import NotADropSite
from kdbg.debugger.model import Instruction
from kdbg.errors import BadInput, LabError
from kdbg.lab import accel, debian, lifecycle, registry
from kdbg.lab.command import launch_argv
from kdbg.lab.debian import DebianSpec, in_series, parse_debian_spec
from kdbg.lab.kernel import Kernel
from kdbg.symbols.kallsyms import Kallsyms
from tests.conftest import need

# --- --kernel debian[:SERIES|:RELEASE] ------------------------------------------------------


@pytest.mark.parametrize("spec, want", [
    ("debian", DebianSpec()),
    ("debian:6.12", DebianSpec(series="6.12")),
    ("debian:6.1", DebianSpec(series="6.1")),
    ("debian:6.12.95+deb12-amd64", DebianSpec(release="6.12.95+deb12-amd64")),
    ("debian:6.1.0-57-amd64", DebianSpec(release="6.1.0-57-amd64")),
    ("built", None),
    ("/srv/linux/build", None),
    ("./debian", None),
])
def test_kernel_specs(spec: str, want: DebianSpec | None) -> None:
    assert parse_debian_spec(spec) == want
    if want is not None:
        assert str(want) == spec


@pytest.mark.parametrize("spec", ["debian:", "debian:6", "debian:latest", "debian:6.12-rt",
                                  "debian:6.12.95+deb12-cloud", "debian:../x"])
def test_bad_kernel_specs_are_bad_input(spec: str) -> None:
    with pytest.raises(BadInput, match="bad kernel"):
        parse_debian_spec(spec)


@pytest.mark.parametrize("release, series, inside", [
    ("6.1.0-57-amd64", "6.1", True),
    ("6.1.0-57-amd64", "6.12", False),
    ("6.12.95+deb12-amd64", "6.12", True),
    ("6.12.95+deb12-amd64", "6.1", False),
    ("6.12.90+deb12.1-amd64", "6.12", True),
    ("6.13.1-amd64", "6.1", False),
])
def test_series_membership(release: str, series: str, inside: bool) -> None:
    assert in_series(release, series) is inside


APT_SHOW_META = """Package: linux-image-6.12-amd64
Source: linux-signed-amd64 (6.12.95+1~bpo12+1)
Version: 6.12.95-1~bpo12+1
Depends: linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)
Description: Linux for 64-bit PCs (meta-package)
"""
APT_PKGNAMES = "\n".join([
    "linux-image-6.12.9+deb12-amd64", "linux-image-6.12.9+deb12-amd64-dbg",
    "linux-image-6.12.43+deb12-amd64", "linux-image-6.12.43+deb12-amd64-dbg",
    "linux-image-6.12.95+deb12-amd64",  # no -dbg: not a lab kernel
    "linux-image-6.12.43+deb12-cloud-amd64", "linux-image-6.12-amd64",
])


def test_newest_of_a_series_follows_debians_meta_package(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    lists = tmp_path / "lists"
    lists.mkdir()
    monkeypatch.setattr(debian, "APT_LISTS", lists)
    asked: list[list[str]] = []

    def apt(argv: list[str]) -> str:
        asked.append(argv)
        return APT_SHOW_META if argv[0] == "show" else ""

    monkeypatch.setattr(debian, "apt_cache", apt)
    assert debian._apt_newest("6.12") == "6.12.95+deb12-amd64"
    # Remembered until apt's lists change.
    assert debian._apt_newest("6.12") == "6.12.95+deb12-amd64" and len(asked) == 1
    os.utime(lists, ns=(1, 1))  # apt-get update
    assert debian._apt_newest("6.12") == "6.12.95+deb12-amd64" and len(asked) == 2


def test_newest_of_a_series_without_meta_package_needs_a_dbg(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Versions compare as numbers (43 > 9) and only a release with its -dbg counts.
    monkeypatch.setattr(debian, "apt_cache",
                        lambda argv: APT_PKGNAMES if argv[0] == "pkgnames" else "")
    assert debian._apt_newest_now("6.12") == "6.12.43+deb12-amd64"
    assert debian._apt_newest_now("6.13") is None


def test_series_with_nothing_known_is_bad_input(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(debian, "APT_LISTS", tmp_path / "no-lists")
    monkeypatch.setattr(debian, "apt_cache", lambda argv: "")
    monkeypatch.setattr(debian, "debian_release", lambda: "6.1.0-57-amd64")
    assert debian.resolve_debian(DebianSpec()) == "6.1.0-57-amd64"
    assert debian.resolve_debian(DebianSpec(series="6.1")) == "6.1.0-57-amd64"
    with pytest.raises(BadInput, match="apt knows no Debian 6.12 kernel"):
        debian.resolve_debian(DebianSpec(series="6.12"))
    with pytest.raises(BadInput, match="apt knows no linux-image-6.12.1"):
        debian.resolve_debian(DebianSpec(release="6.12.1+deb12-amd64"))
    # Offline, a cached kernel of the series still resolves.
    done = tmp_path / "kdbg" / "kernels" / "debian-6.12.43+deb12-amd64"
    done.mkdir(parents=True)
    (done / ".complete").write_text("6.12.43+deb12-amd64\n")
    assert debian.resolve_debian(DebianSpec(series="6.12")) == "6.12.43+deb12-amd64"
    assert debian.cached_releases() == ["6.12.43+deb12-amd64"]


def test_lab_up_rejects_a_bad_kernel_spec_in_one_line() -> None:
    result = CliRunner().invoke(cli_main, ["lab", "up", "--kernel", "debian:x", "--dry-run"])
    assert result.exit_code != 0
    assert "bad kernel 'debian:x'" in result.output and "Traceback" not in result.output


def test_lab_commands_document_kernels_and_accel() -> None:
    up = CliRunner().invoke(cli_main, ["lab", "up", "--help"])
    assert up.exit_code == 0 and "--accel" in up.output and "debian:6.12" in up.output
    kernels = CliRunner().invoke(cli_main, ["lab", "kernels", "--help"])
    assert kernels.exit_code == 0 and "cached" in kernels.output


# --- the drop function, from the target's symbols ------------------------------------------

KALLSYMS_6_1 = """\
ffffffff817c0100 T kfree_skb
ffffffff817c02a0 T kfree_skb_reason
ffffffff817c0400 T kfree_skb_list_reason
ffffffff81900000 T tcp_v4_rcv
"""
# 6.11+: kfree_skb_reason() is an inline wrapper, the tracepoint is in sk_skb_reason_drop()
KALLSYMS_6_12 = """\
ffffffff81a52770 T sk_skb_reason_drop
ffffffff81a52900 T kfree_skb_list_reason
ffffffff81b00000 T tcp_v4_rcv
ffffffffc036c0f0 t nft_do_chain\t[nf_tables]
"""


@pytest.mark.parametrize("text, main, known", [
    (KALLSYMS_6_1, "kfree_skb_reason", ("kfree_skb_reason", "kfree_skb", "kfree_skb_list_reason")),
    (KALLSYMS_6_12, "sk_skb_reason_drop", ("sk_skb_reason_drop", "kfree_skb_list_reason")),
    ("ffffffff81000000 T kfree_skb\n", "kfree_skb", ("kfree_skb",)),
    ("ffffffff81000000 T tcp_v4_rcv\n", None, ()),
])
def test_drop_function_comes_from_the_targets_symbols(text: str, main: str | None,
                                                      known: tuple[str, ...]) -> None:
    names = Kallsyms.parse(text).names()
    assert dropsite.drop_function(names) == main
    assert dropsite.drop_functions(names) == known


def test_a_call_to_a_function_the_target_lacks_is_no_drop_site() -> None:
    ins = Instruction(0xFFFFFFFFC036C4FA, 5, "call   0xffffffff81a52770 <kfree_skb_reason>")
    names612 = Kallsyms.parse(KALLSYMS_6_12).names()
    assert dropsite.check_callee("sk_skb_reason_drop", "nft_do_chain+0x40f", ins,
                                 names612) == "sk_skb_reason_drop"
    with pytest.raises(NotADropSite, match=r"not a drop function \(sk_skb_reason_drop, "):
        dropsite.check_callee("kfree_skb_reason", "nft_do_chain+0x40f", ins, names612)
    names61 = Kallsyms.parse(KALLSYMS_6_1).names()
    assert dropsite.check_callee("kfree_skb_reason", "x", ins, names61) == "kfree_skb_reason"
    # No symbols known: any drop function of any kernel.
    assert dropsite.check_callee("sk_skb_reason_drop", "x", ins) == "sk_skb_reason_drop"


def test_the_guard_refuses_either_drop_function_under_kgdboe() -> None:
    from kdbg.guard import check
    from kdbg.symbols.evidence import TargetSymbols

    for text in (KALLSYMS_6_1, KALLSYMS_6_12):
        main = dropsite.drop_function(Kallsyms.parse(text).names())
        assert main is not None
        symbols = TargetSymbols.from_parts(text)
        d = check(main, transport="kgdboe", symbols=symbols)
        assert (d.verdict, d.rule) == ("refuse", "kgdboe-skb"), d
        assert check(main, transport="gdbstub", symbols=symbols).verdict == "allow"


# --- the accelerator -----------------------------------------------------------------------


def test_probe_firmware_layout() -> None:
    image = accel.firmware()
    assert len(image) == 0x10000
    assert image[0xFFF0:0xFFF5] == bytes([0xEA, 0x00, 0xE0, 0x00, 0xF0])  # jmp F000:E000
    assert image[0xE100:0xE100 + len(accel.MARKER)] == accel.MARKER


@pytest.mark.parametrize("requested, works, want", [
    ("auto", True, "kvm"), ("auto", False, "tcg"), ("kvm", True, "kvm"),
])
def test_accel_decision(requested: str, works: bool, want: str) -> None:
    probe = accel.Probe(works, "a KVM guest printed" if works else "it hangs", 0.1, cached=True)
    choice = accel.decide(requested, probe)
    assert choice.accel == want
    assert choice.why.startswith(want.upper()) and "(cached verdict)" in choice.why


def test_accel_kvm_that_does_not_work_is_an_error() -> None:
    with pytest.raises(LabError, match="KVM does not work here: it hangs"):
        accel.decide("kvm", accel.Probe(False, "it hangs", 4.0))


def test_accel_tcg_asks_nothing_and_unknown_is_bad_input() -> None:
    assert accel.choose("tcg") == accel.Choice("tcg", "TCG as asked (--accel tcg)")
    with pytest.raises(BadInput, match="unknown accelerator 'hvf'"):
        accel.choose("hvf")
    with pytest.raises(BadInput, match="unknown accelerator"):
        lifecycle.validate(registry.LabConfig(accel="xen"))


def _qemu() -> None:
    need(shutil.which(accel.QEMU) is not None,
         f"{accel.QEMU} missing: apt-get install qemu-system-x86 (scripts/setup.sh)")


def test_probe_guest_prints_under_tcg() -> None:
    """The probe's guest works, so a KVM probe that fails is KVM's failure."""
    _qemu()
    probe = accel.run_probe("tcg", timeout=10)
    assert probe.works, probe.why
    assert probe.seconds < 10


def test_kvm_probe_answers_within_seconds_and_is_cached(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Whatever KVM does here (works, missing, aborts or hangs), the verdict comes within
    the probe's timeout, and the second ask is the cached verdict."""
    _qemu()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = accel.kvm_probe()
    assert first.seconds <= accel.PROBE_TIMEOUT + 1 and not first.cached, first
    again = accel.kvm_probe()
    assert again.cached and (again.works, again.why) == (first.works, first.why)
    assert accel.choose("auto").accel == ("kvm" if first.works else "tcg")


def test_launch_line_follows_the_accelerator(tmp_path: Path) -> None:
    image = Kernel("debian", "6.12.95+deb12-amd64", tmp_path / "vmlinuz-6.12.95+deb12-amd64")
    config = registry.LabConfig(name="k612u", kernel="debian:6.12")
    tcg = lifecycle.plan_for(config, image, tmp_path, agent_path=Path("/bin/true"))
    assert "--disable-kvm" in launch_argv(tcg, image)
    kvm = dataclasses.replace(tcg, accel="kvm")
    assert "--disable-kvm" not in launch_argv(kvm, image)


# --- rx_sk (6.10+) ----------------------------------------------------------------------------


def test_rx_sk_is_read_from_the_arguments_and_checked_for_null() -> None:
    """The tracepoint's ``rx_sk`` is NULL on most receive paths (and absent before
    6.11): the tracer takes it from the arguments only when the kernel passes it, and
    follows it only after a NULL check."""
    import re

    from kdbg.dirs import BPF_DIR

    text = (BPF_DIR / "kfree_skb.bpf.c").read_text()
    uses = [m.start() for m in re.finditer(r"ctx\[ARG_RX_SK\]", text)]
    assert uses, "the tracer no longer reads rx_sk"
    for at in uses:
        tail = text[at:at + 200]
        assert re.search(r"if \(sk\)", tail), tail
    assert "#if ARG_RX_SK >= 0" in text
