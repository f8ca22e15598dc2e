"""The guest agent: built from ``vm/kdbg-agent.c`` on the host, cached by source hash.

The guest runs it from the host's files over 9p as virtme-ng's boot command. It is a
static binary so that starting it reads one file: under TCG a Python agent spent two
seconds starting (each of the interpreter's file lookups is a 9p round trip), the
binary starts in milliseconds. The build takes well under a second and happens once
per source change, into ``$XDG_CACHE_HOME/kdbg/agent/``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from kdbg.dirs import VM_DIR, cache_dir
from kdbg.errors import LabError

SOURCE = VM_DIR / "kdbg-agent.c"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror", "-static", "-s")


def binary_path() -> Path:
    """Where the agent for the current source lives (built or not)."""
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:12]
    return cache_dir("agent") / f"kdbg-agent-{digest}"


def ensure_built() -> Path:
    """The agent binary, compiled first if this source has not been built yet.

    Raises LabError with the compiler's message when there is no C compiler or the
    build fails (``scripts/setup.sh`` installs build-essential).
    """
    target = binary_path()
    if target.exists():
        return target
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        raise LabError("no C compiler to build the lab's guest agent (run scripts/setup.sh)")
    fd, tmp = tempfile.mkstemp(prefix=".kdbg-agent-", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *CFLAGS, "-o", tmp, str(SOURCE)],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or [f"{cc} exited {proc.returncode}"]
            first = next((ln for ln in lines if "error" in ln), lines[-1])
            raise LabError(f"building the guest agent failed: {first.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: labs booting side by side never see half a file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
