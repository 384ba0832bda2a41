"""``stablemd diagnose``: one report to read before trusting a potential in MD."""

from __future__ import annotations

from pathlib import Path

import typer

from stablemd.cli.options import SYSTEM_HELP, settings_from_options
from stablemd.cli.output import console, print_system
from stablemd.data.formats import read_positions
from stablemd.diagnose.report.workflow import DiagnoseSettings, run_diagnosis
from stablemd.models.registry import read_model_file
from stablemd.systems.resolve import resolve_system

STATUS_STYLE = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red"}


def diagnose(
    model: Path = typer.Option(..., help="Model file written by stablemd train."),
    system: str = typer.Option(None, help=SYSTEM_HELP),
    out: Path = typer.Option(
        ..., help="Directory for report.html, report.json and the stability run (stability/)."
    ),
    data: Path = typer.Option(
        None, help="ASE database of labelled frames: held-out errors per element (optional)."
    ),
    starts: Path = typer.Option(
        None,
        help="Start structures of the stability run, .db/.xyz/.extxyz (default: the relaxed "
        "structure).",
    ),
    replicas: int = typer.Option(16, help="Replicas of the stability run."),
    time_ps: float = typer.Option(2.0, help="Simulated time per replica in ps."),
    temperature: float = typer.Option(500.0, help="Temperature of the stability run in K."),
    timestep: float = typer.Option(None, help="Time step in fs (default: the system's)."),
    thermostat: str = typer.Option("nose-hoover", help="nve, langevin, nose-hoover or csvr."),
    conservation_replicas: int = typer.Option(
        8, help="Replicas of each NVE and CSVR run of the conservation checks."
    ),
    conservation_time_ps: float = typer.Option(
        2.0, help="Simulated time per replica of each conservation run in ps."
    ),
    mts: int = typer.Option(
        None, help="Run the stability run with multiple time stepping (M inner steps)."
    ),
    force_mae_warn: float = typer.Option(
        0.1, help="Warn when the held-out force MAE of any element exceeds this (eV/Å)."
    ),
    force_mae_fail: float = typer.Option(
        0.3, help="Fail when the held-out force MAE of any element exceeds this (eV/Å)."
    ),
    include_training: bool = typer.Option(
        False, help="Also count frames the model was trained or validated on in the errors."
    ),
    seed: int = typer.Option(0, help="Seed of the start structures, velocities and noise."),
    overwrite: bool = typer.Option(
        False,
        help="Replace an earlier report in --out (its stability run is reused when its "
        "settings are the same, run again otherwise).",
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Held-out errors, conservation of the forces (λ, loop work, NVE drift, element
    temperatures, geometry optimisation) and a short stability run, each with a pass / warn /
    fail verdict, in one self-contained report.html (and report.json); rerun to resume."""
    metadata = read_model_file(model)["metadata"]
    # frames to match or derive the system from: the starts, else (nothing named or recorded)
    # the labelled data
    named_or_recorded = system is not None or "system" in metadata
    source = starts if starts is not None or named_or_recorded else data
    frames = read_positions(source) if source is not None else None
    resolved = resolve_system(system, frames, source, metadata, model_name=str(model))
    target = resolved.system
    settings = settings_from_options(
        DiagnoseSettings, replicas=replicas, time_ps=time_ps, temperature_K=temperature,
        timestep_fs=target.timestep_fs if timestep is None else timestep,
        thermostat=thermostat, force_mae_warn=force_mae_warn, force_mae_fail=force_mae_fail,
        include_training=include_training, seed=seed, mts=mts,
        conservation_replicas=conservation_replicas, conservation_time_ps=conservation_time_ps,
    )  # fmt: skip
    print_system(resolved, source)
    result = run_diagnosis(model, target, out, settings, data, starts, overwrite, progress)
    for section in result.sections:
        for verdict in section.verdicts:
            style = STATUS_STYLE[verdict.status]
            console.print(
                f"[{style}]{verdict.status.upper():4}[/]  {section.title}: {verdict.check}: "
                f"{verdict.value_text} ({verdict.threshold})"
                + (f"; {verdict.note}" if verdict.note else ""),
                highlight=False,
                soft_wrap=True,
            )
    console.print(f"report: {result.paths.html}", soft_wrap=True, highlight=False)
    console.print(f"numbers: {result.paths.json}", soft_wrap=True, highlight=False)
