# Sourced by kdbg on transports whose steps the guard judges (KGDBoE): each stepping
# command first asks kdbg's guard about where it would trap or break (the current pc,
# and the return address a next, finish or until breaks at). A refusal stops the
# command before gdb runs it.
define hook-step
  kdbg-guard step-check step
end
define hook-next
  kdbg-guard step-check next
end
define hook-stepi
  kdbg-guard step-check stepi
end
define hook-nexti
  kdbg-guard step-check nexti
end
define hook-finish
  kdbg-guard step-check finish
end
define hook-until
  kdbg-guard step-check until
end
define hook-advance
  kdbg-guard step-check advance
end
