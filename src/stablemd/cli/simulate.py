"""``stablemd simulate``: batched MD of a trained model on a built-in system, resumable.

The output directory holds ``run.json`` (the options), ``trajectory.h5`` (H5MD) and
``checkpoint.pt``; rerunning the same command continues from the checkpoint (a longer
``--time-ps`` extends the run).
"""

from __future__ import annotations

from pathlib import Path

import typer

from stablemd.cli.output import console
from stablemd.data.io import read_positions
from stablemd.errors import InputError
from stablemd.io import record_run_options
from stablemd.md.forces import ModelForces
from stablemd.md.integrators import make_integrator
from stablemd.md.runner import run
from stablemd.md.starts import state_from_atoms
from stablemd.md.trajectory import TrajectoryWriter
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.models.registry import load_potential
from stablemd.systems import get_system

#: Options that may change between a run and its continuation.
EXTENSIBLE = frozenset({"time_ps"})


def simulate(
    model: Path = typer.Option(..., help="Model file written by stablemd train."),
    system: str = typer.Option(..., help="Built-in system (see stablemd systems)."),
    out: Path = typer.Option(..., help="Output directory (trajectory.h5, checkpoint.pt)."),
    replicas: int = typer.Option(8, help="Replicas integrated together in one batch."),
    temperature: float = typer.Option(300.0, help="Temperature in K (velocities, thermostat)."),
    time_ps: float = typer.Option(10.0, help="Simulated time per replica in ps."),
    timestep: float = typer.Option(None, help="Time step in fs. (default: the system's)"),
    thermostat: str = typer.Option("langevin", help="nve, langevin, nose-hoover or csvr."),
    friction: float = typer.Option(0.01, help="Langevin friction in 1/fs."),
    tau: float = typer.Option(100.0, help="Nosé–Hoover or CSVR time constant in fs."),
    starts: Path = typer.Option(
        None,
        help="Start structures (.db/.xyz/.extxyz, positions only); replica k starts from frame "
        "k mod n. (default: the system's relaxed structure)",
    ),
    every: int = typer.Option(100, help="Write a trajectory frame every this many steps."),
    checkpoint_every: int = typer.Option(1000, help="Write the checkpoint every this many steps."),
    seed: int = typer.Option(0, help="Seed of the initial velocities and thermostat noise."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Run MD of many replicas at once with a trained model; rerun to resume."""
    if replicas < 1:
        raise InputError(f"--replicas must be at least 1, got {replicas}")
    if time_ps <= 0 or every < 1 or checkpoint_every < 1:
        raise InputError("--time-ps must be positive, --every and --checkpoint-every ≥ 1")
    reference = get_system(system)
    timestep = reference.timestep_fs if timestep is None else timestep
    if timestep <= 0:
        raise InputError(f"--timestep must be positive, got {timestep} fs")
    integrator = make_integrator(thermostat, timestep, temperature, friction, tau, seed + 1)
    potential = load_potential(model)
    structures = [reference.atoms]
    if starts is not None:
        structures = read_positions(starts)
        reference.check_frames(structures, str(starts))
    options = {
        "model": str(model.resolve()), "system": system, "replicas": replicas,
        "temperature_K": temperature, "time_ps": time_ps, "timestep_fs": timestep,
        "thermostat": thermostat, "friction_per_fs": friction, "tau_fs": tau,
        "starts": None if starts is None else str(starts.resolve()), "every": every, "seed": seed,
    }  # fmt: skip
    record_run_options(options, out / "run.json", may_change=EXTENSIBLE)

    state = state_from_atoms([structures[k % len(structures)] for k in range(replicas)])
    state = maxwell_boltzmann(state, temperature, seed, exact=True)
    n_steps = round(time_ps * 1000 / timestep)
    with TrajectoryWriter(out / "trajectory.h5", integrator) as writer:
        result = run(
            state, integrator, ModelForces(potential), n_steps, observers=[writer],
            every=every, checkpoint=out / "checkpoint.pt", checkpoint_every=checkpoint_every,
            progress=progress,
        )  # fmt: skip
    simulated_ps = result.state.time_fs / 1000
    console.print(
        f"{replicas} replicas of {system} at {temperature:g} K ({thermostat}): "
        f"{simulated_ps:.3f} ps each, {result.steps} steps in {result.wall_time_s:.1f} s "
        f"this session; trajectory: {out / 'trajectory.h5'}"
    )
