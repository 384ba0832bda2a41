"""The diagnosis report: one self-contained ``report.html`` and its ``report.json``.

A report is a list of :class:`Section` objects (title, summary, :class:`Verdict` lines,
:class:`Figure` plots, :class:`Table` tables, data), written by :func:`write_report`.
:func:`~stablemd.diagnose.report.workflow.run_diagnosis` builds the sections of ``stablemd
diagnose``; a new diagnostic adds one function returning its ``Section`` (in ``sections/``)
and one line in :func:`~stablemd.diagnose.report.workflow.build_sections`.
"""

from stablemd.diagnose.report.model import (
    STATUSES,
    Figure,
    Section,
    Status,
    Table,
    Verdict,
    status_above,
    worst_status,
)
from stablemd.diagnose.report.write import REPORT_FILES, ReportPaths, write_report

__all__ = [
    "REPORT_FILES",
    "STATUSES",
    "Figure",
    "ReportPaths",
    "Section",
    "Status",
    "Table",
    "Verdict",
    "status_above",
    "worst_status",
    "write_report",
]
