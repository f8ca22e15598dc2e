"""``kdbg demo`` (``scenario``) and the throw-away network namespaces it, the kernel
tests and the benchmarks build (``throwaway``): two namespaces and a veth pair, or a
bridge, deleted on exit."""
