"""The table of lab kernel kinds (kdbg/lab/kinds.py): which row takes which ``--kernel``
spec, the help text made from it, the listing, and the guest lookups per kind."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from kdbg.cli import main as cli_main
from kdbg.cli.lab import up_cmd
from kdbg.errors import BadInput, LabError
from kdbg.lab import debian, guest, kinds
from kdbg.lab.kernel import Kernel, KernelChoice, Listing
from kdbg.lab.kinds import KINDS, KernelKind, kernel_help, kind_for, kind_of_lab, known_kernels
from tests.conftest import TESTS

ROWS = {kind.name: kind for kind in KINDS}

# --- which row takes a spec ---------------------------------------------------------------


@pytest.mark.parametrize("spec, name", [
    ("debian", "debian"),
    ("debian:6.12", "debian"),
    ("debian:6.1.0-57-amd64", "debian"),
    ("debian:6.12.95+deb12-amd64", "debian"),
    ("built", "built"),
    ("/srv/linux/build", "path"),
    ("./debian", "path"),
    ("debian6", "path"),
    ("builtin", "path"),
    ("~/linux/arch/x86/boot/bzImage", "path"),
])
def test_each_spec_has_one_kind(spec: str, name: str) -> None:
    assert kind_for(spec).name == name
    # The rows before it reject the spec; the path row takes whatever no other row does.
    for kind in KINDS[: KINDS.index(ROWS[name])]:
        assert not kind.accepts(spec), kind.name


@pytest.mark.parametrize("spec", ["debian:", "debian:6", "debian:latest", "debian:../x"])
def test_a_malformed_spec_of_a_kind_is_bad_input(spec: str) -> None:
    with pytest.raises(BadInput, match=re.escape(f"bad kernel {spec!r}")):
        kind_for(spec)


def test_the_table_names_each_kind_once_and_ends_with_the_catch_all() -> None:
    assert [k.name for k in KINDS] == ["debian", "built", "path"]
    assert KINDS[-1].accepts("anything at all")
    records = [r for kind in KINDS for r in kind.records]
    assert len(records) == len(set(records))
    assert [k.name for k in KINDS if k.fetches_vmlinux] == ["debian"]


# --- the help text ------------------------------------------------------------------------


def test_kernel_help_is_made_from_the_table() -> None:
    assert kernel_help() == (
        "'debian' (stock 6.1 kernel), 'debian:SERIES' (Debian's newest, like debian:6.12), "
        "'built' (kdbg lab build-kernel's) or a PATH to a kernel build directory or bzImage.")
    (option,) = [p for p in up_cmd.params if p.name == "kernel"]
    assert option.help == f"{kernel_help()} See kdbg lab kernels."  # type: ignore[attr-defined]
    up = CliRunner().invoke(cli_main, ["lab", "up", "--help"])
    assert up.exit_code == 0 and f"{kernel_help()} See kdbg lab kernels." in " ".join(
        up.output.split())


def test_a_new_row_is_in_the_help_text(monkeypatch: pytest.MonkeyPatch) -> None:
    before = kernel_help()
    extra = KernelKind("fedora", forms=("fedora:RELEASE",), help=("'fedora:RELEASE' (Fedora's)",))
    monkeypatch.setattr(kinds, "KINDS", (*KINDS[:-1], extra, KINDS[-1]))
    assert kernel_help() == before.replace(" or a PATH", ", 'fedora:RELEASE' (Fedora's) or a PATH")


def test_docs_have_a_row_for_every_form() -> None:
    """docs/lab.md's ``--kernel`` table names every form the table's rows take."""
    text = (TESTS.parent / "docs" / "lab.md").read_text()
    table = text[text.index("| `--kernel` | what boots |"):]
    rows = table[: table.index("\n\n")].splitlines()[2:]  # below the header and its rule
    documented = [re.match(r"\| `([^`]+)`", row).group(1) for row in rows]  # type: ignore[union-attr]
    assert documented == [form for kind in KINDS for form in kind.forms]


# --- resolve, fetch and the dry run -------------------------------------------------------


def test_built_without_a_build_is_bad_input_with_the_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kinds, "cached_build", lambda: None)
    with pytest.raises(BadInput, match="no kgdb lab kernel built yet") as err:
        kinds.resolve_kernel("built")
    assert err.value.hint == "kdbg lab build-kernel"
    with pytest.raises(BadInput, match="no kgdb lab kernel built yet"):
        ROWS["built"].planned("built")


def test_a_path_that_is_no_kernel_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        kinds.resolve_kernel(str(tmp_path / "nope"))
    with pytest.raises(BadInput, match="not a kernel build directory"):
        ROWS["path"].planned(str(tmp_path))


def test_debian_fetches_at_resolve_and_the_dry_run_fetches_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(debian, "debian_release", lambda: "6.1.0-57-amd64")
    fetched: list[str | None] = []

    def fetch(progress: object, release: str | None = None) -> Kernel:
        fetched.append(release)
        return Kernel("debian", str(release), tmp_path / "vmlinuz")

    monkeypatch.setattr(debian, "debian_kernel", fetch)
    planned = kind_for("debian").planned("debian")
    image = tmp_path / "kdbg/kernels/debian-6.1.0-57-amd64/root/boot/vmlinuz-6.1.0-57-amd64"
    assert planned == Kernel("debian", "6.1.0-57-amd64", image) and fetched == []
    assert kinds.resolve_kernel("debian:6.1").release == "6.1.0-57-amd64"
    assert fetched == ["6.1.0-57-amd64"]


# --- the listing --------------------------------------------------------------------------


def test_the_listing_offers_each_kind_then_what_is_cached(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(debian, "debian_release", lambda: "6.1.0-57-amd64")
    monkeypatch.setattr(debian, "apt_cache", lambda argv: "linux-image-6.1-amd64\n"
                        "linux-image-6.12-amd64\nlinux-image-6.12.43+deb12-amd64\n")
    monkeypatch.setattr(debian, "_apt_newest", lambda series: "6.12.95+deb12-amd64")
    for release in ("6.1.0-57-amd64", "6.12.9+deb12-amd64"):
        done = tmp_path / "kdbg" / "kernels" / f"debian-{release}"
        done.mkdir(parents=True)
        (done / ".complete").write_text(release + "\n")
    monkeypatch.setattr(kinds, "cached_build", lambda: None)
    got = known_kernels()
    assert [(c.spec, c.release, c.image) for c in got] == [
        ("debian", "6.1.0-57-amd64", "cached"),
        ("debian:6.12", "6.12.95+deb12-amd64", "fetch"),
        ("built", None, "build"),
        ("debian:6.12.9+deb12-amd64", "6.12.9+deb12-amd64", "cached"),
    ]
    assert list(got[0].to_json()) == ["spec", "release", "about", "cached", "vmlinux"]
    assert ROWS["path"].listing() == Listing()


def test_kernels_command_prints_the_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("kdbg.lab.known_kernels", lambda: [
        KernelChoice("debian", "6.1.0-57-amd64", "Debian's", True, True),
        KernelChoice("built", None, "the kgdb lab kernel", False, False, uncached="build"),
    ])
    text = CliRunner().invoke(cli_main, ["lab", "kernels"])
    assert text.exit_code == 0, text.output
    assert text.output.splitlines() == [
        "KERNEL  RELEASE                 IMAGE      VMLINUX    ABOUT",
        "debian  6.1.0-57-amd64          cached     cached     Debian's",
        "built   -                       build      -          the kgdb lab kernel",
    ]
    js = CliRunner().invoke(cli_main, ["lab", "kernels", "--json"])
    assert [json.loads(line) for line in js.output.splitlines()][1] == {
        "spec": "built", "release": None, "about": "the kgdb lab kernel", "cached": False,
        "vmlinux": False}


# --- the guest lookups of a lab of each kind ----------------------------------------------


def lab_record(kernel_kind: str, vmlinux: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(kernel_kind=kernel_kind, release="6.1.0-57-amd64", vmlinux=vmlinux,
                           image="/x/bzImage")


def test_a_lab_record_finds_its_row() -> None:
    assert kind_of_lab("debian") is ROWS["debian"]
    assert kind_of_lab("build") is kind_of_lab("image") is ROWS["path"]  # built is a tree
    assert kind_of_lab("unknown") is None


def test_debug_vmlinux_by_kind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fetched: list[str] = []

    def fetch(release: str, progress: object) -> Path:
        fetched.append(release)
        return tmp_path / f"vmlinux-{release}"

    monkeypatch.setattr(debian, "debian_vmlinux", fetch)
    records = {"deb": lab_record("debian"), "recorded": lab_record("debian", "/v/vmlinux"),
               "tree": lab_record("build", "/tree/vmlinux"), "image": lab_record("image"),
               "old": lab_record("unknown")}
    monkeypatch.setattr(guest.registry, "get", lambda name: records[name])
    assert guest.vmlinux("deb") == tmp_path / "vmlinux-6.1.0-57-amd64"
    assert fetched == ["6.1.0-57-amd64"]
    assert guest.vmlinux("recorded") == Path("/v/vmlinux")
    assert guest.vmlinux("tree") == Path("/tree/vmlinux") and len(fetched) == 1
    for name in ("image", "old"):
        with pytest.raises(LabError, match=f"no vmlinux with debug info known for lab '{name}'"):
            guest.vmlinux(name)


def test_module_debug_files_by_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian, "debian_module_debug", lambda release: Path(f"/dbg/{release}"))
    records = {"deb": lab_record("debian"), "tree": lab_record("build", "/tree/vmlinux"),
               "bare": lab_record("build"), "image": lab_record("image"),
               "old": lab_record("unknown", "/old/vmlinux")}
    monkeypatch.setattr(guest.registry, "get", lambda name: records[name])
    assert guest.module_debug("deb") == Path("/dbg/6.1.0-57-amd64")
    assert guest.module_debug("tree") == Path("/tree")
    assert [guest.module_debug(n) for n in ("bare", "image", "old")] == [None, None, None]


def test_rows_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ROWS["debian"].name = "x"  # type: ignore[misc]
