"""``kdbg watch --break`` (and ``--lab``/``--events-cmd`` without it).

* :mod:`~kdbg.breakwatch.sources`: where the drop events come from (the tracer in a
  lab guest, or any command printing kdbg's JSON lines);
* :mod:`~kdbg.breakwatch.remoteloop`: :class:`~kdbg.breakwatch.remoteloop.RemoteLoop`,
  the one loop over the remote tracer's items (deadline, count, Ctrl-C) that the two
  below extend;
* :mod:`~kdbg.breakwatch.watch`: :class:`BreakWatch`, the arm/hit loop over a debug
  session;
* :mod:`~kdbg.breakwatch.remote`: the target's drops shown here, without breaking;
* :mod:`~kdbg.breakwatch.report`: text and JSON-lines sinks;
* :mod:`~kdbg.breakwatch.model`: the config, the sink protocol, a hit, the outcome.
"""

from kdbg.breakwatch.model import BreakConfig, BreakOutcome, BreakSink, Hit
from kdbg.breakwatch.remote import watch_remote
from kdbg.breakwatch.watch import BreakWatch, run

__all__ = ["BreakConfig", "BreakOutcome", "BreakSink", "BreakWatch", "Hit", "run",
           "watch_remote"]
