"""``kdbg diagnose``: a watch whose drops are grouped by cause, then reported with the
advice for each. See docs/architecture.md and docs/diagnose.md.

* :mod:`~kdbg.diagnose.groups`: the run, and the drops counted per cause;
* :mod:`~kdbg.diagnose.report`: the report, as text or JSON lines.
"""

from kdbg.diagnose.groups import Collector, Diagnosis, Group, run
from kdbg.diagnose.report import diagnosis_json, report_json, report_text

__all__ = ["Collector", "Diagnosis", "Group", "diagnosis_json", "report_json", "report_text",
           "run"]
