"""Where kdbg keeps what it downloads and builds: never inside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BPF_DIR = REPO_ROOT / "bpf"
GDB_DIR = REPO_ROOT / "gdb"
VM_DIR = REPO_ROOT / "vm"


def cache_dir(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/kdbg/...`` (or ``~/.cache/kdbg/...``), created on demand."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base, "kdbg", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
