"""``stablemd simulate``: batched MD of a trained model, written as H5MD, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from stablemd.cli.options import (
    EARLY_WARNING_INDICATOR_OPTION,
    FREEZE_ON_WARNING_OPTION,
    SYSTEM_HELP,
    early_warning_option,
    settings_from_options,
)
from stablemd.cli.output import console, print_system
from stablemd.core.files import check_output_directory
from stablemd.data.formats import read_positions
from stablemd.models.registry import check_elements, load_potential
from stablemd.monitors.trajectory import read_observable
from stablemd.simulation import SimulationSettings, check_pressure
from stablemd.simulation import simulate as run_simulation
from stablemd.systems.resolve import resolve_system
from stablemd.systems.water import G_PER_CM3_IN_AMU_PER_A3


def simulate(
    model: Path = typer.Option(..., help="Model file written by stablemd train."),
    system: str = typer.Option(None, help=SYSTEM_HELP),
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
        help="Start structures (.db/.xyz/.extxyz, positions only), drawn without replacement "
        "when there are enough. (default: the system's relaxed structure)",
    ),
    forces: str = typer.Option(
        None,
        help="conservative (−∂E/∂r) or direct (the model's direct-force head). (default: what "
        "the model was trained for)",
    ),
    mts: int = typer.Option(
        None,
        help="Multiple time stepping: M inner steps of --timestep with direct forces, the "
        "conservative correction every M; a step (--every, --checkpoint-every) is then M inner "
        "steps. Needs a model trained with direct forces.",
    ),
    bias_uncertainty: float = typer.Option(
        None,
        help="Uncertainty-biased MD: E − τ_eff·u with this relative strength τ (0.25 in the "
        "paper; adaptive over 100 steps after an unbiased burn-in; 0: unbiased, u recorded). "
        "Needs a model with an uncertainty (stablemd uncertainty fit).",
    ),
    stop_uncertainty: float = typer.Option(
        None, help="Stop a replica once any atom's uncertainty passes this, eV/Å (paper: 1.5)."
    ),
    early_warning: bool = early_warning_option(
        "written frame (--every steps)",
        "; trajectory.h5 records it per frame. Not with --bias-uncertainty or --stop-uncertainty",
    ),
    early_warning_indicator: str = EARLY_WARNING_INDICATOR_OPTION,
    freeze_on_warning: bool = FREEZE_ON_WARNING_OPTION,
    pressure: float = typer.Option(
        None,
        help="Constant pressure in bar (periodic systems; stochastic cell rescaling). "
        "(default: constant volume)",
    ),
    barostat_time: float = typer.Option(1000.0, help="Barostat relaxation time in fs."),
    compressibility: float = typer.Option(
        4.5e-5, help="Isothermal compressibility the barostat assumes, 1/bar (water's)."
    ),
    every: int = typer.Option(100, help="Write a trajectory frame every this many steps."),
    velocities: bool = typer.Option(
        False, help="Write velocities too (stablemd analyze then gives the VACF)."
    ),
    checkpoint_every: int = typer.Option(1000, help="Write the checkpoint every this many steps."),
    seed: int = typer.Option(0, help="Seed of the start structures, velocities and noise."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
):
    """Run MD of many replicas at once with a trained model; rerun to resume."""
    potential = load_potential(model)
    frames = read_positions(starts) if starts is not None else None
    resolved = resolve_system(system, frames, starts, potential.metadata, model_name=str(model))
    print_system(resolved, starts)
    reference = resolved.system
    settings = settings_from_options(
        SimulationSettings, replicas=replicas, temperature_K=temperature, time_ps=time_ps,
        timestep_fs=reference.timestep_fs if timestep is None else timestep,
        thermostat=thermostat, friction_per_fs=friction, tau_fs=tau, every=every,
        velocities=velocities, checkpoint_every=checkpoint_every, seed=seed, forces=forces,
        mts=mts, pressure_bar=pressure, barostat_time_fs=barostat_time,
        compressibility_per_bar=compressibility, bias_uncertainty=bias_uncertainty,
        stop_uncertainty=stop_uncertainty, early_warning=early_warning,
        early_warning_indicator=early_warning_indicator, freeze_on_warning=freeze_on_warning,
    )  # fmt: skip
    structures = resolved.frames or [reference.atoms]
    check_pressure(settings, structures, str(starts or resolved.origin))
    check_elements(potential, structures, str(model), str(starts or resolved.origin))
    settings.force_term(potential, str(model))  # a scheme the model cannot give: refused now
    settings.run_early_warning(potential, str(model))  # a warning it cannot give: refused now
    if settings.biased():
        settings.uncertainty_terms(potential, str(model))  # and a model without u
    check_output_directory(out, "--out", inputs=[model, starts])
    done = run_simulation(potential, structures, settings, out, progress, label=model.name)
    result = done.result
    console.print(
        f"{replicas} replicas of {reference.name} at {temperature:g} K ({thermostat}): "
        f"{result.state.time_fs / 1000:.3f} ps, {result.steps} steps of {settings.step_fs:g} fs "
        f"in {result.wall_time_s:.1f} s this session; trajectory: {done.trajectory}"
    )
    if pressure is not None:
        volumes = np.concatenate(read_observable(done.trajectory, "volume"))
        mass = float(structures[0].get_masses().sum())
        density = mass / volumes.mean() / G_PER_CM3_IN_AMU_PER_A3
        console.print(
            f"at {pressure:g} bar over {len(volumes)} frames of all replicas: volume "
            f"{volumes.mean():.1f} ± {volumes.std():.1f} Å³ (mean ± spread), density "
            f"{density:.4f} g/cm³"
        )
    frozen = [
        f"replica {k} at {t / 1000:.3f} ps ({reason})"
        for k, (t, reason) in enumerate(
            zip(result.unstable_time_fs.tolist(), result.unstable_reason, strict=True)
        )
        if reason is not None
    ]
    if frozen:
        console.print(
            f"[bold yellow]{len(frozen)} replica(s) stopped early; their trajectories end "
            f"there:[/] " + "; ".join(frozen)
        )
    if done.early_warning is not None:
        console.print(_early_warning_text(done.early_warning))
        console.print(f"early warning: {out / 'early_warning.json'}, {out / 'early_warning.png'}")


def _early_warning_text(record: dict) -> str:
    """One line: which replicas passed the critical level and when, the index at the end."""
    indicator = record["indicator"]
    if indicator == "grade":
        indicator = f"grade > {record['grade_threshold']:g}"
    final = record["final_cli_ps"]
    end = (
        f"CLI at the end {min(final):.3g}–{max(final):.3g} ps, "
        f"{sum(record['saturated'])} of {len(final)} saturated"
    )
    if record["critical_level_ps"] is None:
        return (
            f"early warning ({indicator}): no critical level stored with the model (its "
            f"training data held no reference MD); {end}"
        )
    crossed = [(k, t) for k, t in enumerate(record["crossing_ps"]) if t is not None]
    when = "".join(
        [": " if crossed else "", ", ".join(f"replica {k} at {t:.3f} ps" for k, t in crossed)]
    )
    return (
        f"early warning ({indicator}): {len(crossed)} of {len(final)} replicas passed the "
        f"critical level ({record['critical_level_ps']:.3g} ps by "
        f"{record['calibration_ps']:g} ps){when}; {end}"
    )
