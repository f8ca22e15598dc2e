"""``kdbg exporter``: the drop counts kept in the kernel, served to Prometheus. See
docs/architecture.md and docs/exporter.md.

* :mod:`~kdbg.exporter.config`: the listen address, the labels, the config;
* :mod:`~kdbg.exporter.collector`: the kernel's counts summed into label sets;
* :mod:`~kdbg.exporter.server`: ``/metrics`` over HTTP, and the exporter's run.
"""

from kdbg.exporter.config import (
    DEFAULT_LABELS,
    DEFAULT_LISTEN,
    LABELS,
    ExporterConfig,
    parse_labels,
    parse_listen,
)
from kdbg.exporter.server import Exporter, prepare

__all__ = ["DEFAULT_LABELS", "DEFAULT_LISTEN", "LABELS", "Exporter", "ExporterConfig",
           "parse_labels", "parse_listen", "prepare"]
