"""tshark with this tree's kdbg dissector (kdbg/record/kdbg.lua).

Wireshark loads its global Lua plugins before a ``-X lua_script:`` one, and the
dissector stops at a second load; so where the global folder holds a kdbg.lua of
another tree (the one scripts/setup.sh linked), tshark runs in a private mount
namespace in which that file reads empty (a bind of /dev/null, gone with the
namespace; nothing outside it changes), and this tree's script is the one loaded."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from tests.conftest import need

LUA = Path(__file__).resolve().parents[1] / "kdbg" / "record" / "kdbg.lua"


@cache
def foreign_global() -> Path | None:
    """The global Lua plugins folder's kdbg.lua when it is not this tree's, else None."""
    out = subprocess.run(["tshark", "-G", "folders"], capture_output=True, text=True,
                         timeout=60).stdout
    m = re.search(r"^Global Lua Plugins:\s*(\S.*)$", out, re.M)
    if m is None:
        return None
    installed = Path(m.group(1).strip()) / "kdbg.lua"
    if not installed.exists() or installed.resolve() == LUA:
        return None
    return installed.resolve()


def argv(*args: str, lua: bool = True, twice: bool = False) -> list[str]:
    """tshark ``args``, with this tree's dissector (given ``twice`` to load it twice);
    ``lua`` False: as installed, without ``-X``."""
    need(shutil.which("tshark") is not None, "tshark (Debian's): run scripts/setup.sh")
    script = ["-X", f"lua_script:{LUA}"] if lua else []
    cmd = ["tshark", *script, *(script if twice else []), *args]
    hidden = foreign_global() if lua else None
    if hidden is None:
        return cmd
    need(os.geteuid() == 0 and shutil.which("unshare") is not None,
         f"another tree's kdbg.lua is Wireshark's global plugin ({hidden}); hiding it "
         "for this tree's needs root and unshare")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind /dev/null "$0" && exec "$@"', str(hidden), *cmd]
