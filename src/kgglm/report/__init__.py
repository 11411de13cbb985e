"""Run reports: ``report.html`` and PNG figures from a run directory's saved files."""

from kgglm.report.html import REPORT_FILE, write_comparison, write_report

__all__ = ["REPORT_FILE", "write_comparison", "write_report"]
