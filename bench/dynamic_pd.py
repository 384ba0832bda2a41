"""Dynamic against conventional training on H on a Pd cluster, with the same labels and the
same wall time: force error against rollout step on a held-out trajectory (the paper's Fig. 2).

Data: ``stablemd data generate pd13-h2 --friction 0 --temperature 1000 --steps 300 --every 1
--trajectories 4`` (NVE, GFN2-xTB, 0.5 fs; generated into ``bench/data/`` when missing, about
30 min on one core). Trajectories that stop early (an SCF that does not converge) keep their
frames. Roles are fixed by trajectory id: 2 trains, 0 validates, 3 tests (1 is too short).

Both runs train PaiNN (32 features, 2 interactions, 5 Å, float32) from the same seed on the
same 300 frames for ``MINUTES`` of wall time at one thread: the conventional one with
``stablemd train``'s defaults (MSE of energies and forces, validation on single frames), the
dynamic one with the authors' loss and curriculum but a schedule compressed to fit the budget
(patience 2, floor 5e-5 instead of 15 and 2e-6, restart 1e-4; window up to 4). Then each
model rolls out 120 steps from two starts of the test trajectory.

``python bench/dynamic_pd.py [conventional|dynamic]`` trains one run (resumable; run both at
once in two processes), without argument trains what is missing and evaluates.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from machine import machine_info

from stablemd.core.files import write_json
from stablemd.core.runtime import tune_memory_allocator
from stablemd.data.database import read_frames
from stablemd.data.frames import FrameSet
from stablemd.data.generate import generate_reference_data
from stablemd.data.trajectories import read_trajectories
from stablemd.fix.dynamic_training.config import DynamicTrainConfig
from stablemd.fix.dynamic_training.plots import plot_rollout_errors
from stablemd.fix.dynamic_training.trainer import DynamicTrainer, json_safe
from stablemd.fix.dynamic_training.validation import rollout_force_errors
from stablemd.training.config import TrainConfig
from stablemd.training.metrics import error_metrics
from stablemd.training.trainer import Trainer

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "pd13_h2_nve.db"
RUNS = HERE / "data" / "dynamic_pd_runs"
IMAGE = HERE.parent / "docs" / "images" / "dynamic_pd_rollout.png"
ROLES = {"train": 2, "validation": 0, "test": 3}
MINUTES = 15.0
MODEL = {"n_features": 32, "n_interactions": 2, "cutoff": 5.0}


def reference_data() -> list:
    if not DATA.exists():
        DATA.parent.mkdir(parents=True, exist_ok=True)
        generate_reference_data(
            "pd13-h2", None, 1000.0, 300, 1, DATA, n_trajectories=4, friction_per_fs=0.0
        )
    frames = read_frames(DATA)
    by_id = {t.trajectory_id: t for t in read_trajectories(frames, DATA.name)}
    return frames, {role: by_id[tid] for role, tid in ROLES.items()}


def train(kind: str, minutes: float = MINUTES):
    torch.set_num_threads(1)
    frames, runs = reference_data()
    sets = {role: FrameSet([frames[i] for i in runs[role].frame_indices]) for role in runs}
    common = dict(model_options=MODEL, max_time_minutes=minutes, seed=0)
    if kind == "conventional":
        config = TrainConfig(**common)
        trainer = Trainer(config, sets["train"], sets["validation"], RUNS / kind, progress=False)
    else:
        config = DynamicTrainConfig(**common, window_max=4, lr_patience=2, min_learning_rate=5e-5)
        trainer = DynamicTrainer(
            config, [runs["train"]], [runs["validation"]], sets["train"], sets["validation"],
            RUNS / kind, progress=False,
        )  # fmt: skip
    return trainer.run(), sets, runs


def main(out_dir: Path, quick: bool) -> dict:
    tune_memory_allocator()
    minutes = 1.0 if quick else MINUTES
    results, curves = {}, {}
    for kind in ("conventional", "dynamic"):
        result, sets, runs = train(kind, minutes)
        rollout = rollout_force_errors(result.potential, [runs["test"]], 120)
        curves[kind] = rollout
        history = result.history
        results[kind] = {
            "epochs": len(history),
            "best_epoch": result.best_validation["epoch"],
            "windows_reached": sorted({row.get("window", 1) for row in history}),
            "train_time_s": round(result.elapsed_s, 1),
            "test_single_frame": error_metrics(result.potential, sets["test"], 64),
            "test_rollout": rollout,
        }
    plot_rollout_errors(curves, IMAGE, "pd13-h2, held-out trajectory: 2 rollouts of 120 steps")
    summary = {
        "machine": machine_info(),
        "data": {"file": DATA.name, "roles": ROLES, "frames": {k: len(v) for k, v in runs.items()}},
        "minutes_per_run": minutes,
        "model": MODEL,
        **results,
    }
    write_json(
        json_safe(summary),
        Path(out_dir) / ("dynamic_pd_quick.json" if quick else "dynamic_pd.json"),
    )
    return summary


if __name__ == "__main__":
    tune_memory_allocator()
    if len(sys.argv) > 1:
        train(sys.argv[1])
    else:
        main(HERE / "results", quick=False)
