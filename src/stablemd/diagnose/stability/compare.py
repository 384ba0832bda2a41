"""Several models side by side: one stability run each, then one summary and its plots."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ase import Atoms

from stablemd.analysis.structure import reference_observables
from stablemd.core.files import read_json_record
from stablemd.diagnose.early_warning.report import cli_figure, record_counts
from stablemd.diagnose.early_warning.settings import model_early_warning
from stablemd.diagnose.stability.benchmark import (
    H_R_MAX_A,
    StabilitySettings,
    check_rdf_criterion,
    check_stability_run,
    h_r_mae,
    run_stability,
    stability_run_options,
)
from stablemd.diagnose.stability.report import (
    DPI,
    plot_h_r_comparison,
    plot_survival,
    write_summary,
)
from stablemd.models.potential import Potential
from stablemd.models.registry import model_fingerprint
from stablemd.systems.system import System


def compare_models(
    models: dict[str, Potential],
    system: System,
    starts: list[Atoms],
    reference: list[Atoms] | None,
    settings: StabilitySettings,
    out: Path,
    progress: bool = True,
) -> dict[str, dict]:
    """Run each model (label → potential) into ``out/label``; write ``out/summary.json``,
    ``survival.png`` and (with ``reference`` frames) ``h_r.png``. With
    ``settings.max_rdf_deviation`` the element-resolved RDFs of the ``reference`` frames are the
    reference of the RDF criterion (periodic systems only).

    Returns per label the summary row written to ``summary.json``: the stability summary, the
    speed, the criterion that ended each replica, diffusivities (periodic systems), the h(r)
    MAE against the reference and, for a model run with the early warning, its record
    (:func:`~stablemd.diagnose.early_warning.report.early_warning_record`) and counts, plotted
    in ``early_warning.png``.
    """
    if (out / "summary.json").exists():  # a rerun rewrites it; a foreign file is refused
        read_json_record(out / "summary.json", "stability summary", ("settings",))
    reference_h_r = None if reference is None else reference_observables(reference, r_max=H_R_MAX_A)
    reference_rdf = None if reference_h_r is None else reference_h_r.rdf
    check_rdf_criterion(system, settings, reference_rdf)  # before any model runs
    for label, potential in models.items():  # every run may start, before the first does
        options = stability_run_options(
            model_fingerprint(potential), system, starts, settings, reference_rdf,
            model_early_warning(potential, settings, label),
        )  # fmt: skip
        check_stability_run(options, out / label)
    summaries, rows, curves, warnings = {}, {}, {}, {}
    for label, potential in models.items():
        result = run_stability(
            potential, system, starts, settings, out / label, progress=progress,
            label=f"{label}: {settings.replicas} × {system.name} at {settings.temperature_K:g} K",
            reference_rdf=reference_rdf if settings.max_rdf_deviation is not None else None,
        )  # fmt: skip
        summaries[label] = result.summary
        rows[label] = {
            "summary": result.summary,
            "steps_per_s": result.steps_per_s,
            "atom_steps_per_s": result.steps_per_s * settings.replicas * len(system.atoms),
            "failure_reasons": result.failure_reasons,
        }
        if result.diffusivity_cm2_per_s is not None:
            rows[label]["diffusivity_cm2_per_s"] = result.diffusivity_cm2_per_s
        if result.early_warning is not None:
            failures = result.summary.stable_times_ps
            rows[label]["early_warning"] = result.early_warning
            rows[label]["early_warning_counts"] = record_counts(result.early_warning, failures)
            warnings[label] = (result.early_warning, failures)
        if result.h_r is not None and reference_h_r is not None:
            curves[label] = result.h_r
            dr = float(reference_h_r.r[1] - reference_h_r.r[0])
            rows[label]["h_r_mae"] = h_r_mae(
                reference_h_r.h_r.new_tensor(result.h_r), reference_h_r.h_r, dr
            )

    flat = {label: {**asdict(row["summary"]), **row} for label, row in rows.items()}
    for row in flat.values():
        del row["summary"]
    write_summary(out / "summary.json", {"settings": settings.model_dump(), **flat})
    title = f"{system.name}, {settings.temperature_K:g} K"
    plot_survival(summaries, out / "survival.png", title=title)
    if warnings:
        figure = cli_figure(warnings, title)
        figure.savefig(out / "early_warning.png", dpi=DPI)
    if curves:
        plot_h_r_comparison(
            reference_h_r.r, reference_h_r.h_r, curves, out / "h_r.png",
            title=f"{title}: h(r) over the stable part",
        )  # fmt: skip
    return rows
