"""kdbg exporter's pure parts: --listen, --labels, label sets that never move (no root)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from kdbg import exporter as exp
from kdbg.cli import main
from kdbg.errors import BadInput
from kdbg.exporter import collector
from kdbg.symbols.kallsyms import Kallsyms
from tests.conftest import need

CORE = """\
ffffffff81000000 T _stext
ffffffff81001000 T tcp_v4_rcv
ffffffff81002000 T __udp4_lib_rcv
ffffffff81003000 T _etext
"""
NF_TABLES = "ffffffffc0100000 t nft_do_chain\t[nf_tables]\n"
MODULES = "nf_tables 4096 0 - Live 0xffffffffc0100000\n"
NFT = 0xFFFFFFFFC0100040


@pytest.mark.parametrize("text, host, port", [
    ("127.0.0.1:9469", "127.0.0.1", 9469),
    ("0.0.0.0:0", "0.0.0.0", 0),
    ("[::1]:9469", "::1", 9469),
])
def test_listen_parses(text: str, host: str, port: int) -> None:
    listen = exp.parse_listen(text)
    assert (listen.host, listen.port) == (host, port)


def test_listen_url_brackets_v6() -> None:
    assert exp.parse_listen("[::1]:0").url(8000) == "http://[::1]:8000/metrics"


@pytest.mark.parametrize("text, needle", [
    ("9469", "ADDR:PORT"), ("localhost:9469", "IP address"), ("127.0.0.1:http", "port"),
    ("127.0.0.1:70000", "out of range"),
])
def test_listen_refuses(text: str, needle: str) -> None:
    with pytest.raises(BadInput, match=needle):
        exp.parse_listen(text)


def test_labels_in_canonical_order() -> None:
    assert exp.parse_labels("ifname, Reason") == ("reason", "ifname")
    assert exp.parse_labels("none") == ()
    with pytest.raises(BadInput, match="unknown label 'pod'"):
        exp.parse_labels("reason,pod")


def test_per_device_only_for_netns_or_ifname() -> None:
    assert not exp.ExporterConfig(labels=("reason", "location")).per_device
    assert exp.ExporterConfig(labels=("ifname",)).per_device


def test_aggregate_sums_keys_and_holds_back_unnamed_ones() -> None:
    counts = {(3, 0x10, 0, ""): 5, (3, 0x20, 0, ""): 7, (12, 0x30, 0, ""): 2}
    names = {0x10: "a", 0x20: "a", 0x30: None}
    got = collector.aggregate(counts, lambda k: None if names[k[1]] is None
                              else (str(k[0]), names[k[1]]))
    assert got == {("3", "a"): 12}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_function_names_reread_kallsyms_for_a_new_module_then_stay_fixed() -> None:
    tables = [Kallsyms.parse(CORE, ""), Kallsyms.parse(CORE + NF_TABLES, MODULES),
              Kallsyms.parse(CORE, "")]
    reads: list[int] = []

    def load() -> Kallsyms:
        reads.append(1)
        return tables[len(reads) - 1]

    clock = Clock()
    names = collector.FunctionNames(load, clock)
    assert names.name(0xFFFFFFFF81001010) == "tcp_v4_rcv"
    # nf_tables loaded after the first read: no name yet, and no re-read every scrape
    assert names.name(NFT) is None
    assert names.name(NFT) is None and len(reads) == 1
    clock.now += collector.KALLSYMS_REFRESH_S
    assert names.name(NFT) == "nft_do_chain" and len(reads) == 2
    # Once named, a name never changes (the series it counts into never goes down).
    clock.now += collector.KALLSYMS_REFRESH_S
    assert names.name(NFT) == "nft_do_chain" and len(reads) == 2


def test_function_names_unknown_for_good_after_a_fresh_read() -> None:
    clock = Clock()
    names = collector.FunctionNames(lambda: Kallsyms.parse(CORE, ""), clock)
    assert names.name(NFT) is None
    clock.now += collector.KALLSYMS_REFRESH_S
    assert names.name(NFT) == collector.UNKNOWN


@pytest.mark.parametrize("args, needle", [
    (["--listen", "nowhere"], "--listen wants ADDR:PORT"),
    (["--labels", "reason,pod"], "unknown label 'pod'"),
])
def test_cli_bad_input_is_one_line_exit_2(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, ["exporter", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdbg: error:") and needle in lines[0]


def yaml_block(first_line: str) -> str:
    """The ```yaml block of docs/exporter.md that starts with ``first_line``."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "exporter.md").read_text()
    for block in doc.split("```yaml\n")[1:]:
        text = block.split("```", 1)[0]
        if text.startswith(first_line):
            return text
    raise AssertionError(f"no yaml block starting {first_line!r} in docs/exporter.md")


def test_docs_scrape_config_and_alert_rules_pass_promtool(tmp_path: Path) -> None:
    need(shutil.which("promtool") is not None,
         "promtool: Debian's prometheus package (scripts/setup.sh installs it)")
    (tmp_path / "kdbg.rules.yml").write_text(yaml_block("# kdbg.rules.yml"))
    (tmp_path / "prometheus.yml").write_text(yaml_block("# prometheus.yml"))
    rules = subprocess.run(["promtool", "check", "rules", str(tmp_path / "kdbg.rules.yml")],
                           capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0 and "SUCCESS: 3 rules found" in rules.stdout, rules.stderr
    config = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert config.returncode == 0, config.stdout + config.stderr
    assert "is valid prometheus config file syntax" in config.stdout
