"""One object per target owning every fact read from it (see :mod:`kdbg.targetfacts.facts`)."""

from kdbg.targetfacts.facts import FactSource, GuestFacts, LabFacts

__all__ = ["FactSource", "GuestFacts", "LabFacts"]
