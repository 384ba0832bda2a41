"""What a report is made of: verdicts, figures, tables, and the sections that hold them.

A :class:`Section` is one diagnostic's part of the report: a title, a one-paragraph summary,
its :class:`Verdict` lines (pass / warn / fail against a threshold that is shown), figures
(matplotlib figures rendered once to PNG bytes, embedded inline in the HTML), tables and the
numbers behind them (``data``, written to ``report.json``). Sections are plain data: a
diagnostic builds one with a function and :func:`~stablemd.diagnose.report.write.write_report`
renders any list of them.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from matplotlib.figure import Figure as MatplotlibFigure

Status = Literal["pass", "warn", "fail"]
#: Statuses from best to worst; a report's overall status is its worst verdict's.
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail")
#: Resolution of embedded figures (dots per inch): sharp on a laptop, ~100 kB per plot.
FIGURE_DPI = 110


@dataclass(frozen=True)
class Verdict:
    """One check of a diagnostic: its measured ``value`` (in ``unit``; None when it could not be
    measured, e.g. a model that predicts NaN), the ``threshold`` as people read it (e.g.
    ``"warn > 0.1, fail > 0.3"``), the ``status`` the caller decided, and a ``note``.

    A non-finite value or an unknown status is a bug in the diagnostic and raises ValueError:
    a check that could not be measured says so with ``value=None`` and a note.
    """

    check: str
    value: float | None
    threshold: str
    status: Status
    unit: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict {self.check!r}: status {self.status!r} not in {STATUSES}")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(
                f"verdict {self.check!r}: value {self.value} is not finite; "
                "use value=None and say why in the note"
            )

    @property
    def value_text(self) -> str:
        """The value with its unit for people, "n/a" when it was not measured."""
        if self.value is None:
            return "n/a"
        return f"{self.value:.4g} {self.unit}".strip()

    def line(self) -> str:
        """One line for a terminal: status, check, value and threshold."""
        text = f"{self.status.upper():4}  {self.check}: {self.value_text} ({self.threshold})"
        return f"{text}; {self.note}" if self.note else text

    def to_json(self) -> dict:
        return {
            "check": self.check,
            "value": self.value,
            "unit": self.unit,
            "threshold": self.threshold,
            "status": self.status,
            "note": self.note,
        }


def status_above(value: float | None, warn: float, fail: float) -> Status:
    """The status of a value that is worse the larger it is: pass up to ``warn``, warn up to
    ``fail``, fail above it, and fail when it could not be measured (None or not finite)."""
    if value is None or not math.isfinite(value):
        return "fail"
    if value > fail:
        return "fail"
    return "warn" if value > warn else "pass"


def worst_status(verdicts: Sequence[Verdict]) -> Status | None:
    """The worst status among ``verdicts`` (None for none)."""
    if not verdicts:
        return None
    return max((v.status for v in verdicts), key=STATUSES.index)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's header; ValueError if it is not a PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return struct.unpack(">II", png[16:24])


class Figure:
    """A plot of the report: PNG bytes (embedded inline as base64), a caption and alt text.

    Build it from a matplotlib figure (object interface, no pyplot needed), which is rendered
    once here, at ``FIGURE_DPI``, so a section holds no live figure; or from PNG bytes with
    :meth:`from_png`.
    """

    def __init__(self, figure: MatplotlibFigure, caption: str, alt: str | None = None):
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
        self._set(buffer.getvalue(), caption, alt)

    @classmethod
    def from_png(cls, png: bytes, caption: str, alt: str | None = None) -> Figure:
        """A figure from an already rendered PNG image."""
        figure = cls.__new__(cls)
        figure._set(png, caption, alt)
        return figure

    def _set(self, png: bytes, caption: str, alt: str | None) -> None:
        self.width, self.height = png_size(png)
        self.png = png
        self.caption = caption
        self.alt = alt if alt else caption


@dataclass
class Table:
    """A table of the report: column names and rows of cells (numbers are shown with 4
    significant digits, None as "–"), with a caption."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""

    def __post_init__(self) -> None:
        for k, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table {self.caption!r}: row {k} has {len(row)} cells, "
                    f"{len(self.columns)} columns"
                )

    def to_json(self) -> dict:
        return {"caption": self.caption, "columns": self.columns, "rows": self.rows}


@dataclass
class Section:
    """One diagnostic's part of the report: a title, a short summary (plain text), verdicts,
    figures, tables, and ``data``, the numbers behind them as JSON-able values (written to
    ``report.json``; NaN and infinity are refused there)."""

    title: str
    summary: str = ""
    verdicts: list[Verdict] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    @property
    def status(self) -> Status | None:
        """The worst status of this section's verdicts (None without verdicts)."""
        return worst_status(self.verdicts)

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "summary": self.summary,
            "status": self.status,
            "verdicts": [v.to_json() for v in self.verdicts],
            "figures": [
                {"caption": f.caption, "alt": f.alt, "width_px": f.width, "height_px": f.height}
                for f in self.figures
            ],
            "tables": [t.to_json() for t in self.tables],
            "data": self.data,
        }
