"""Conservative fine-tuning of a direct model vs conservative training from scratch.

The paper's recipe (Bigi, Langer, Ceriotti, ICML 2025): pretrain on direct forces, whose step
needs no derivative with respect to positions, then fine-tune with −∂E/∂r, keeping a small
direct-force term (``--init direct.pt --forces conservative --direct-forces-weight 1``). Is a
conservative model of a given accuracy cheaper that way?

Data: xTB ethanol, Langevin MD at 500 K (2 trajectories, a frame every 10 steps), made by
``generate_reference_data`` into ``bench/data/`` the first time (about a minute);
200 training and 50 validation frames (random split, seed 0). Model: default PaiNN, float32,
one thread, default options (lr 10⁻³, batch 16). Three runs:

- ``scratch``: conservative from scratch, ``SCRATCH_EPOCHS`` epochs;
- ``direct``: direct from scratch, ``PRETRAIN_EPOCHS`` epochs;
- ``finetune``: conservative from the ``direct`` model, ``FINETUNE_EPOCHS`` epochs.

Time is the CPU time of this process (one thread, so it is the wall time of a quiet machine
and is not stretched by other load), counted at the end of each epoch's training batches;
the fine-tuning's clock starts at the pretraining's total. Reported: for validation force MAEs
(−∂E/∂r) of 2×, 1.5×, 1.2× and 1× the best the scratch run reached, and the best the fine-tuned
run reached, the CPU time each route took to reach it, and their ratio.

``python bench/conservative_finetune.py`` (about 6 min on a quiet machine).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numba
import torch
from machine import machine_info

from stablemd.core.runtime import tune_memory_allocator
from stablemd.data.database import read_frames
from stablemd.data.frames import FrameSet
from stablemd.data.generate import generate_reference_data
from stablemd.data.splits import split_indices
from stablemd.training.config import TrainConfig
from stablemd.training.trainer import Trainer

N_TRAIN, N_VAL = 200, 50
SCRATCH_EPOCHS, PRETRAIN_EPOCHS, FINETUNE_EPOCHS = 120, 80, 60
LEVELS = (2.0, 1.5, 1.2, 1.0)
DATA = Path(__file__).resolve().parent / "data"  # not committed


def reference_frames(path: Path):
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_reference_data(
            "ethanol", None, 500.0, 1500, 10, path, n_trajectories=2, seed=0, progress=False
        )
    return read_frames(path)


def train(config: TrainConfig, train_set, val_set, run_dir: Path, potential=None):
    """(result, CPU seconds at the end of each epoch's batches)."""
    n_batches = -(-len(train_set) // config.batch_size)
    clock: list[float] = []
    started = time.process_time()

    def after_batch(epoch: int, batches_done: int) -> None:
        if batches_done == n_batches:
            clock.append(time.process_time() - started)

    trainer = Trainer(
        config, train_set, val_set, run_dir, potential=potential, progress=False,
        after_batch=after_batch,
    )  # fmt: skip
    result = trainer.run()
    total = time.process_time() - started
    return result, clock, total


def first_reaching(history: list[dict], clock: list[float], target: float, offset: float = 0.0):
    for row, seconds in zip(history, clock, strict=False):
        if row["val_forces_mae_eV_per_A"] <= target:
            return {"epoch": row["epoch"], "cpu_s": round(offset + seconds, 1)}
    return None


def main(out_dir: Path, quick: bool) -> dict:
    torch.set_num_threads(1)
    numba.set_num_threads(1)  # its parallel launches would set torch's OpenMP threads to its own
    scale = 0.1 if quick else 1.0
    epochs = {
        name: max(2, int(n * scale))
        for name, n in (
            ("scratch", SCRATCH_EPOCHS),
            ("direct", PRETRAIN_EPOCHS),
            ("finetune", FINETUNE_EPOCHS),
        )
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = reference_frames(DATA / "ethanol-xtb-500K-300.db")
    split = split_indices(len(frames), N_TRAIN, N_VAL, seed=0)
    train_set = FrameSet([frames[i] for i in split.train])
    val_set = FrameSet([frames[i] for i in split.val])
    load_before = os.getloadavg()[0]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        common = {"early_stopping_patience": 1000}  # the epochs are the budget
        scratch = train(
            TrainConfig(max_epochs=epochs["scratch"], **common), train_set, val_set, tmp / "s"
        )
        direct = train(
            TrainConfig(forces="direct", max_epochs=epochs["direct"], **common),
            train_set, val_set, tmp / "d",
        )  # fmt: skip
        start = direct[0].potential
        finetune = train(
            TrainConfig(max_epochs=epochs["finetune"], direct_forces_weight=1.0, **common),
            train_set, val_set, tmp / "f", potential=start.train(),
        )  # fmt: skip
    best_scratch = min(row["val_forces_mae_eV_per_A"] for row in scratch[0].history)
    best_finetune = min(row["val_forces_mae_eV_per_A"] for row in finetune[0].history)
    pretrain_cpu = direct[2]
    levels = []
    for target in sorted([level * best_scratch for level in LEVELS] + [best_finetune])[::-1]:
        a = first_reaching(scratch[0].history, scratch[1], target)
        b = first_reaching(finetune[0].history, finetune[1], target, offset=pretrain_cpu)
        levels.append(
            {
                "val_force_mae_eV_per_A": round(target, 4),
                "scratch": a,
                "direct_then_finetune": b,
                "time_ratio_finetune_to_scratch": (
                    round(b["cpu_s"] / a["cpu_s"], 3) if a and b else None
                ),
            }
        )
    for name, (result, clock, total) in {
        "scratch": scratch,
        "direct": direct,
        "finetune": finetune,
    }.items():
        runs[name] = {
            "epochs": len(result.history),
            "cpu_s": round(total, 1),
            "val_force_mae_eV_per_A_by_epoch": [
                round(r["val_forces_mae_eV_per_A"], 4) for r in result.history
            ],
            "cpu_s_by_epoch": [round(c, 1) for c in clock],
            "best_validation": {
                k: v for k, v in result.best_validation["metrics"].items() if "element" not in k
            },
        }
    result = {
        "benchmark": "conservative_finetune",
        "description": "conservative PaiNN on xTB ethanol (200 train, 50 val, 500 K): from "
        "scratch vs direct pretraining + conservative fine-tuning (direct weight 1), CPU time "
        "(one thread) to reach validation force MAEs (−∂E/∂r)",
        "quick": quick,
        "epochs": epochs,
        "levels": levels,
        "runs": runs,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
        "machine": {**machine_info(), "numba_threads": numba.get_num_threads()},
    }
    (out_dir / "conservative_finetune.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    tune_memory_allocator()  # as the stablemd command does
    out = main(Path(__file__).resolve().parent / "results", quick=False)
    for row in out["levels"]:
        print(json.dumps(row))
