"""Recording drops and reading them back: ``kdbg watch --write/--pcap`` and ``kdbg report``.
See docs/architecture.md and docs/record.md.

* :mod:`~kdbg.record.recorder`: the recorder (here, or in a lab guest);
* :mod:`~kdbg.record.layout`, :mod:`~kdbg.record.ringbuf`: the record's layout, the
  ring buffer read in bulk;
* :mod:`~kdbg.record.recfile`: the file's blocks, written and read;
* :mod:`~kdbg.record.offline`: a recording decoded, filtered and grouped;
* :mod:`~kdbg.record.pcapng`: the packets as pcapng;
* :mod:`~kdbg.record.report`: ``kdbg report``;
* :mod:`~kdbg.record.diff`: ``kdbg report A B``, two profiles compared.
"""

from kdbg.record.diff import Diff, compare, diff_json, diff_text
from kdbg.record.recfile import RecordingError, RecordingIOError
from kdbg.record.recorder import (
    RING_PAGES_DEFAULT,
    SNAPLEN_DEFAULT,
    Recorder,
    RecordOptions,
    RecordResult,
    prepare,
    record_lab,
)
from kdbg.record.report import (
    ReportConfig,
    ReportResult,
    group_json,
    group_table,
    report,
    summary_json,
    summary_lines,
)

__all__ = ["RING_PAGES_DEFAULT", "SNAPLEN_DEFAULT", "Diff", "RecordOptions", "RecordResult",
           "Recorder", "RecordingError", "RecordingIOError", "ReportConfig", "ReportResult",
           "compare", "diff_json", "diff_text", "group_json", "group_table", "prepare",
           "record_lab", "report", "summary_json", "summary_lines"]
