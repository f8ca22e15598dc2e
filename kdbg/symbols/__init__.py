"""Kernel facts read from the kernel: kallsyms, BTF, drop-reason names, DWARF lines."""
