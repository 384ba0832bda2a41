"""Stability reports: summaries of per-replica stable times, survival curves, plots, tables, JSON.

A replica's stable time (ps) is when a criterion first fired; ``None``, NaN (the MD runner's
mark) or ``inf`` means it never fired within the run. Such censored replicas are counted at the
run length in the mean and the median, which are therefore lower bounds whenever some replicas
survive (StABlE's convention).
Plots use matplotlib's object interface with the Agg canvas (no pyplot, no display).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from stablemd.core.errors import InputError
from stablemd.core.files import write_json

DPI = 150
#: Colours of the models in plots (the reference is black).
MODEL_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


@dataclass(frozen=True)
class StabilitySummary:
    """Stability statistics of one model; times in ps (see the module note on censoring)."""

    n_replicas: int
    run_length_ps: float
    mean_ps: float
    median_ps: float
    fraction_stable: float
    stable_times_ps: tuple[float | None, ...]

    @property
    def median_text(self) -> str:
        """The median for people: "≥ x" when half or more never failed (a lower bound)."""
        bound = "≥ " if self.fraction_stable >= 0.5 else ""
        return f"{bound}{self.median_ps:.3g}"


def summarize(stable_times_ps: Sequence[float | None], run_length_ps: float) -> StabilitySummary:
    """Mean, median and fraction still stable at the end, from per-replica stable times (ps)."""
    if not run_length_ps > 0:
        raise InputError(f"run_length_ps must be positive, got {run_length_ps}")
    if len(stable_times_ps) == 0:
        raise InputError("stable_times_ps: no replicas given")
    times: list[float | None] = []
    for k, t in enumerate(stable_times_ps):
        t = None if t is None else float(t)
        if t is None or math.isnan(t) or t == math.inf:
            times.append(None)
        elif not 0 <= t <= run_length_ps:
            raise InputError(f"stable_times_ps[{k}] = {t} outside 0 … {run_length_ps} ps")
        else:
            times.append(float(t))
    censored = np.array([run_length_ps if t is None else t for t in times])
    return StabilitySummary(
        n_replicas=len(times),
        run_length_ps=float(run_length_ps),
        mean_ps=float(censored.mean()),
        median_ps=float(np.median(censored)),
        fraction_stable=sum(t is None for t in times) / len(times),
        stable_times_ps=tuple(times),
    )


def survival_curve(summary: StabilitySummary) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of replicas unstable by time t: (t [K] ps, fraction [K]) as a post-step curve
    from 0 to the run length, non-decreasing."""
    failures = np.sort([t for t in summary.stable_times_ps if t is not None])
    grid = np.unique(np.concatenate([[0.0], failures, [summary.run_length_ps]]))
    fraction = np.searchsorted(failures, grid, side="right") / summary.n_replicas
    return grid, fraction


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def plot_survival(
    per_model: Mapping[str, StabilitySummary], path: str | Path, title: str | None = None
) -> Path:
    """Fraction of unstable replicas against simulation time, one line per model (PNG)."""
    fig = Figure(figsize=(5.5, 4.0 + 0.25 * len(per_model)))
    ax = fig.add_subplot()
    for k, (name, summary) in enumerate(per_model.items()):
        t, fraction = survival_curve(summary)
        label = f"{name}: median {summary.median_text} ps (n = {summary.n_replicas})"
        colour = MODEL_COLOURS[k % len(MODEL_COLOURS)]
        ax.step(t, fraction, where="post", lw=2, color=colour, label=label)
    ax.set_xlabel("Simulation time (ps)")
    ax.set_ylabel("Fraction of unstable replicas")
    ax.set_xlim(left=0)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    # below the axes: survival curves fill every corner of them sooner or later
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_h_r_comparison(
    r,
    reference,
    per_model: Mapping[str, object],
    path: str | Path,
    xlabel: str = "r (Å)",
    ylabel: str = "h(r) (1/Å)",
    title: str | None = None,
) -> Path:
    """A distribution (h(r) by default, or an RDF) of each model against the reference (black),
    with the differences model − reference in a lower panel (PNG)."""
    r = np.asarray(r, dtype=float)
    reference = np.asarray(reference, dtype=float)
    fig = Figure(figsize=(6.0, 5.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot(r, reference, color="black", lw=2.2, label="reference")
    bottom.axhline(0.0, color="black", lw=1.0)
    for k, (name, values) in enumerate(per_model.items()):
        values = np.asarray(values, dtype=float)
        if values.shape != reference.shape:
            raise InputError(f"{name}: {values.shape} values but reference has {reference.shape}")
        colour = MODEL_COLOURS[k % len(MODEL_COLOURS)]
        top.plot(r, values, color=colour, lw=1.4, label=name)
        bottom.plot(r, values - reference, color=colour, lw=1.2)
    top.set_ylabel(ylabel)
    top.legend(frameon=False)
    top.grid(alpha=0.3)
    bottom.set_xlabel(xlabel)
    bottom.set_ylabel("model − ref.")
    bottom.grid(alpha=0.3)
    bottom.set_xlim(r[0], r[-1])
    if title:
        top.set_title(title)
    return _save(fig, path)


def write_summary(path: str | Path, per_model: Mapping[str, StabilitySummary | Mapping]) -> Path:
    """Write {model: summary fields (or any JSON-able mapping)} as indented JSON, atomically."""
    data = {
        name: asdict(value) if isinstance(value, StabilitySummary) else dict(value)
        for name, value in per_model.items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(data, path)
    return path
