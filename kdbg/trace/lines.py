"""Where a tracer's sinks write: records on ``out``, progress and summaries on ``err``."""

from __future__ import annotations

from typing import Any


class LineSink:
    """Base of the text and JSON-lines sinks of ``kdbg watch`` and ``kdbg path``: a line
    is flushed as written (:meth:`_write`), or, for a drop, with the rest of its batch
    (:meth:`_add`, then the tracer's :meth:`flush` after each turn), so a pipe sees
    every record as it happens without a write call per drop in a storm."""

    def __init__(self, out: Any, err: Any) -> None:
        self.out, self.err = out, err

    def _write(self, stream: Any, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    def _add(self, text: str) -> None:
        self.out.write(text + "\n")

    def flush(self) -> None:
        """Pass on what :meth:`_add` wrote."""
        self.out.flush()

    def watching(self, message: str) -> None:
        """The 'kdbg: watching' line, once attached."""
        self._write(self.err, message)
