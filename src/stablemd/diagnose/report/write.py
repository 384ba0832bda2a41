"""Write a report: ``report.html`` (one self-contained page) and ``report.json`` beside it."""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stablemd
from stablemd.core.files import atomic_write, write_json
from stablemd.diagnose.report.html import render_html
from stablemd.diagnose.report.model import Section, worst_status

#: The files :func:`write_report` writes into its directory.
REPORT_FILES = ("report.html", "report.json")
#: Format tag of report.json, for readers to recognise it.
REPORT_FORMAT = "stablemd-report-1"


@dataclass(frozen=True)
class ReportPaths:
    """Where the report went."""

    html: Path
    json: Path


def report_json(sections: Sequence[Section], title: str, meta: Mapping[str, Any]) -> dict:
    """The content of ``report.json``: title, meta, overall status, every verdict (with its
    section) and each section's verdicts, tables and data."""
    return {
        "format": REPORT_FORMAT,
        "title": title,
        "status": worst_status([v for s in sections for v in s.verdicts]),
        "meta": dict(meta),
        "verdicts": [{"section": s.title, **v.to_json()} for s in sections for v in s.verdicts],
        "sections": [s.to_json() for s in sections],
    }


def write_report(
    sections: Sequence[Section],
    out_dir: str | Path,
    title: str = "stablemd diagnosis",
    meta: Mapping[str, Any] | None = None,
) -> ReportPaths:
    """Write ``out_dir/report.html`` and ``out_dir/report.json`` (atomically, replacing earlier
    ones; the caller decides whether it may). ``meta`` (model file, system, settings, ...) is
    shown at the bottom of the page and stored in the JSON; the date (UTC) and the stablemd
    version are added unless given.

    A NaN or infinity anywhere in the sections' data or the meta raises ValueError before
    either file is written: a quiet non-finite number in a report is a bug.
    """
    out_dir = Path(out_dir)
    meta = {
        **(meta or {}),
        "date": (meta or {}).get("date")
        or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "stablemd_version": (meta or {}).get("stablemd_version") or stablemd.__version__,
    }
    content = report_json(sections, title, meta)
    json.dumps(content, allow_nan=False)  # refuse NaN before anything is written
    page = render_html(sections, title, meta)
    paths = ReportPaths(out_dir / "report.html", out_dir / "report.json")
    with atomic_write(paths.html) as tmp:
        tmp.write_text(page, encoding="utf-8")
    write_json(content, paths.json)
    return paths
