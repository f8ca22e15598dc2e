# Sourced by kdbg into its own gdb sessions only: quit returns to kdbg, which cleans up.
define hook-quit
  kdbg-done --from-quit
end
