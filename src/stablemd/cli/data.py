"""``stablemd data``: generate, import, export and inspect reference data."""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

import typer
from rich.table import Table

from stablemd.cli.options import check_positive, system_params
from stablemd.cli.output import console
from stablemd.core.errors import InputError
from stablemd.core.files import check_output_file
from stablemd.data.database import summarize
from stablemd.data.formats import (
    DATABASE_SUFFIXES,
    DEFAULT_NPZ_ENERGY_UNIT,
    export_extxyz,
    import_file,
)
from stablemd.data.generate import FRICTION_PER_FS, generate_reference_data
from stablemd.md.settings import MAX_TIMESTEP_FS
from stablemd.systems import builtin_systems, get_system

app = typer.Typer(no_args_is_help=True, help="Reference data: generate, import, export, info.")


@app.command()
def generate(
    system: str = typer.Argument(
        ...,
        help=f"Built-in system ({', '.join(builtin_systems())}) or one stored by "
        "stablemd systems add.",
    ),
    out: Path = typer.Option(..., help="Output ASE database (.db); resumes from OUT.partial."),
    oracle: str | None = typer.Option(
        None, help="xtb, openmm-spcfw or module:Class (default: the system's oracle)."
    ),
    temperature: float = typer.Option(300.0, help="Langevin temperature in K."),
    friction: float = typer.Option(
        FRICTION_PER_FS,
        help="Langevin friction in 1/fs; 0 runs NVE (velocity Verlet), the reference for "
        "training on rollouts (stablemd train --dynamic).",
    ),
    steps: int = typer.Option(1000, help="MD steps per trajectory."),
    every: int = typer.Option(10, help="Save a labelled frame every this many steps."),
    trajectories: int = typer.Option(1, help="Independent trajectories (different seeds)."),
    seed: int = typer.Option(0, help="Seed of the velocities and the Langevin noise."),
    timestep: float | None = typer.Option(
        None, help="MD time step in fs (default: the system's; 0.5 fs molecules, 1 fs water)."
    ),
    param: list[str] = typer.Option(
        [], help="System parameter KEY=VALUE, repeatable (e.g. n_molecules=32 for water)."
    ),
    quiet: bool = typer.Option(False, help="No progress bar."),
):
    """Label Langevin MD frames of SYSTEM with an oracle; rerun the same command to resume."""
    check_positive(temperature=temperature, steps=steps, trajectories=trajectories)
    check_positive(timestep=timestep, every=every)
    if friction < 0:
        raise InputError(f"--friction {friction!r}: must not be negative")
    if timestep is not None and timestep > MAX_TIMESTEP_FS:
        raise InputError(f"--timestep {timestep!r}: must be at most {MAX_TIMESTEP_FS:g} fs")
    if every > steps:
        raise InputError(f"--every {every}: must not exceed --steps ({steps})")
    target = get_system(system, **system_params(param))
    # an existing OUT is this command's finished run (data generate itself checks that it is)
    check_output_file(out, "--out", overwrite=True, suffixes=DATABASE_SUFFIXES)
    missing = [d for d in (out.parent, *out.parent.parents) if not d.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        summary = generate_reference_data(
            target, oracle, temperature, steps, every, out, n_trajectories=trajectories,
            seed=seed, timestep_fs=timestep, progress=not quiet, friction_per_fs=friction,
        )  # fmt: skip
    except InputError:  # e.g. an unknown oracle: leave no directory behind
        for directory in missing:
            with suppress(OSError):
                directory.rmdir()
        raise
    console.print(
        f"{out}: {summary['frames']} frames ({summary['new_frames']} new, "
        f"{summary['skipped_frames']} skipped), {summary['frames_per_s']:.2f} frames/s, "
        f"{summary['md_steps_per_s']:.1f} MD steps/s"
    )
    for trajectory, status in summary["failed_trajectories"].items():
        console.print(f"[yellow]trajectory {trajectory} {status}[/]")


@app.command("import")
def import_(
    file: Path = typer.Argument(
        ..., help="Labelled frames: .npz (sGDML/MD17), .xyz/.extxyz, .traj (ASE), .db."
    ),
    out: Path = typer.Option(..., help="Output ASE database (.db), not FILE itself."),
    energy_unit: str | None = typer.Option(
        None,
        help="Energy unit of an npz file without e_unit metadata: kcal/mol, eV, kJ/mol or "
        f"hartree (default {DEFAULT_NPZ_ENERGY_UNIT}); forces in this unit per Å.",
    ),
    timestep: float | None = typer.Option(
        None,
        help="FILE is one MD trajectory (AIMD) whose frames are this many fs apart: keep its "
        "velocities and time for training on rollouts (stablemd train --dynamic).",
    ),
    every: int = typer.Option(
        1, help="With --timestep: MD steps between two frames (a rollout takes as many)."
    ),
    level_of_theory: str | None = typer.Option(
        None,
        help="The method FILE was labelled with (e.g. GFN2-xTB), recorded with frames that "
        "record none, so that stablemd explore can check its oracle against it.",
    ),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
):
    """Import labelled frames into an ASE database (converted to eV, Å, eV/Å)."""
    count = import_file(file, out, energy_unit, overwrite, timestep, every, level_of_theory)
    what = f" (one trajectory, {timestep:g} fs between frames)" if timestep is not None else ""
    console.print(f"{out}: {count} frames imported from {file}{what}")


@app.command()
def export(
    file: Path = typer.Argument(..., help="ASE database of labelled frames."),
    out: Path = typer.Option(
        ..., help="Output extended XYZ file, .xyz or .extxyz (eV, Å, eV/Å), not FILE itself."
    ),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
):
    """Export the frames of a database to extended XYZ."""
    count = export_extxyz(file, out, overwrite)
    console.print(f"{out}: {count} frames exported")


@app.command()
def info(file: Path = typer.Argument(..., help="ASE database of labelled frames.")):
    """Summarize a database: frames, systems, levels of theory, temperatures, elements."""
    summary = summarize(file)
    table = Table(title=str(file), show_header=False)
    for key, value in summary.items():
        text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        table.add_row(key.replace("_", " "), text)
    console.print(table)
