"""The drop tracer's features above the shared BPF plumbing (:mod:`kdbg.trace`):
causes and ``kdbg diagnose``, recording and ``kdbg report``, pcapng, the exporter.

``kdbg watch`` itself (``kdbg/watch.py``, ``kdbg/report.py``) moves here with the
layout step (see docs/architecture.md once written).
"""
