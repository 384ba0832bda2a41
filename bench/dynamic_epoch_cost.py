"""Cost of dynamic training against conventional training, per step and per epoch.

One training step as ``stablemd train`` takes it (loss, backward, clipping, Adam, EMA) on a
batch of 16: 16 frames for the conventional loss; 16 windows of S frames for dynamic
training, S = 1..4 (PaiNN) or 1..3 (MACE), with the state detached between steps (the
authors' choice) and with backpropagation through time. pd13-h2 (17 atoms) frames come from a
short NVE run with ASE's EMT (a step costs the same whatever the labels); the model is the
default of its kind (PaiNN: 64 features, 3 interactions; the MACE adapter: 32x0e+32x1o,
max_ell 2, correlation 2, 2 interactions; 5 Å), float32, one thread. Every round times one
step of each variant in a shuffled order, so a load that comes and goes falls on all alike;
reported: median step, its ratio to the conventional step, the cost of an epoch over one
300-frame trajectory (300 − S + 1 windows) relative to a conventional epoch over its 300
frames, and the machine's 1-minute load average at each round.

``python bench/dynamic_epoch_cost.py [--model mace] [--quick]`` (PaiNN also by ``python
bench/run.py dynamic_epoch_cost``): ~2 min for PaiNN, ~3 min for MACE at a load of 5.
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ase.calculators.emt import EMT
from machine import machine_info

from stablemd.core.files import write_json
from stablemd.core.runtime import tune_memory_allocator
from stablemd.data.database import read_frames
from stablemd.data.frames import FrameSet
from stablemd.data.generate import generate_reference_data
from stablemd.data.trajectories import read_trajectories
from stablemd.fix.dynamic_training.config import DynamicTrainConfig
from stablemd.fix.dynamic_training.trainer import DynamicTrainer
from stablemd.fix.dynamic_training.windows import TrainingWindows
from stablemd.systems import get_system
from stablemd.training.config import TrainConfig
from stablemd.training.trainer import Trainer

BATCH = 16
EPOCH_FRAMES = 300
#: Per model kind: its description, the window sizes measured, the result file.
MODELS = {
    "painn": (
        "PaiNN default (64 features, 3 interactions, 5 Å)",
        (1, 2, 3, 4),
        "dynamic_epoch_cost.json",
    ),
    "mace": (
        "MACE adapter default (32x0e+32x1o, max_ell 2, correlation 2, 2 interactions, 5 Å)",
        (1, 2, 3),
        "dynamic_epoch_cost_mace.json",
    ),
}


def main(out_dir: Path, quick: bool, model: str = "painn") -> dict:
    torch.set_num_threads(1)
    tune_memory_allocator()
    description, windows, result_file = MODELS[model]
    rounds = 3 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "pd.db"
        generate_reference_data(
            get_system("pd13-h2"), EMT(), 600.0, 40, 1, data, n_trajectories=2,
            progress=False, friction_per_fs=0.0,
        )  # fmt: skip
        frames = read_frames(data)
        runs = read_trajectories(frames, data.name)
        train = FrameSet([frames[i] for i in runs[0].frame_indices])
        validation = FrameSet([frames[i] for i in runs[1].frame_indices])
        conventional = Trainer(
            TrainConfig(model=model), train, validation, tmp / "c", progress=False
        )
        steps = {"conventional": (conventional, train.batch(range(BATCH)))}
        for backprop in ("detached", "through-time"):
            config = DynamicTrainConfig(model=model, window_max=max(windows), backprop=backprop)
            trainer = DynamicTrainer(
                config, [runs[0]], [runs[1]], train, validation, tmp / backprop, progress=False
            )
            for size in windows:
                if backprop == "through-time" and size == 1:
                    continue  # one frame: nothing to propagate, the same as detached
                batch = TrainingWindows(runs[:1], size).batch(range(BATCH))
                steps[f"S={size} {backprop}"] = (trainer, batch)
        times = {name: [] for name in steps}
        names = list(steps)
        for name in names:  # warm-up (first calls allocate)
            trainer, batch = steps[name]
            trainer._train_step(batch)
        load = []
        for _ in range(rounds):
            load.append(round(os.getloadavg()[0], 2))
            random.shuffle(names)
            for name in names:
                trainer, batch = steps[name]
                started = time.perf_counter()
                trainer._train_step(batch)
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["conventional"])
    per_variant = {}
    for name, values in times.items():
        median = statistics.median(values)
        size = 1 if name == "conventional" else int(name.split()[0].removeprefix("S="))
        windows = EPOCH_FRAMES - size + 1
        per_variant[name] = {
            "median_step_ms": round(1000 * median, 2),
            "fastest_step_ms": round(1000 * min(values), 2),
            "step_ratio_to_conventional": round(median / base, 2),
            "epoch_ratio_to_conventional": round(median * windows / (base * EPOCH_FRAMES), 2),
        }
    summary = {
        "machine": machine_info(),
        "system": "pd13-h2 (17 atoms), EMT NVE frames, 0.5 fs",
        "model": f"{description}, float32, one thread",
        "batch": BATCH,
        "rounds": rounds,
        "load_average_1min_per_round": load,
        "variants": per_variant,
    }
    write_json(summary, Path(out_dir) / result_file)
    return summary


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=list(MODELS), default="painn")
    parser.add_argument("--quick", action="store_true", help="3 rounds, for smoke testing")
    args = parser.parse_args()
    out = Path(__file__).resolve().parent / "results"
    print(json.dumps(main(out, args.quick, args.model), indent=1))
