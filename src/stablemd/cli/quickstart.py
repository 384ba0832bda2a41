"""``stablemd quickstart``: the main job on a small built-in default.

Reference data for ethanol with GFN2-xTB → the built-in PaiNN model trained on it → its errors
on held-out frames. Every stage resumes: rerunning after an interruption continues.
"""

from __future__ import annotations

from pathlib import Path

import typer

from stablemd.cli.output import console, metrics_table
from stablemd.data.database import read_frames
from stablemd.data.generate import generate_reference_data
from stablemd.evaluation import error_metrics
from stablemd.io import write_json
from stablemd.training.config import TrainConfig
from stablemd.training.frames import FrameSet
from stablemd.training.workflow import held_out_indices, train_from_database

QUICK_MODEL = {"n_features": 32, "n_interactions": 3, "cutoff": 5.0}


def quickstart(
    out: Path = typer.Option(Path("quickstart-run"), help="Directory for data, model and metrics."),
    temperature: float = typer.Option(500.0, help="Reference MD temperature in K."),
    steps: int = typer.Option(1500, help="MD steps of 0.5 fs per reference trajectory."),
    trajectories: int = typer.Option(2, help="Independent reference trajectories."),
    train_minutes: float = typer.Option(3.0, help="Training wall-time budget in minutes."),
    seed: int = typer.Option(0, help="Seed of the MD, the split and the model."),
):
    """Generate xTB ethanol data, train the built-in model, print its held-out errors."""
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "ethanol-xtb.db"
    console.rule("1/3 reference data: ethanol, GFN2-xTB, Langevin MD")
    generate_reference_data(
        "ethanol", "xtb", temperature, steps, 5, data_path, n_trajectories=trajectories, seed=seed
    )
    frames = read_frames(data_path)
    n_val = max(len(frames) // 6, 1)
    n_train = len(frames) - 2 * n_val

    console.rule(f"2/3 training the built-in PaiNN model on {n_train} frames")
    config = TrainConfig(model_options=QUICK_MODEL, max_time_minutes=train_minutes, seed=seed)
    trained = train_from_database(data_path, n_train, n_val, config, out / "model.pt")

    console.rule("3/3 errors on held-out frames")
    held_out = held_out_indices(trained.metadata, data_path, len(frames))
    test = FrameSet([frames[i] for i in held_out])
    metrics = error_metrics(trained.potential, test)
    console.print(metrics_table(metrics, f"built-in model on {len(test)} held-out frames"))
    write_json(metrics, out / "test_metrics.json")
    console.print(
        f"model: {trained.path}   metrics: {out / 'test_metrics.json'}   "
        f"learning curve: {out / 'model_run' / 'learning_curve.png'}"
    )
