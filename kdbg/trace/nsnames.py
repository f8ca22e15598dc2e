"""Names of network namespaces, by inode: the files under /var/run/netns."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

NETNS_DIR = Path("/var/run/netns")


class NetnsNames:
    """Maps a netns inode to its name under ``directory``.

    The directory is read again when an inode with no name turns up (a namespace
    made after the tracer started), at most once per ``min_interval`` seconds.
    """

    def __init__(self, directory: Path = NETNS_DIR, *, min_interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self.min_interval = min_interval
        self.clock = clock
        self._names: dict[int, str] = {}
        self._read_at: float | None = None

    def refresh(self) -> None:
        """Stat every entry of the directory (entries that vanish are skipped)."""
        names: dict[int, str] = {}
        try:
            entries = sorted(os.listdir(self.directory))
        except OSError:
            entries = []
        for entry in entries:
            try:
                names.setdefault(os.stat(self.directory / entry).st_ino, entry)
            except OSError:
                continue
        self._names = names
        self._read_at = self.clock()

    def name(self, inode: int | None) -> str | None:
        """The name of namespace ``inode``, or None when it has none."""
        if not inode:
            return None
        if inode not in self._names and (
                self._read_at is None or self.clock() - self._read_at >= self.min_interval):
            self.refresh()
        return self._names.get(inode)
