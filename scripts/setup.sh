#!/bin/bash
# kdbg set-up for a Debian bookworm machine (or one of its kind). Idempotent:
# a second run checks and returns in seconds. Needs root.
#
#   scripts/setup.sh            install everything kdbg and its tests need
#
# What it does:
#   0. Debian's bookworm-backports suite as an apt source
#      (/etc/apt/sources.list.d/kdbg-backports.sources): the lab's newer kernels
#      (kdbg lab up --kernel debian:6.12) are fetched from it, never installed;
#      backports has apt priority 100, so nothing installed is upgraded from it
#   1. apt-get installs the packages in scripts/debian-packages.txt
#   2. kernel headers for bcc: the running kernel's own headers package when
#      Debian has one, else Debian's generic headers linked under
#      /lib/modules/$(uname -r)/{build,source}
#   3. mounts tracefs (and debugfs, for the kprobe blocklist)
#   4. a venv at .venv made from /usr/bin/python3 --system-site-packages
#      (bcc's Python bindings import only there), kdbg installed editable
#   5. /usr/local/bin/kdbg pointing at it
#   6. kdbg's Wireshark dissector (kdbg.* display filters on kdbg's pcapng) linked
#      into Wireshark's global Lua plugin folder (scripts/wireshark-dissector.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KVER="$(uname -r)"
export DEBIAN_FRONTEND=noninteractive

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (bcc, tracefs and the lab need it): sudo $0"
command -v apt-get >/dev/null || die "this set-up is for Debian-like systems (no apt-get)"

mapfile -t PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' "$ROOT/scripts/debian-packages.txt")

missing_pkgs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' \
            || printf '%s\n' "$p"
    done
}

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -q >/dev/null
        APT_UPDATED=1
    fi
}

# 0. backports (only for apt-get download of lab kernels), from the mirror this
#    machine already uses for bookworm
debian_uri() {
    local uri
    uri="$(awk '/^URIs:/ {u = $2} /^Suites:/ {for (i = 2; i <= NF; i++) if ($i == "bookworm") {print u; exit}}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
    [ -n "$uri" ] || uri="$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' \
        /etc/apt/sources.list 2>/dev/null)"
    printf '%s' "$uri"
}
BACKPORTS=/etc/apt/sources.list.d/kdbg-backports.sources
MIRROR="$(debian_uri)"
BACKPORTS_TEXT="# Added by kdbg's scripts/setup.sh: lab kernels (kdbg lab up --kernel debian:6.12)
Types: deb
URIs: $MIRROR
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
if [ -z "$MIRROR" ]; then
    say "warning: no bookworm apt source found; backports kernels will not be available"
elif [ "$(cat "$BACKPORTS" 2>/dev/null)" != "$BACKPORTS_TEXT" ]; then
    say "adding Debian's bookworm-backports apt source ($BACKPORTS)"
    printf '%s\n' "$BACKPORTS_TEXT" > "$BACKPORTS"
    apt_update_once
elif ! compgen -G '/var/lib/apt/lists/*_bookworm-backports_main_binary-amd64_Packages*' >/dev/null; then
    apt_update_once
fi

# 1. packages
mapfile -t NEED < <(missing_pkgs "${PKGS[@]}")
if [ "${#NEED[@]}" -gt 0 ]; then
    apt_update_once
    say "installing: ${NEED[*]}"
    apt-get install -y -q --no-install-recommends "${NEED[@]}" >/dev/null
    # Debian starts the Prometheus it installs as a service on every address; the
    # exporter's tests run their own on 127.0.0.1, so one installed here stays off.
    if printf '%s\n' "${NEED[@]}" | grep -qx prometheus && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

# 2. headers for bcc
MODDIR="/lib/modules/$KVER"
if [ ! -e "$MODDIR/build/include/generated/autoconf.h" ] || [ ! -e "$MODDIR/source/include/linux/kconfig.h" ]; then
    # apt-cache knows nothing before the first apt-get update
    apt-cache show linux-headers-amd64 >/dev/null 2>&1 || apt_update_once
    if apt-cache show "linux-headers-$KVER" >/dev/null 2>&1; then
        say "installing linux-headers-$KVER"
        apt-get install -y -q --no-install-recommends "linux-headers-$KVER" >/dev/null
    else
        if [ -n "$(missing_pkgs linux-headers-amd64)" ]; then
            say "no headers package for $KVER; installing Debian's generic linux-headers-amd64"
            apt-get install -y -q --no-install-recommends linux-headers-amd64 >/dev/null
        fi
        HDR="$(ls -d /usr/src/linux-headers-*-amd64 | sort -V | tail -1)"
        [ -d "$HDR" ] || die "linux-headers-amd64 installed no /usr/src/linux-headers-*-amd64"
        mkdir -p "$MODDIR"
        ln -sfn "$HDR" "$MODDIR/build"
        ln -sfn "${HDR%-amd64}-common" "$MODDIR/source"
        say "linked $MODDIR/build -> $HDR (struct offsets still come from BTF)"
    fi
fi

# 3. tracefs and debugfs
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing \
    || die "cannot mount tracefs on /sys/kernel/tracing"
mountpoint -q /sys/kernel/debug || mount -t debugfs nodev /sys/kernel/debug || true

# 4. venv with kdbg
VENV="$ROOT/.venv"
STAMP="$VENV/.kdbg-setup"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    say "creating venv $VENV (system site packages, for bcc)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
    say "pip installing kdbg and its test tools"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$ROOT[test,lab]"
    echo "$WANT" > "$STAMP"
fi
"$VENV/bin/python" -c 'import bcc, pygdbmi, click, pexpect' \
    || die "the venv cannot import bcc/pygdbmi/click/pexpect"

# 5. kdbg on PATH
ln -sfn "$VENV/bin/kdbg" /usr/local/bin/kdbg

# 6. kdbg's fields in Wireshark/tshark
"$ROOT/scripts/wireshark-dissector.sh" || die "cannot install kdbg's Wireshark dissector"
say "ready: $(command -v kdbg) ($("$VENV/bin/kdbg" --version))"
