"""``stablemd quickstart``: the main job on a small built-in default.

Reference data for ethanol with GFN2-xTB → the built-in PaiNN model trained on part of it → its
errors on held-out frames → its stability in MD → StABlE fine-tuning without new labels → the
stability and errors of the fine-tuned model, with the survival plot of both. The baseline is
trained on few frames on purpose: the low-data regime where StABlE helps. Every stage resumes:
rerunning after an interruption continues. Budgets are counted in epochs, not minutes, so that
one seed gives the same models on a fast machine and a slow one.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stablemd.cli.options import check_positive
from stablemd.cli.output import console, metrics_table, stability_table
from stablemd.core.files import check_output_directory, write_json
from stablemd.data.database import read_frames
from stablemd.data.frames import FrameSet
from stablemd.data.generate import generate_reference_data
from stablemd.diagnose.stability.benchmark import StabilitySettings
from stablemd.diagnose.stability.compare import compare_models
from stablemd.fix.stable_training.config import StableConfig
from stablemd.fix.stable_training.workflow import stable_train
from stablemd.models.potential import Potential
from stablemd.models.registry import load_potential
from stablemd.systems import get_system
from stablemd.training.config import TrainConfig
from stablemd.training.metrics import error_metrics
from stablemd.training.workflow import held_out_indices, train_from_database

QUICK_MODEL = {"n_features": 32, "n_interactions": 3, "cutoff": 5.0}


def _held_out_errors(potential: Potential, frames, indices, title: str, path: Path) -> dict:
    metrics = error_metrics(potential, FrameSet([frames[i] for i in indices]))
    console.print(metrics_table(metrics, f"{title} on {len(indices)} held-out frames"))
    write_json(metrics, path)
    return metrics


def quickstart(
    out: Path = typer.Option(Path("quickstart-run"), help="Directory for data, models and plots."),
    temperature: float = typer.Option(500.0, help="Reference MD and test temperature in K."),
    steps: int = typer.Option(1500, help="MD steps of 0.5 fs per reference trajectory."),
    trajectories: int = typer.Option(2, help="Independent reference trajectories."),
    n_train: int = typer.Option(40, help="Training frames of the baseline (few on purpose)."),
    train_epochs: int = typer.Option(300, help="Training epochs of the baseline."),
    replicas: int = typer.Option(64, help="Replicas of each stability run."),
    stability_ps: float = typer.Option(2.0, help="Simulated time of each stability run in ps."),
    stable_epochs: int = typer.Option(100, help="StABlE epochs (simulation and learning)."),
    seed: int = typer.Option(0, help="Seed of the MD, the split and the model."),
):
    """Ethanol end to end: xTB data, a baseline model, its stability, StABlE, stability again."""
    # every option is checked before the first stage, so none fails after minutes of work
    check_positive(
        temperature=temperature, steps=steps, trajectories=trajectories, n_train=n_train,
        train_epochs=train_epochs, replicas=replicas, stability_ps=stability_ps,
        stable_epochs=stable_epochs,
    )  # fmt: skip
    config = TrainConfig(model_options=QUICK_MODEL, max_epochs=train_epochs, seed=seed)
    settings = StabilitySettings(
        replicas=replicas, temperature_K=temperature, time_ps=stability_ps, seed=seed
    )
    # learning starts early (a quarter unstable): the demo has minutes, not hours
    stable_config = StableConfig(
        temperature_K=temperature, max_epochs=stable_epochs, f_max=0.25, f_min=0.1, seed=seed
    )
    check_output_directory(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "ethanol-xtb.db"
    console.rule("1/6 reference data: ethanol, GFN2-xTB, Langevin MD")
    generate_reference_data(
        "ethanol", "xtb", temperature, steps, 5, data_path, n_trajectories=trajectories, seed=seed
    )
    frames = read_frames(data_path)
    n_val = max(len(frames) // 6, 1)
    n_train = min(n_train, len(frames) - 2 * n_val)

    console.rule(f"2/6 training the built-in PaiNN model on {n_train} frames")
    baseline = train_from_database(data_path, n_train, n_val, config, out / "model.pt")
    held_out = held_out_indices(baseline.metadata, data_path, frames)
    train_frames = [frames[i] for i in baseline.metadata["training"]["train_indices"]]

    console.rule("3/6 errors on held-out frames")
    _held_out_errors(baseline.potential, frames, held_out, "baseline", out / "test_metrics.json")

    system = get_system("ethanol")
    starts = [frames[i] for i in held_out]
    console.rule(f"4/6 stability of the baseline: {replicas} replicas, {stability_ps:g} ps")
    models = {"baseline": baseline.potential}
    rows = compare_models(models, system, starts, train_frames, settings, out / "stability")
    console.print(stability_table({label: row["summary"] for label, row in rows.items()}))

    console.rule(f"5/6 StABlE fine-tuning for {stable_epochs} epochs, no new labels")
    stable_path = out / "model-stable.pt"
    stable_train(baseline.path, data_path, stable_path, stable_config, system_name="ethanol")

    console.rule("6/6 the StABlE model: stability and errors")
    models["stable"] = load_potential(stable_path)
    rows = compare_models(models, system, starts, train_frames, settings, out / "stability")
    console.print(stability_table({label: row["summary"] for label, row in rows.items()}))
    _held_out_errors(
        models["stable"], frames, held_out, "StABlE model",
        out / "test_metrics_stable.json",
    )  # fmt: skip
    console.print(
        f"models: {baseline.path}, {stable_path}   survival plot: "
        f"{out / 'stability' / 'survival.png'}   StABlE progress: "
        f"{out / 'model-stable_run' / 'stable_training.png'}"
    )
