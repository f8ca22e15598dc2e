#!/bin/bash
# Install kdbg's Wireshark dissector (kdbg/record/kdbg.lua: kdbg.* display-filter
# fields on the pcapng kdbg writes) for Wireshark and tshark, as a link to this
# checkout's file, so it follows the checkout. scripts/setup.sh runs it.
#
#   scripts/wireshark-dissector.sh             into Wireshark's global Lua plugin
#                                              folder (needs root)
#   scripts/wireshark-dissector.sh --personal  into the calling user's own
#                                              (~/.local/lib/wireshark/plugins)
#
# Both folders come from 'tshark -G folders', so any Wireshark version's layout
# is followed (Debian bookworm's 4.0 included).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LUA="$ROOT/kdbg/record/kdbg.lua"
say() { printf 'wireshark-dissector: %s\n' "$*" >&2; }

case "${1:-}" in
    "") WHICH="Global Lua Plugins" ;;
    --personal) WHICH="Personal Lua Plugins" ;;
    *) say "error: unknown option $1 (use --personal or nothing)"; exit 2 ;;
esac
command -v tshark >/dev/null || { say "error: tshark is not installed"; exit 1; }
DIR="$(tshark -G folders 2>/dev/null | sed -n "s/^$WHICH:[[:space:]]*//p")"
[ -n "$DIR" ] || { say "error: tshark -G folders names no '$WHICH' folder"; exit 1; }
mkdir -p "$DIR"
ln -sfn "$LUA" "$DIR/kdbg.lua"
say "$DIR/kdbg.lua -> $LUA"
