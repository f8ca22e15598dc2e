"""Where a tracer's sinks write: records on ``out``, progress and summaries on ``err``."""

from __future__ import annotations

from typing import Any


class LineSink:
    """Base of the text and JSON-lines sinks of ``kdbg watch`` and ``kdbg path``: each
    line is flushed as written, so a pipe sees every record as it happens."""

    def __init__(self, out: Any, err: Any) -> None:
        self.out, self.err = out, err

    def _write(self, stream: Any, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    def watching(self, message: str) -> None:
        """The 'kdbg: watching' line, once attached."""
        self._write(self.err, message)
