"""One object per target owning every fact read from it (see :mod:`kdbg.target.facts`)."""

from kdbg.target.facts import FactSource, GuestFacts, LabFacts

__all__ = ["FactSource", "GuestFacts", "LabFacts"]
