"""HTML reports: ``eval --report`` (``write_report``) and ``probe --report`` (``write_probe_report``)."""

from modalign.evaluation.report.eval_report import write_report
from modalign.evaluation.report.payload import add_confidence_intervals, enrich_payload, space_measures
from modalign.evaluation.report.probe_report import write_probe_report

__all__ = ["add_confidence_intervals", "enrich_payload", "space_measures", "write_probe_report", "write_report"]
