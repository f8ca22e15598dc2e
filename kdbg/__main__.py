"""``python -m kdbg``."""

from kdbg.cli import main

main(prog_name="kdbg")
