"""``stablemd stability``: how long does each model stay stable, and how wrong is its h(r)?"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from stablemd.cli.options import (
    EARLY_WARNING_INDICATOR_OPTION,
    FREEZE_ON_WARNING_OPTION,
    SYSTEM_HELP,
    early_warning_option,
    settings_from_options,
)
from stablemd.cli.output import console, print_system, stability_table
from stablemd.core.errors import InputError
from stablemd.core.files import check_output_directory
from stablemd.data.formats import read_positions
from stablemd.diagnose.early_warning.settings import model_early_warning
from stablemd.diagnose.stability.benchmark import StabilitySettings
from stablemd.diagnose.stability.compare import compare_models
from stablemd.diagnose.stability.diffusion import DIFFUSION_WINDOW_PS
from stablemd.models.registry import check_elements, load_potential
from stablemd.systems.resolve import resolve_system


def _labels(models: list[Path]) -> list[str]:
    """Model names for tables and plots: file stems, numbered where two are equal."""
    stems = [m.stem for m in models]
    return [s if stems.count(s) == 1 else f"{s}-{k}" for k, s in enumerate(stems)]


def stability(
    model: list[Path] = typer.Option(..., help="Model file; repeat to compare several models."),
    system: str = typer.Option(None, help=SYSTEM_HELP),
    out: Path = typer.Option(..., help="Directory for summary.json, survival.png, h_r.png."),
    replicas: int = typer.Option(64, help="Replicas per model, integrated in one batch."),
    temperature: float = typer.Option(500.0, help="Temperature in K."),
    time_ps: float = typer.Option(50.0, help="Simulated time per replica in ps."),
    starts: Path = typer.Option(
        None, help="Held-out start structures, .db/.xyz/.extxyz (default: the relaxed structure)."
    ),
    reference: Path = typer.Option(
        None,
        help="Frames (.db/.xyz/.extxyz, positions only) whose h(r) is the reference "
        "(default: the --starts frames).",
    ),
    timestep: float = typer.Option(None, help="Time step in fs (default: the system's)."),
    thermostat: str = typer.Option("nose-hoover", help="nve, langevin, nose-hoover or csvr."),
    tau: float = typer.Option(100.0, help="Nosé–Hoover or CSVR time constant in fs."),
    friction: float = typer.Option(0.01, help="Langevin friction in 1/fs."),
    max_bond_deviation: float = typer.Option(
        0.5, help="Molecules: unstable when a bond deviates more than this (Å)."
    ),
    min_distance: float = typer.Option(
        1.2, help="Periodic systems: unstable when two non-bonded atoms come closer than this (Å)."
    ),
    intramolecular: bool = typer.Option(
        True,
        help="Periodic systems: count non-bonded pairs inside a molecule as contacts too "
        "(StABlE's definition); --no-intramolecular counts pairs of different molecules only.",
    ),
    max_rdf_deviation: float = typer.Option(
        None,
        help="Periodic systems: also unstable when the RDF of an element pair, averaged over "
        "--rdf-window-ps, strays from the reference frames' by ∫|Δg| dr > this (Å; StABlE's "
        "water setting: 3.0). Off by default.",
    ),
    rdf_window_ps: float = typer.Option(1.0, help="Averaging window of --max-rdf-deviation (ps)."),
    forces: str = typer.Option(
        None,
        help="conservative (−∂E/∂r) or direct (the model's direct-force head). (default: what "
        "each model was trained for)",
    ),
    mts: int = typer.Option(
        None,
        help="Multiple time stepping: M inner steps of --timestep with direct forces, the "
        "conservative correction every M; --check-every then counts outer steps of M inner "
        "steps. Needs models trained with direct forces.",
    ),
    check_every: int = typer.Option(
        20, help="Check the criteria every this many steps (outer steps with --mts)."
    ),
    early_warning: bool = early_warning_option("--check-every steps"),
    early_warning_indicator: str = EARLY_WARNING_INDICATOR_OPTION,
    freeze_on_warning: bool = FREEZE_ON_WARNING_OPTION,
    seed: int = typer.Option(0, help="Seed of the start structures, velocities and noise."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Run every model from the same starts; write stable times, survival and h(r) plots."""
    # Every model is loaded before any runs, so a bad file is refused before hours of MD.
    potentials = {
        label: load_potential(path) for label, path in zip(_labels(model), model, strict=True)
    }
    # without --system: the system recorded by the first model that records one
    path, recorded = next(
        ((p, m) for p, m in zip(model, potentials.values(), strict=True) if "system" in m.metadata),
        (model[0], None),
    )
    start_frames = read_positions(starts) if starts is not None else None
    resolved = resolve_system(
        system, start_frames, starts, recorded and recorded.metadata, model_name=str(path)
    )
    target = resolved.system
    settings = settings_from_options(
        StabilitySettings, replicas=replicas, temperature_K=temperature, time_ps=time_ps,
        timestep_fs=target.timestep_fs if timestep is None else timestep,
        thermostat=thermostat, tau_fs=tau, friction_per_fs=friction,
        max_bond_deviation_A=max_bond_deviation, min_intermolecular_A=min_distance,
        nonbonded_intramolecular=intramolecular, max_rdf_deviation=max_rdf_deviation,
        rdf_window_ps=rdf_window_ps, check_every=check_every, seed=seed, forces=forces, mts=mts,
        early_warning=early_warning, early_warning_indicator=early_warning_indicator,
        freeze_on_warning=freeze_on_warning,
    )  # fmt: skip
    if max_rdf_deviation is not None and not target.periodic:
        raise InputError(
            f"--max-rdf-deviation: the RDF criterion is for periodic boxes; {target.name} is a "
            "molecule, judged by --max-bond-deviation"
        )
    if max_rdf_deviation is not None and starts is None and reference is None:
        raise InputError(
            "--max-rdf-deviation needs frames for the reference RDF: give --reference or --starts"
        )
    print_system(resolved, starts)
    start_frames = resolved.frames or [target.atoms]
    reference_frames = None
    if reference is not None:
        reference_frames, order = target.align(read_positions(reference), str(reference))
        if order is not None:
            print_system(replace(resolved, order=order), reference)
    elif starts is not None:
        reference_frames = start_frames  # the starts' h(r) is the reference
    for path, potential in zip(model, potentials.values(), strict=True):
        check_elements(potential, start_frames, str(path), str(starts or resolved.origin))
        settings.force_term(potential, str(path))  # a scheme the model cannot give: refused now
        model_early_warning(potential, settings, str(path))  # and a warning it cannot give
    check_output_directory(out, "--out", inputs=[*model, starts, reference])
    rows = compare_models(
        potentials, target, start_frames, reference_frames, settings, out, progress
    )
    console.print(stability_table({label: row["summary"] for label, row in rows.items()}))
    for label, row in rows.items():
        if "h_r_mae" in row:
            console.print(
                f"{label}: h(r) MAE {row['h_r_mae']:.4f}, {row['steps_per_s']:.1f} steps/s"
            )
        if "diffusivity_cm2_per_s" in row:
            console.print(f"{label}: {_diffusivity_text(row['diffusivity_cm2_per_s'])}")
        if "early_warning_counts" in row:
            console.print(f"{label}: {_early_warning_text(row['early_warning_counts'])}")
        reasons = [r for r in row["failure_reasons"] or [] if r is not None]
        if reasons:
            counts = ", ".join(f"{reasons.count(r)} × {r}" for r in sorted(set(reasons)))
            console.print(f"{label}: replicas stopped by {counts}")
    console.print(f"summary: {out / 'summary.json'}   plots: {out / 'survival.png'}")
    if any("early_warning" in row for row in rows.values()):
        console.print(f"early warning: {out / 'early_warning.png'}")


def _early_warning_text(counts: dict) -> str:
    lead = counts["median_lead_ps"]
    lead_text = "" if lead is None else f", median lead {lead:.3g} ps"
    return (
        f"early warning: {counts['warned_before_failure']} of {counts['failed']} failed "
        f"replicas passed the critical level before failing{lead_text}; "
        f"{counts['survivors_crossed']} of {counts['survivors']} stable replicas passed it; "
        f"{counts['saturated']} saturated ({counts['saturated_survived']} of them stable)"
    )


def _diffusivity_text(values: dict[str, float | None]) -> str:
    parts = [f"D({symbol}) {'n/a' if d is None else f'{d:.3g}'}" for symbol, d in values.items()]
    return (
        ", ".join(parts) + f" cm²/s (MSD over lags of {DIFFUSION_WINDOW_PS / 2:g}–"
        f"{DIFFUSION_WINDOW_PS:g} ps, stable parts; n/a: no replica stable that long)"
    )
