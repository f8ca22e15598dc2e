"""``kdbg lab``: boot, use and stop QEMU lab VMs; build the kgdb lab kernel."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from kdbg import lab as labapi
from kdbg.lab.accel import ACCELS
from kdbg.lab.wiring import wiring
from kdbg.transports import NAMES


def _name_option(f: Any) -> Any:
    """``[NAME]`` positional or ``--name NAME``: the lab to act on (default 'default')."""
    f = click.option("--name", "name_opt", default=None, metavar="NAME",
                     help="The lab (same as the NAME argument).")(f)
    return click.argument("name", required=False)(f)


def _pick(name: str | None, name_opt: str | None) -> str:
    if name and name_opt and name != name_opt:
        raise click.UsageError(f"two lab names given: {name} and {name_opt}")
    return name_opt or name or "default"


def _progress(msg: str) -> None:
    click.echo(f"kdbg: {msg}", err=True)


def _state(info: labapi.LabInfo) -> str:
    if not info.alive:
        return "DEAD"
    return "running" if info.ready_at else "booting"


def _describe(info: labapi.LabInfo) -> list[str]:
    name_opt = "" if info.name == "default" else f" {info.name}"
    gdb = " ".join([*info.gdb_prefix, "gdb", "-ex", f"'target remote {info.gdb_target}'"])
    lines = [
        f"lab {info.name}: {_state(info)} "
        f"(QEMU PID {info.pid}, kernel {info.release}, {info.transport})",
        f"  gdb endpoint:  {info.gdb_endpoint}"
        + (f"  (in netns {info.netns})" if info.netns else ""),
        f"  gdb:           {gdb}",
        f"  vmlinux:       {info.vmlinux or '(none known)'}",
        f"  kaslr:         {'off (nokaslr)' if info.nokaslr else 'on'}",
        f"  run commands:  kdbg lab exec{name_opt} -- CMD",
        f"  console:       kdbg lab console{name_opt}   (Ctrl-] leaves)",
        f"  stop:          kdbg lab down{name_opt}",
    ]
    if wiring(info.transport).own_netns:
        lines.insert(3, f"  KGDBoE module: kdbg lab kgdboe-load{name_opt} --module PATH/kgdboe.ko")
    if info.boot_seconds is not None:
        lines.insert(1, f"  ready after:   {info.boot_seconds:.1f}s")
    return lines


class _RootGroup(click.Group):
    """Notes whether ``--help`` was asked for, so help works for anyone."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        before = args[: args.index("--")] if "--" in args else args
        ctx.meta["kdbg_help"] = any(a in ("-h", "--help") for a in before)
        return super().parse_args(ctx, args)


@click.group("lab", cls=_RootGroup)
@click.pass_context
def lab(ctx: click.Context) -> None:
    """Boot and use QEMU lab VMs (TCG, the host's root fs over 9p, via virtme-ng).

    A lab is root's: its gdb stub, serial lines and console are Unix sockets in a
    state directory only root can enter, and its exec channel takes a per-lab key.
    Other users get one line saying so (docs/lab.md, "Who can reach a lab").

    \b
    Examples:
      kdbg lab up                          # Debian's stock 6.1 kernel, QEMU gdb stub
      kdbg lab exec -- uname -r
      kdbg lab exec -- kdbg watch --json --count 1
      kdbg lab status
      kdbg lab down
      kdbg lab build-kernel                # the kgdb lab kernel (~18 min, cached)
      kdbg lab up --name kg --kernel built --transport kgdboc
    """
    if not ctx.meta.get("kdbg_help"):
        labapi.require_root()


@lab.command("up")
@click.option("--name", default="default", show_default=True, help="Lab name (a-z, 0-9, -).")
@click.option("--kernel", "kernel", default="debian", show_default=True,
              help=f"{labapi.kernel_help()} See kdbg lab kernels.")
@click.option("--transport", type=click.Choice(NAMES), default="gdbstub",
              show_default=True, help="How gdb reaches the kernel.")
@click.option("--memory", default="1G", show_default=True, help="Guest memory, like 1G or 768M.")
@click.option("--cpus", type=int, default=2, show_default=True, help="Guest CPUs.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for the guest to be ready.")
@click.option("--append", multiple=True, help="Extra kernel boot option (repeatable).")
@click.option("--accel", type=click.Choice(ACCELS), default="auto", show_default=True,
              help="KVM or TCG; auto uses KVM when a probe guest runs under it "
                   "(a few seconds, cached per boot).")
@click.option("--no-vmlinux", is_flag=True,
              help="Do not fetch the Debian kernel's debug vmlinux (858 MB .deb, once).")
@click.option("--no-source", is_flag=True,
              help="Do not fetch the Debian kernel's source and prepare Linux's gdb scripts "
                   "(139 MB .deb, 1.4 GB tree, once; see kdbg lab source).")
@click.option("--dry-run", is_flag=True,
              help="Print the command that boots the lab; start nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the lab's record as JSON.")
def up_cmd(name: str, kernel: str, transport: str, memory: str, cpus: int, timeout: float,
           append: tuple[str, ...], accel: str, no_vmlinux: bool, no_source: bool,
           dry_run: bool, as_json: bool) -> None:
    """Boot a lab VM detached, wait until it is ready, print its endpoints.

    The guest runs the host's userspace (read-only, with throw-away overlays), so
    the installed kdbg works inside it; tracefs is mounted and kernel headers are
    linked for bcc. Boot options get 'nokaslr'.

    \b
    Examples:
      kdbg lab up
      kdbg lab up --name second --memory 2G --cpus 1
      kdbg lab up --dry-run
      kdbg lab up --name k612 --kernel debian:6.12
      kdbg lab up --name kg --kernel built --transport kgdboc
      kdbg lab up --name oe --kernel ~/linux/build --transport kgdboe
      kdbg lab up --name quick --no-vmlinux --no-source
    """
    config = labapi.LabConfig(name=name, kernel=kernel, transport=transport, memory=memory,
                              cpus=cpus, boot_timeout=timeout, fetch_vmlinux=not no_vmlinux,
                              fetch_source=not no_source, append=append, accel=accel)
    if dry_run:
        click.echo(labapi.dry_run(config))
        return
    info = labapi.up(config, progress=_progress)
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=2))
    else:
        click.echo("\n".join(_describe(info)))


@lab.command("kernels")
@click.option("--json", "as_json", is_flag=True, help="JSON, one record per kernel.")
def kernels_cmd(as_json: bool) -> None:
    """List the kernels kdbg lab up --kernel can boot, and which are cached.

    A Debian kernel is fetched with apt-get download on first use (never installed);
    'vmlinux' is its -dbg vmlinux and network modules' debug files, fetched at the
    first kdbg lab up. Debian's newer series come from the bookworm-backports and
    bookworm-security apt sources (scripts/setup.sh adds backports).

    \b
    Examples:
      kdbg lab kernels
      kdbg lab up --name k612 --kernel debian:6.12
    """
    choices = labapi.known_kernels()
    if as_json:
        for c in choices:
            click.echo(json.dumps(c.to_json()))
        return
    width = max(len(c.spec) for c in choices)
    click.echo(f"{'KERNEL':<{width}}  {'RELEASE':<22}  {'IMAGE':<9}  {'VMLINUX':<9}  ABOUT")
    for c in choices:
        click.echo(f"{c.spec:<{width}}  {c.release or '-':<22}  {c.image:<9}  "
                   f"{'cached' if c.vmlinux else '-':<9}  {c.about}")


@lab.command("status")
@_name_option
@click.option("--json", "as_json", is_flag=True, help="JSON, one record per lab.")
def status_cmd(name: str | None, name_opt: str | None, as_json: bool) -> None:
    """Show labs: running or dead (QEMU gone), with their endpoints.

    \b
    Examples:
      kdbg lab status
      kdbg lab status default --json
    """
    name = name_opt or name
    infos = [labapi.get(name)] if name else labapi.status()
    if as_json:
        for info in infos:
            click.echo(json.dumps(info.to_json()))
        return
    if not infos:
        click.echo("no labs (kdbg lab up boots one)")
    for info in infos:
        click.echo("\n".join(_describe(info)))


@lab.command("down")
@_name_option
def down_cmd(name: str | None, name_opt: str | None) -> None:
    """Stop a lab: its QEMU (by recorded PID only), its state and its netns.

    \b
    Examples:
      kdbg lab down
      kdbg lab down second
    """
    name = _pick(name, name_opt)
    info = labapi.down(name)
    click.echo(f"lab {name}: stopped (QEMU PID {info.pid})")


class _ExecCommand(click.Command):
    """Takes ``[NAME] [OPTIONS] -- CMD...``: everything after the first '--' is the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args and not any(a in ("-h", "--help") for a in args[: args.index("--")]):
            i = args.index("--")
            ctx.meta["kdbg_exec_argv"] = args[i + 1 :]
            args = args[:i]
        elif not any(a in ("-h", "--help") for a in args):
            raise click.UsageError("give the command after '--': kdbg lab exec [NAME] -- CMD...")
        return super().parse_args(ctx, args)


@lab.command("exec", cls=_ExecCommand)
@_name_option
@click.option("-e", "--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="Environment for the command (repeatable).")
@click.option("--cwd", default="/", show_default=True, help="Working directory in the guest.")
@click.pass_context
def exec_cmd(ctx: click.Context, name: str | None, name_opt: str | None,
             envs: tuple[str, ...], cwd: str) -> None:
    """Run a command in a lab: kdbg lab exec [NAME] -- CMD...

    Output streams as it comes, also for hours; while a debugger holds the guest
    stopped the stream just pauses. Exits with the command's status. Piped stdin is
    forwarded. Ctrl-C sends SIGINT to the remote command; a second Ctrl-C drops the
    connection, which kills it.

    \b
    Examples:
      kdbg lab exec -- uname -r
      kdbg lab exec second -- ip -br addr
      kdbg lab exec -- kdbg watch --json --count 1
      echo hi | kdbg lab exec -- cat
    """
    argv = ctx.meta.get("kdbg_exec_argv") or []
    if not argv:
        raise click.UsageError("no command after '--'")
    env = {}
    for item in envs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--env")
        env[key] = value
    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer
    status = labapi.exec_(_pick(name, name_opt), argv, stdin=stdin, env=env, cwd=cwd)
    ctx.exit(status)


@lab.command("console")
@_name_option
def console_cmd(name: str | None, name_opt: str | None) -> None:
    """Attach to the lab's serial console (a root shell on ttyS2). Ctrl-] leaves.

    \b
    Examples:
      kdbg lab console
      kdbg lab console second
    """
    name = _pick(name, name_opt)
    child = labapi.console(name)
    click.echo(f"kdbg: console of lab {name} (Ctrl-] leaves)", err=True)
    child.sendline(b"")
    child.interact()
    child.close()


@lab.command("kgdboe-load")
@_name_option
@click.option("--module", "module", required=True, type=click.Path(path_type=Path),
              help="kgdboe.ko built against the lab kernel (kdbg does not ship it).")
@click.option("--udp-port", type=int, default=31337, show_default=True)
def kgdboe_load_cmd(name: str | None, name_opt: str | None, module: Path, udp_port: int) -> None:
    """Load a KGDBoE module in a --transport kgdboe lab, with the parameters it needs.

    kallsyms_lookup_name_address comes from the guest's /proc/kallsyms, device_name
    is the e1000 on the lab's netns tap. See docs/lab.md for building KGDBoE.

    \b
    Examples:
      make -C ~/.cache/kdbg/kernels/kgdb-HASH M=$HOME/kgdboe KCFLAGS=-Wno-error modules
      kdbg lab up --name oe --kernel built --transport kgdboe --cpus 1
      kdbg lab kgdboe-load oe --module ~/kgdboe/kgdboe.ko
      kdbg gdb break do_sys_openat2 --lab oe --wait
    """
    name = _pick(name, name_opt)
    labapi.kgdboe_load(name, module, udp_port)
    info = labapi.get(name)
    click.echo(f"kgdboe loaded in lab {name}: gdb endpoint {info.gdb_endpoint} "
               f"(run gdb in netns {info.netns})")


@lab.command("vmlinux")
@_name_option
def vmlinux_cmd(name: str | None, name_opt: str | None) -> None:
    """Print the path of the lab kernel's vmlinux with DWARF (fetched once if needed).

    \b
    Examples:
      gdb "$(kdbg lab vmlinux)" -ex "target remote $(kdbg lab status --json | jq -r .gdb_target)"
    """
    click.echo(labapi.vmlinux(_pick(name, name_opt), progress=_progress))


@lab.command("source")
@_name_option
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def source_cmd(name: str | None, name_opt: str | None, as_json: bool) -> None:
    """Print where the lab kernel's source and Linux's gdb scripts are (fetched once).

    Debian's kernels: the linux-source package of exactly the running kernel's
    version, unpacked in the cache, with scripts/gdb generated from the kernel's own
    config (make scripts_gdb). A built kernel or --kernel TREE: the tree itself.
    kdbg lab up prepares them while the lab boots (--no-source skips that).

    \b
    Examples:
      kdbg lab source
      kdbg lab source k612 --json
      gdb "$(kdbg lab vmlinux)" -ex "directory $(kdbg lab source --json | jq -r '.dirs[0]')"
    """
    src = labapi.kernel_source(_pick(name, name_opt), progress=_progress)
    if as_json:
        click.echo(json.dumps(src.to_json()))
        return
    click.echo(f"source:       {' '.join(map(str, src.dirs)) or '(none)'}")
    click.echo(f"gdb scripts:  {src.gdb_scripts or '(none)'}")
    click.echo(f"version:      {src.version or '(unknown)'}")
    if src.dirs:
        steps = [f"directory {' '.join(map(str, src.dirs))}"]
        steps += [f"source {src.gdb_scripts}"] if src.gdb_scripts else []
        click.echo(f"in gdb:       {'; '.join(steps)}")
    if src.note:
        click.echo(f"note:         {src.note}")


@lab.command("build-kernel")
@click.option("--jobs", "-j", type=int, default=None, help="make -j (default: CPU count).")
@click.option("--nice", type=int, default=0, show_default=True, help="nice level for make.")
@click.option("--force", is_flag=True, help="Rebuild even if cached.")
def build_kernel_cmd(jobs: int | None, nice: int, force: bool) -> None:
    """Build the kgdb lab kernel from Debian's linux-source-6.1 and vm/kgdb-lab.config.

    Installs missing build packages with apt-get, fetches the source once, builds out
    of tree in the cache (keyed by a hash of the config inputs) and prints the result.
    About 18 minutes on 2 idle cores; a second run returns at once.

    \b
    Examples:
      kdbg lab build-kernel
      kdbg lab build-kernel --nice 19
      kdbg lab up --name kg --kernel built --transport kgdboc
    """
    started = time.monotonic()
    kernel = labapi.build_kernel(jobs=jobs, nice=nice, progress=_progress, force=force)
    click.echo(f"kernel:  {kernel.release}")
    click.echo(f"build:   {kernel.kdir}")
    click.echo(f"image:   {kernel.image}")
    click.echo(f"vmlinux: {kernel.vmlinux}")
    click.echo(f"use:     kdbg lab up --kernel built --transport kgdboc   "
               f"({time.monotonic() - started:.0f}s)")


COMMANDS = [lab]
