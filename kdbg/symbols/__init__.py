"""Facts about a kernel, read from the kernel: kallsyms, BTF, tracepoint formats and
drop-reason names, DWARF file:line. The lowest room: it imports neither ``lab`` nor
``trace`` (docs/architecture.md)."""
