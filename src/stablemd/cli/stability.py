"""``stablemd stability``: how long does each model stay stable, and how wrong is its h(r)?"""

from __future__ import annotations

from pathlib import Path

import typer

from stablemd.data.io import read_positions
from stablemd.errors import InputError
from stablemd.stability.benchmark import StabilitySettings
from stablemd.stability.compare import compare_models
from stablemd.systems import get_system


def _labels(models: list[Path]) -> list[str]:
    """Model names for tables and plots: file stems, numbered where two are equal."""
    stems = [m.stem for m in models]
    return [s if stems.count(s) == 1 else f"{s}-{k}" for k, s in enumerate(stems)]


def stability(
    model: list[Path] = typer.Option(..., help="Model file; repeat to compare several models."),
    system: str = typer.Option(..., help="Built-in system (see stablemd systems)."),
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
        1.2, help="Periodic systems: unstable when two molecules come closer than this (Å)."
    ),
    check_every: int = typer.Option(20, help="Check the criteria every this many steps."),
    seed: int = typer.Option(0, help="Seed of the start structures, velocities and noise."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Run every model from the same starts; write stable times, survival and h(r) plots."""
    if replicas < 1 or time_ps <= 0 or check_every < 1:
        raise InputError("--replicas and --check-every must be ≥ 1 and --time-ps positive")
    target = get_system(system)
    settings = StabilitySettings(
        replicas=replicas, temperature_K=temperature, time_ps=time_ps,
        timestep_fs=target.timestep_fs if timestep is None else timestep,
        thermostat=thermostat, tau_fs=tau, friction_per_fs=friction,
        max_bond_deviation_A=max_bond_deviation, min_intermolecular_A=min_distance,
        check_every=check_every, seed=seed,
    )  # fmt: skip
    start_frames = read_positions(starts) if starts is not None else [target.atoms]
    reference_frames = read_positions(reference) if reference is not None else None
    for path, frames in ((starts, start_frames), (reference, reference_frames)):
        if path is not None:
            target.check_frames(frames, str(path))
    if reference is None and starts is not None:
        reference_frames = start_frames  # the starts' h(r) is the reference
    labelled = dict(zip(_labels(model), model, strict=True))
    compare_models(labelled, target, start_frames, reference_frames, settings, out, progress)
