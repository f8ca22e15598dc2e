"""kdbg: a kernel-debug companion for network developers."""

__version__ = "0.1.0"
