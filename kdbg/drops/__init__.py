"""``kdbg watch``: the drop tracer over the shared BPF plumbing (:mod:`kdbg.trace`), and
its output. See docs/architecture.md.

* :mod:`~kdbg.drops.watch`: the tracer, its config and the sink it reports to;
* :mod:`~kdbg.drops.bpfwatch`: ``--bpf``, drops decided by XDP programs' verdicts;
* :mod:`~kdbg.drops.output`: text lines, JSON lines, stats tables;
* :mod:`~kdbg.drops.remote`: ``kdbg watch`` run elsewhere (options, the lab guest's
  command line).
"""

from kdbg.drops.bpfwatch import BpfWatchConfig
from kdbg.drops.bpfwatch import prepare as prepare_bpf
from kdbg.drops.bpfwatch import watch as watch_bpf
from kdbg.drops.output import (
    JsonSink,
    StatsRow,
    Summary,
    TextSink,
    drop_json,
    drop_line,
    endpoint,
    header,
    journey_block,
    more_json,
    more_line,
    read_jsonl,
    stack_lines,
    stats_json,
    stats_rows,
    stats_table,
    wall_clock,
)
from kdbg.drops.remote import guest_bpf_argv, guest_watch_argv
from kdbg.drops.watch import Sink, Watch, WatchConfig, WatchResult, prepare, recorded_causes

__all__ = ["BpfWatchConfig", "JsonSink", "Sink", "StatsRow", "Summary", "TextSink", "Watch",
           "WatchConfig", "WatchResult", "drop_json", "drop_line", "endpoint",
           "guest_bpf_argv", "guest_watch_argv", "header", "journey_block", "more_json",
           "more_line", "prepare",
           "prepare_bpf", "read_jsonl", "recorded_causes", "stack_lines", "stats_json",
           "stats_rows", "stats_table", "wall_clock", "watch_bpf"]
