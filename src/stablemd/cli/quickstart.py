"""``stablemd quickstart``: the main job on a small default (:mod:`stablemd.quickstart`)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from stablemd.cli.options import settings_from_options
from stablemd.cli.output import console, metrics_table, stability_table
from stablemd.core.files import check_output_directory
from stablemd.quickstart import (
    STAGES,
    QuickstartResult,
    QuickstartSettings,
    expected_stage_seconds,
    run_quickstart,
)

_DEFAULTS = QuickstartSettings()


def quickstart(
    out: Path = typer.Option(Path("quickstart-run"), help="Directory for data, models and plots."),
    temperature: float = typer.Option(
        _DEFAULTS.temperature_K, help="Reference MD and test temperature in K."
    ),
    steps: int = typer.Option(_DEFAULTS.steps, help="MD steps of 0.5 fs per reference trajectory."),
    trajectories: int = typer.Option(_DEFAULTS.trajectories, help="Reference trajectories."),
    n_train: int = typer.Option(_DEFAULTS.n_train, help="Training frames (few on purpose)."),
    split_by: str = typer.Option(
        _DEFAULTS.split_by,
        help="trajectory (train on the first frames of one trajectory; the h(r) reference of "
        "StABlE and of the stability runs: all reference frames) or random (frames drawn at "
        "random; h(r) reference: the training frames).",
    ),
    train_epochs: int = typer.Option(_DEFAULTS.train_epochs, help="Epochs of the baseline."),
    replicas: int = typer.Option(_DEFAULTS.replicas, help="Replicas of each stability run."),
    stability_ps: float = typer.Option(
        _DEFAULTS.stability_ps, help="Simulated time of each stability run in ps."
    ),
    stable_epochs: int = typer.Option(_DEFAULTS.stable_epochs, help="StABlE epochs."),
    qm_weight: float = typer.Option(
        _DEFAULTS.qm_weight, help="λ: weight of the energy-and-force loss in StABlE."
    ),
    stable_learning_rate: float = typer.Option(
        _DEFAULTS.stable_learning_rate, help="Adam's learning rate in StABlE."
    ),
    stable_lr_warmup: int = typer.Option(
        _DEFAULTS.stable_lr_warmup_epochs,
        help="StABlE epochs over which each learning phase's rate rises to its value.",
    ),
    seed: int = typer.Option(_DEFAULTS.seed, help="Seed of the MD, the split and the model."),
    progress: bool = typer.Option(True, help="Show progress bars."),
):
    """Ethanol end to end: xTB data, a baseline model, its stability, StABlE, stability again."""
    settings = settings_from_options(
        QuickstartSettings, temperature_K=temperature, steps=steps, trajectories=trajectories,
        n_train=n_train, split_by=split_by, train_epochs=train_epochs, replicas=replicas,
        stability_ps=stability_ps, stable_epochs=stable_epochs, qm_weight=qm_weight,
        stable_learning_rate=stable_learning_rate, stable_lr_warmup_epochs=stable_lr_warmup,
        seed=seed,
    )  # fmt: skip
    check_output_directory(out, "--out")
    started = time.perf_counter()

    expected = expected_stage_seconds(settings)

    def announce(k: int, title: str) -> None:
        elapsed = time.perf_counter() - started
        done = sum(expected[: k - 1])
        speed = elapsed / done if done > 0 and elapsed > 30 else 1.0  # this machine's pace
        left = speed * sum(expected[k - 1 :]) / 60
        console.rule(
            f"{k}/{len(STAGES)} {title}  [dim]({elapsed / 60:.1f} min, ~{left:.0f} min left)[/]"
        )

    result = run_quickstart(out, settings, announce, progress)
    for label, title in (("baseline", "baseline"), ("stable", "StABlE model")):
        console.print(
            metrics_table(result.errors[label], f"{title} on {result.n_held_out} held-out frames")
        )
    console.print(stability_table({k: row["summary"] for k, row in result.stability.items()}))
    console.print(story(result, settings, (time.perf_counter() - started) / 60))


def story(result: QuickstartResult, settings: QuickstartSettings, minutes: float) -> str:
    """What the run showed, in a few plain sentences."""
    base, fine = (result.stability[k]["summary"] for k in ("baseline", "stable"))
    force = {k: 1000 * result.errors[k]["forces_eV_per_A"]["mae"] for k in result.errors}
    change = 100 * (force["stable"] / force["baseline"] - 1)

    def kept(summary) -> str:
        n = round(summary.fraction_stable * summary.n_replicas)
        return f"{n} of {summary.n_replicas} replicas (median {summary.median_text} ps)"

    source = f"the {result.n_train} training frames"
    if settings.h_r_from_reference_md:
        source = f"the reference MD's {result.n_reference} frames (positions only)"
    plots = [result.stability_dir / "survival.png", result.stability_dir / "h_r.png"]
    plots.append(result.stable_run_dir / "stable_training.png")
    return (
        f"\nIn {settings.stability_ps:g} ps of MD at {settings.temperature_K:g} K from the same "
        f"{result.n_held_out} held-out starts, the baseline (PaiNN trained on {result.n_train} "
        f"GFN2-xTB frames) kept {kept(base)} stable; after StABlE the model kept {kept(fine)}.\n"
        f"Force error on the held-out frames: {force['baseline']:.1f} → {force['stable']:.1f} "
        f"meV/Å ({change:+.0f} %).\n"
        f"StABlE made no new reference calculation: it learned from the h(r) of {source}, "
        f"with the energies and forces of the {result.n_train} training frames as the anchor.\n"
        f"Plots: {', '.join(str(p) for p in plots)}.\n"
        f"Diagnosis reports (open in a browser): {result.reports['baseline']}, "
        f"{result.reports['stable']}.  Done in {minutes:.1f} min."
    )
