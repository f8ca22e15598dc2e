"""The BPF plumbing every tracer shares: program text rendered from templates
(``render``, ``program``), struct offsets from BTF (``offsets``), the ring-buffer probe
(``probe``), the packet filters (``filters``: one :class:`PacketFilters` for watch,
path, diagnose, report and the exporter), the event layout and its one decode
(``layout``, ``event``), the ``--cmd`` workload (``workload``), the one
attach/poll/drain loop (``loop``) and the base of the tracers' line sinks (``lines``).
It imports no feature room (docs/architecture.md).
"""
