"""Hardware drops: packets a NIC traps and reports through devlink (``kdbg watch --hw``,
and the exporter's ``kdbg_hw_drops_total``). See docs/architecture.md.

* :mod:`~kdbg.hwdrops.devlink`: devlink's netlink interface (devices, traps, actions);
* :mod:`~kdbg.hwdrops.event`: the record's layout and its one decode;
* :mod:`~kdbg.hwdrops.output`: text and JSON lines;
* :mod:`~kdbg.hwdrops.probe`: the program, its probe and the watch.
"""

from kdbg.hwdrops.output import HwJsonSink, HwSink, HwTextSink
from kdbg.hwdrops.probe import HwConfig, HwProbe, NoDevlink, counting_probe, prepare, watch

__all__ = ["HwConfig", "HwJsonSink", "HwProbe", "HwSink", "HwTextSink", "NoDevlink",
           "counting_probe", "prepare", "watch"]
