"""The report's stability: a short run of the stability benchmark, its survival curve, the h(r)
of the stable parts, and a verdict on how many replicas stayed stable to the end."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
from matplotlib.figure import Figure as MatplotlibFigure

from stablemd.analysis.structure import distance_histogram_h_r
from stablemd.diagnose.report.model import Figure, Section, Status, Table, Verdict
from stablemd.diagnose.stability.benchmark import (
    H_R_MAX_A,
    ModelStability,
    StabilitySettings,
    h_r_mae,
)
from stablemd.diagnose.stability.report import StabilitySummary, survival_curve


def stability_status(summary: StabilitySummary) -> Status:
    """fail when the median stable time is shorter than the run (about half the replicas or
    more failed), warn when any replica failed, pass when all stayed stable to the end."""
    if summary.median_ps < summary.run_length_ps:
        return "fail"
    return "warn" if summary.fraction_stable < 1.0 else "pass"


def _survival_plot(summary: StabilitySummary, title: str) -> MatplotlibFigure:
    fig = MatplotlibFigure(figsize=(5.6, 3.6))
    ax = fig.add_subplot()
    t, fraction = survival_curve(summary)
    ax.step(t, fraction, where="post", lw=2, color="tab:blue",
            label=f"median {summary.median_text} ps (n = {summary.n_replicas})")  # fmt: skip
    failed = [x for x in summary.stable_times_ps if x is not None]
    if failed:  # each failure as a tick: with few replicas the steps alone hide ties
        ax.plot(failed, np.zeros(len(failed)), "|", color="tab:red", ms=12, label="failures")
    ax.set_xlabel("Simulation time (ps)")
    ax.set_ylabel("Fraction of unstable replicas")
    ax.set_xlim(0, summary.run_length_ps)
    ax.set_ylim(-0.04, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", frameon=False, fontsize="small")
    ax.set_title(title, fontsize="medium")
    return fig


def _h_r_plot(r: np.ndarray, h_r: np.ndarray, reference: np.ndarray | None) -> MatplotlibFigure:
    fig = MatplotlibFigure(figsize=(5.6, 3.4))
    ax = fig.add_subplot()
    if reference is not None:
        ax.plot(r, reference, color="black", lw=2.0, label="reference (--data frames)")
    ax.plot(r, h_r, color="tab:blue", lw=1.4, label="model, stable parts")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("h(r) (1/Å)")
    # molecules: no distance beyond their size; stop the axis 1 Å after the last one
    curves = h_r if reference is None else np.maximum(h_r, reference)
    filled = np.flatnonzero(curves > 1e-3 * curves.max())
    ax.set_xlim(0.0, min(r[-1], r[filled[-1]] + 1.0) if filled.size else r[-1])
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize="small")
    return fig


def h_r_grid() -> np.ndarray:
    """The r bins (Å) of the benchmark's h(r) of the stable parts."""
    r, _ = distance_histogram_h_r(torch.zeros(1, 2, 3, dtype=torch.float64), H_R_MAX_A)
    return r.numpy()


def stability_section(
    result: ModelStability,
    settings: StabilitySettings,
    system_name: str,
    starts_name: str,
    reference_h_r: np.ndarray | None = None,
) -> Section:
    """The section of a :func:`~stablemd.diagnose.stability.benchmark.run_stability` result.

    Verdict (:func:`stability_status`) on the fraction of replicas stable to the end of the run.
    ``reference_h_r`` (on :func:`h_r_grid`, e.g. of the labelled data) is drawn beside the h(r)
    of the stable parts and their difference ∫|Δh| dr reported (no verdict: how large a
    difference matters depends on the temperature of the data).
    """
    s = result.summary
    reasons = [r for r in result.failure_reasons or [] if r is not None]
    counts = {reason: reasons.count(reason) for reason in sorted(set(reasons))}
    by = ", ".join(f"{n} × {reason}" for reason, n in counts.items())
    unstable = s.n_replicas - round(s.fraction_stable * s.n_replicas)
    note = f"{unstable} of {s.n_replicas} unstable, median {s.median_text} ps"
    verdict = Verdict(
        check="replicas stable to the end of the run",
        value=100.0 * s.fraction_stable,
        threshold=f"fail: median stable time < the run ({s.run_length_ps:g} ps); "
        "warn: any replica unstable",
        status=stability_status(s),
        unit="%",
        note=note + (f" ({by})" if by else ""),
    )
    thermostat = settings.thermostat
    title = (
        f"{s.n_replicas} × {system_name}, {settings.temperature_K:g} K, {thermostat}, "
        f"{s.run_length_ps:g} ps"
    )
    figures = [
        Figure(
            _survival_plot(s, title),
            caption="Fraction of replicas that became unstable by each time (a replica is "
            "frozen at its first instability); red ticks: the failures.",
            alt="Survival curve of the stability run",
        )
    ]
    data = {
        "summary": asdict(s),
        "settings": settings.model_dump(),
        "system": system_name,
        "starts": starts_name,
        "failure_reasons": result.failure_reasons,
        "failure_counts": counts,
        "steps_per_s": result.steps_per_s,
        "wall_time_s": result.wall_time_s,
    }
    if result.diffusivity_cm2_per_s is not None:
        data["diffusivity_cm2_per_s"] = result.diffusivity_cm2_per_s
    if result.h_r is not None:
        r = h_r_grid()
        h = np.asarray(result.h_r, dtype=float)
        caption = "h(r), the distribution of all interatomic distances, over the stable parts"
        if reference_h_r is not None:
            mae = h_r_mae(torch.as_tensor(h), torch.as_tensor(reference_h_r), float(r[1] - r[0]))
            data["h_r_mae"] = mae
            caption += f", against the labelled data's (∫|Δh| dr = {mae:.3g})"
        figures.append(Figure(_h_r_plot(r, h, reference_h_r), caption + ".", "h(r) plot"))
    summary = (
        f"{s.n_replicas} replicas of {system_name} from {starts_name}, {settings.temperature_K:g}"
        f" K ({thermostat}, time step {settings.timestep_fs:g} fs), each run for "
        f"{s.run_length_ps:g} ps or until its first instability (molecules: a bond deviating "
        f"more than {settings.max_bond_deviation_A:g} Å from its length in the relaxed "
        f"structure; periodic boxes: non-bonded atoms closer than "
        f"{settings.min_intermolecular_A:g} Å; non-finite numbers always). A short run: "
        "passing it is no proof of stability over nanoseconds, failing it is a clear warning."
    )
    table = Table(
        columns=[
            "replicas",
            "run (ps)",
            "mean (ps)",
            "median (ps)",
            "stable at end",
            "steps/s",
        ],  # fmt: skip
        rows=[
            [
                s.n_replicas,
                s.run_length_ps,
                s.mean_ps,
                s.median_text,
                f"{100 * s.fraction_stable:.0f} %",
                result.steps_per_s,
            ]
        ],  # fmt: skip
        caption="Stable times; replicas that never failed count at the run length, so mean "
        "and median are lower bounds when some survive",
    )
    return Section(
        title="Stability in MD",
        summary=summary,
        verdicts=[verdict],
        figures=figures,
        tables=[table],
        data=data,
    )
