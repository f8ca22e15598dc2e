"""``kdbg watch`` and what grows from it, over the shared BPF plumbing (:mod:`kdbg.trace`):
``watch`` (the tracer), ``output`` (text lines, JSON lines, stats tables), causes and
``kdbg diagnose``, recording and ``kdbg report``, pcapng, the exporter, hardware drops.
See docs/architecture.md.
"""
