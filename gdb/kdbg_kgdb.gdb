# Sourced by kdbg on transports where kgdb is the stub (kgdboc, KGDBoE).
#
# kgdb gives gdb a sleeping task's registers from the task's saved stack frame
# (sleeping_thread_to_gdb_regs); the stack of a task that exited and is not yet reaped
# is already freed, and reading it faults inside kgdb: the kernel panics. Seen on the
# lab's kgdb kernel (6.1) with `info threads` while a shell's children came and went.
# So the commands that read every task's registers are refused here; lx-ps lists the
# tasks from kernel memory, and `thread N` still reaches a task you name.
define info hook-threads
  kdbg-refuse kdbg: 'info threads' is refused on kgdb: it reads every task's saved registers, and a task that exited but is not reaped has no stack left (kgdb faults and the kernel panics); use lx-ps
end
define thread apply hook-all
  kdbg-refuse kdbg: 'thread apply all' is refused on kgdb: it switches to every task, and a task that exited but is not reaped has no stack left (kgdb faults and the kernel panics); use lx-ps, then thread N
end
define thread hook-apply
  kdbg-refuse kdbg: 'thread apply' is refused on kgdb: it switches to every task, and a task that exited but is not reaped has no stack left (kgdb faults and the kernel panics); use lx-ps, then thread N
end
