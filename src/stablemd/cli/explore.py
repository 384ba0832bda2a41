"""``stablemd explore``: batch active learning with uncertainty-biased MD and an oracle."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import typer

from stablemd.cli.options import SYSTEM_HELP, settings_from_options, system_params
from stablemd.cli.output import console, print_system
from stablemd.core.errors import InputError
from stablemd.core.files import check_output_directory
from stablemd.data.database import read_frames
from stablemd.explore.active_learning.coverage import ramachandran_metrics
from stablemd.explore.active_learning.labelling import DaskLabeller, dask_client, label_here
from stablemd.explore.active_learning.loop import ExploreRun, ExploreSettings
from stablemd.models.registry import load_potential
from stablemd.systems.resolve import resolve_system


def explore(
    model: Path = typer.Option(
        ..., help="Model file with an uncertainty (stablemd uncertainty fit)."
    ),
    data: Path = typer.Option(
        ...,
        help="The model's training data: its training and validation frames start the run's "
        "training set, its other frames are the learning curve's held-out test set.",
    ),
    out: Path = typer.Option(..., help="Run directory; rerun the same command to resume."),
    system: str = typer.Option(None, help=SYSTEM_HELP + " Sets the default time step."),
    oracle: str = typer.Option(
        "xtb", help="Oracle: xtb, openmm-spcfw, or any ASE calculator as module:Class."
    ),
    oracle_option: list[str] = typer.Option(
        [], help="KEY=VALUE keyword of the oracle's calculator (repeat), e.g. xc=PBE."
    ),
    budget: int = typer.Option(32, help="Oracle calls in all, failed ones included."),
    per_step: int = typer.Option(8, help="Structures selected and labelled per step."),
    replicas: int = typer.Option(8, help="Biased MD replicas of each step's pool."),
    pool_steps: int = typer.Option(2000, help="MD steps of each pool at most."),
    every: int = typer.Option(50, help="Keep a pool frame every this many steps."),
    temperature: float = typer.Option(300.0, help="Pool temperature in K (Langevin)."),
    timestep: float = typer.Option(None, help="Time step in fs. (default: the system's)"),
    tau: float = typer.Option(0.25, help="Relative bias strength τ of E − τ_eff·u."),
    stop_uncertainty: float = typer.Option(
        1.5, help="Stop a replica once any atom's u passes this, eV/Å."
    ),
    selection: str = typer.Option(
        "max-det", help="max-det, max-dist, random or max-grade (latent extrapolation grade)."
    ),
    epochs: int = typer.Option(100, help="Training epochs per step (from the last weights)."),
    test: list[Path] = typer.Option([], help="Further labelled test databases (repeat)."),
    workers: int = typer.Option(
        2, help="Dask LocalCluster worker processes for the labels; 0: label in this process."
    ),
    scheduler: str = typer.Option(
        None, help="Label on this Dask cluster (address or scheduler file) instead."
    ),
    seed: int = typer.Option(0, help="Seed of the pool starts, noise and random selection."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    overwrite: bool = typer.Option(
        False, help="Start anew: remove an earlier explore run in --out first."
    ),
):
    """Batch active learning: biased MD finds uncertain structures, a batch is selected,
    labelled by the oracle (on Dask), added to the data, and the model retrained, until the
    label budget is spent. Rerun to resume."""
    potential = load_potential(model)
    first = read_frames(data, [0])  # a system derived from the data when the model records none
    resolved = resolve_system(system, first, data, potential.metadata, model_name=str(model))
    settings = settings_from_options(
        ExploreSettings, oracle=oracle, budget=budget, per_step=per_step, replicas=replicas,
        pool_steps=pool_steps, every=every, temperature_K=temperature,
        timestep_fs=resolved.system.timestep_fs if timestep is None else timestep, tau=tau,
        stop_uncertainty=stop_uncertainty, selection=selection, epochs=epochs, seed=seed,
    )  # fmt: skip
    if workers < 0:
        raise InputError(f"--workers {workers}: must be 0 (in this process) or more")
    check_output_directory(out, "--out", inputs=[model, data, *test])
    with ExitStack() as stack:
        client = dask_client(workers, scheduler) if scheduler is not None else None
        if client is not None:
            stack.callback(client.close)
        print_system(resolved)
        oracle_options = system_params(oracle_option, "--oracle-option")
        run = ExploreRun(
            model, data, out, settings, oracle_options, tuple(test), progress=progress,
            on_stage=_report, overwrite=overwrite,
            step_metrics=ramachandran_metrics(resolved.system),
        )  # fmt: skip
        if client is None and workers > 0:
            client = dask_client(workers, None)
            stack.callback(client.cluster.close)
            stack.callback(client.close)
        where = "in this process" if client is None else f"on Dask ({_describe(client)})"
        console.print(f"labels from {run.spec.describe()} {where}")
        started = time.perf_counter()
        result = run.run(label_here if client is None else DaskLabeller(client))
    console.print((out / "summary.md").read_text().strip(), highlight=False)
    console.print(
        f"{time.perf_counter() - started:.0f} s this session; model: {result.model}; "
        f"learning curve: {out / 'learning_curve.png'}"
    )


def _describe(client) -> str:
    workers = client.scheduler_info().get("workers", {})
    return f"{len(workers)} workers at {client.scheduler.address}"


def _report(step: int, stage: str, info: dict) -> None:
    details = ", ".join(f"{k} {v}" for k, v in info.items())
    console.print(f"step {step}: {stage}" + (f" ({details})" if details else ""), highlight=False)
