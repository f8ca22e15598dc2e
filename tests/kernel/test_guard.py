"""The guard on this machine's own kallsyms and BTF: the drop sites the tracer meets,
the timer core, ordinary code, and ``kdbg guard check`` end to end."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from kdbg.cli import main
from kdbg.guard import TRANSPORTS, check
from kdbg.symbols.evidence import TargetSymbols

DROP_SITES = ["nft_do_chain", "__udp4_lib_rcv", "tcp_v4_rcv"]
TIMERS = ["mod_timer", "__mod_timer"]
PLAIN = ["do_sys_openat2", "vfs_read"]


@pytest.fixture(scope="module")
def local() -> TargetSymbols:
    return TargetSymbols.local()


def _drop_function(t: TargetSymbols) -> str:
    # Linux kernel commit ba8de796baf4 ("net: introduce sk_skb_reason_drop function")
    # (in v6.11) made kfree_skb_reason an inline wrapper; take whichever is out of line.
    names = set(t.kallsyms.names())
    return "sk_skb_reason_drop" if "sk_skb_reason_drop" in names else "kfree_skb_reason"


def test_local_target_has_btf_and_says_what_is_missing(local: TargetSymbols) -> None:
    assert local.btf is not None
    assert {"noinstr", "entry"} <= set(local.sections())
    if local.blocklist is None:  # no CONFIG_KPROBES here: unavailable, and said so
        assert "blocklist" in local.missing


@pytest.mark.parametrize("name", [*DROP_SITES, "drop", *TIMERS])
def test_kgdboe_refuses_drop_sites_and_timers(local: TargetSymbols, name: str) -> None:
    name = _drop_function(local) if name == "drop" else name
    d = check(name, transport="kgdboe", symbols=local)
    assert d.verdict == "refuse", d
    assert d.rule in ("kgdboe-networking", "kgdboe-skb", "kgdboe-timer")
    # a drop location is an offset inside the function: same answer there
    size = local.kallsyms.size_of(local.kallsyms.symbol(name))
    assert check(f"{name}+0x{size // 2:x}", transport="kgdboe", symbols=local).verdict == "refuse"


def test_networking_is_decided_by_btf_here(local: TargetSymbols) -> None:
    d = check("tcp_v4_rcv", transport="kgdboe", symbols=local)
    assert (d.evidence.kind, d.evidence.fact) == ("btf", "tcp_v4_rcv(struct sk_buff *skb)")


@pytest.mark.parametrize("name", PLAIN)
def test_plain_code_is_allowed_everywhere(local: TargetSymbols, name: str) -> None:
    for transport in TRANSPORTS:
        assert check(name, transport=transport, symbols=local).verdict == "allow"


@pytest.mark.parametrize("name", [*DROP_SITES, "drop", *TIMERS, *PLAIN])
def test_gdbstub_allows_all(local: TargetSymbols, name: str) -> None:
    name = _drop_function(local) if name == "drop" else name
    d = check(name, transport="gdbstub", symbols=local)
    assert (d.verdict, d.rule) == ("allow", "gdbstub-external")


def test_kgdboc_uart_poll_path(local: TargetSymbols) -> None:
    poll = [n for n in local.kallsyms.names() if re.search(r"poll_(get|put)_char$", n)]
    for name in poll:  # present only with CONFIG_CONSOLE_POLL
        d = check(name, transport="kgdboc", symbols=local)
        assert (d.verdict, d.rule) == ("refuse", "kgdboc-uart-poll"), d
    if not poll:
        assert "serial8250_get_poll_char" not in set(local.kallsyms.names())
    # the rest of the 8250 driver is not on the poll path
    assert check("serial8250_interrupt", transport="kgdboc", symbols=local).verdict == "allow"
    # noinstr and entry code are refused on both kgdb transports
    for transport in ("kgdboc", "kgdboe"):
        assert check("exc_int3", transport=transport, symbols=local).rule == "noinstr"
        assert check("entry_SYSCALL_64", transport=transport,
                     symbols=local).rule == "entry-text"


def test_cli_on_the_running_kernel() -> None:
    r = CliRunner().invoke(main, ["guard", "check", "tcp_v4_rcv", "--transport", "kgdboe",
                                  "--json"])
    assert r.exit_code == 3
    j = json.loads(r.stdout)
    assert (j["verdict"], j["rule"], j["evidence"]["kind"]) == \
        ("refuse", "kgdboe-networking", "btf")
    r = CliRunner().invoke(main, ["guard", "check", "vfs_read", "--transport", "kgdboe"])
    assert r.exit_code == 0 and r.stdout.startswith("allow: vfs_read+0x0")
    r = CliRunner().invoke(main, ["guard", "check", "tcp_v4_rcx"])
    assert r.exit_code == 2 and "closest: tcp_v4_rcv" in r.stderr
