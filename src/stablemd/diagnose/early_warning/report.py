"""The early warning of one stability run as a record (a JSON-ready dictionary) and as a plot.

Per replica: its CLI against time (thinned to at most ``MAX_POINTS`` times, each replica's last
value always kept), the first time it passed the critical level, the lead time from that
crossing to the replica's failure, and whether its index saturated over the last
``SATURATION_FRACTION`` of the run (:func:`~.index.is_saturated`). A replica frozen by the
early warning itself (``--freeze-on-warning``) has no failure to lead: its lead is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from stablemd.diagnose.early_warning.index import (
    CriticalLevel,
    first_crossing,
    is_saturated,
    lead_times,
)
from stablemd.diagnose.early_warning.monitor import LatentInstabilityCriterion

#: Times of the CLI series kept in a record (every k-th call, and each replica's last).
MAX_POINTS = 500
#: Saturation is judged over this fraction of the run length, at the end of each replica.
SATURATION_FRACTION = 0.2


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def early_warning_record(
    series: dict[str, torch.Tensor],
    critical: CriticalLevel | None,
    failure_ps: Sequence[float | None],
    failure_reasons: Sequence[str | None],
    run_length_ps: float,
    indicator: str,
    grade_threshold: float,
) -> dict:
    """The record of a run's early warning from the monitor's ``series``, each replica's failure
    time (ps; None: never) and the criterion that ended it."""
    times, cli = series["times_ps"], series["cli_ps"]
    n_times, n_replicas = cli.shape
    last = torch.isfinite(cli).sum(dim=0) - 1  # each replica's last recorded call
    step = max(1, math.ceil(n_times / MAX_POINTS))
    kept = sorted({*range(0, n_times, step), n_times - 1, *last.tolist()})
    window = SATURATION_FRACTION * run_length_ps
    saturated = is_saturated(times, cli, window)
    failure = torch.tensor(
        [
            math.nan if t is None or reason == LatentInstabilityCriterion.name else t
            for t, reason in zip(failure_ps, failure_reasons, strict=True)
        ],
        dtype=torch.float64,
    )
    crossing = torch.full((n_replicas,), math.nan, dtype=torch.float64)
    if critical is not None:
        crossing = first_crossing(times, cli, critical)
    lead = lead_times(crossing, failure)
    return {
        "indicator": indicator,
        "grade_threshold": grade_threshold,
        "critical_level_ps": None if critical is None else critical.level_ps,
        "calibration_ps": None if critical is None else critical.calibration_ps,
        "saturation_window_ps": window,
        "times_ps": [float(times[k]) for k in kept],
        "cli_ps": [
            [float(cli[k, r]) for k in kept if k <= int(last[r])] for r in range(n_replicas)
        ],
        "final_cli_ps": [float(cli[int(last[r]), r]) for r in range(n_replicas)],
        "crossing_ps": [_number(float(x)) for x in crossing],
        "lead_ps": [_number(float(x)) for x in lead],
        "saturated": [bool(x) for x in saturated],
    }


def record_counts(record: dict, failure_ps: Sequence[float | None]) -> dict:
    """How the warning did: replicas that failed, of them those warned before failing and their
    median lead (ps), survivors that crossed anyway, saturated replicas and how many of those
    survived."""
    failed = [t is not None for t in failure_ps]
    leads = [x for x in record["lead_ps"] if x is not None]
    crossed = [x is not None for x in record["crossing_ps"]]
    saturated = record["saturated"]
    return {
        "failed": sum(failed),
        "warned_before_failure": sum(x >= 0 for x in leads),
        "median_lead_ps": float(np.median([x for x in leads if x >= 0]))
        if any(x >= 0 for x in leads)
        else None,
        "survivors_crossed": sum(c and not f for c, f in zip(crossed, failed, strict=True)),
        "survivors": len(failed) - sum(failed),
        "saturated": sum(saturated),
        "saturated_survived": sum(s and not f for s, f in zip(saturated, failed, strict=True)),
    }


def plot_cli(ax, record: dict, failure_ps: Sequence[float | None], title: str = "") -> None:
    """CLI against time per replica on ``ax``: failed replicas in red with a cross at their
    failure, survivors in blue, the critical level L·max(1, t/T_cal) dashed."""
    times = np.asarray(record["times_ps"])
    for values, failure in zip(record["cli_ps"], failure_ps, strict=True):
        t = times[: len(values)]
        colour = "tab:red" if failure is not None else "tab:blue"
        ax.plot(t, values, color=colour, lw=0.8, alpha=0.6)
        if failure is not None and values:
            ax.plot([failure], [values[-1]], "x", color="black", ms=5)
    if record["critical_level_ps"] is not None:
        level, calibration = record["critical_level_ps"], record["calibration_ps"]
        ax.plot(times, level * np.maximum(1.0, times / calibration), "--", color="black",
                lw=1.2, label="critical level (○ crossings)")  # fmt: skip
        crossed = np.array([t for t in record["crossing_ps"] if t is not None])
        ax.plot(crossed, level * np.maximum(1.0, crossed / calibration), "o", mfc="none",
                color="black", ms=5)  # fmt: skip
    ax.plot([], [], color="tab:red", label="failed (× at failure)")
    ax.plot([], [], color="tab:blue", label="stable to the end")
    ax.set_xlabel("Simulation time (ps)")
    ax.set_ylabel(f"CLI (ps), {record['indicator']} indicator")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small", loc="upper left")
    if title:
        ax.set_title(title, fontsize="medium")


def cli_figure(panels: dict[str, tuple[dict, Sequence[float | None]]], title: str = "") -> Figure:
    """One panel per model (label → (record, failure times)), side by side."""
    fig = Figure(figsize=(5.6 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, (record, failure)) in zip(axes, panels.items(), strict=True):
        plot_cli(ax, record, failure, f"{label}: {title}" if title else label)
    fig.tight_layout()
    return fig
