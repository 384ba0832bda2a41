"""Accuracy of the built-in model and the MACE adapter on xTB aspirin at 500 K, same budget.

Data: GFN2-xTB Langevin MD of aspirin at 500 K, 8 trajectories of 12 500 steps of 0.5 fs, a
frame every 10 steps (``stablemd data generate aspirin --oracle xtb --temperature 500
--steps 12500 --every 10 --trajectories 8 --seed 1``), made by this script when missing.
Training: 1000 frames (validation 200) drawn from trajectories 0–1; test: 1000 frames drawn
from the later trajectories, which training never sees (read after training, so the script can
start on a database still being generated). Each model gets the same wall-time budget.

Writes ``aspirin_training_<model>.json``; ``python bench/aspirin_training.py [painn] [mace]``.
Environment: STABLEMD_BENCH_DATA (an existing database, used as it is; default: generate
bench/data/aspirin-xtb-500K.db),
STABLEMD_BENCH_MINUTES (budget per model, default 30; quick mode 1).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from stablemd.core.runtime import tune_memory_allocator  # noqa: E402
from stablemd.data.database import read_frames  # noqa: E402
from stablemd.data.frames import FrameSet  # noqa: E402
from stablemd.data.generate import generate_reference_data  # noqa: E402
from stablemd.models.registry import save_potential  # noqa: E402
from stablemd.training.config import TrainConfig  # noqa: E402
from stablemd.training.metrics import error_metrics  # noqa: E402
from stablemd.training.trainer import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
MODELS = {
    "painn": {"n_features": 64, "n_interactions": 3, "cutoff": 5.0},
    "mace": {"cutoff": 5.0, "avg_num_neighbors": 15.0},
}


def pick(frames, trajectories: set[int], count: int, rng) -> list[int]:
    pool = [i for i, a in enumerate(frames) if a.info["trajectory"] in trajectories]
    if len(pool) < count:
        raise RuntimeError(f"only {len(pool)} frames in trajectories {sorted(trajectories)}")
    return sorted(rng.choice(pool, size=count, replace=False).tolist())


def main(out_dir: Path, quick: bool = False, models=tuple(MODELS)) -> dict:
    minutes = 1.0 if quick else float(os.environ.get("STABLEMD_BENCH_MINUTES", 30))
    if "STABLEMD_BENCH_DATA" in os.environ:
        data = Path(os.environ["STABLEMD_BENCH_DATA"])
    else:
        data = HERE / "data" / "aspirin-xtb-500K.db"
        data.parent.mkdir(parents=True, exist_ok=True)
        generate_reference_data("aspirin", "xtb", 500.0, 12500, 10, data, n_trajectories=8, seed=1)
    frames = read_frames(data)
    rng = np.random.default_rng(0)
    train_val = pick(frames, {0, 1}, 1200, rng)
    rng.shuffle(train_val)
    train = FrameSet([frames[i] for i in train_val[:1000]])
    val = FrameSet([frames[i] for i in train_val[1000:]])
    results = {}
    for kind in models:
        config = TrainConfig(
            model=kind,
            model_options=MODELS[kind],
            batch_size=8,
            max_time_minutes=minutes,
            lr_patience=8,
            early_stopping_patience=40,
            max_epochs=10_000,
        )
        run_dir = out_dir / f"aspirin_training_{kind}"
        result = Trainer(config, train, val, run_dir).run()
        save_potential(result.potential, run_dir / "model.pt", {"config": config.model_dump()})
        frames = read_frames(data)
        unseen = {int(a.info["trajectory"]) for a in frames} - {0, 1}
        test = FrameSet([frames[i] for i in pick(frames, unseen, 1000, np.random.default_rng(1))])
        metrics = error_metrics(result.potential, test)
        results[kind] = {
            "machine": machine_info(),
            "data": str(data),
            "budget_minutes": minutes,
            "threads": torch.get_num_threads(),
            "train_time_s": round(result.elapsed_s, 1),
            "epochs": len(result.history),
            "n_parameters": sum(p.numel() for p in result.potential.parameters()),
            "test_trajectories": sorted(unseen),
            "test_force_mae_meV_per_A": 1000 * metrics["forces_eV_per_A"]["mae"],
            "test_energy_mae_per_atom_meV": 1000 * metrics["energy_per_atom_eV"]["mae"],
            "test": metrics,
        }
        path = out_dir / f"aspirin_training_{kind}.json"
        path.write_text(json.dumps(results[kind], indent=2))
    return results


if __name__ == "__main__":
    tune_memory_allocator()  # as the stablemd command does
    chosen = tuple(sys.argv[1:]) or tuple(MODELS)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    print(json.dumps(main(out, models=chosen), indent=1)[:2000])
