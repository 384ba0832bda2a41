"""Cost of one training step by the forces trained: conservative, direct, both.

One step of :class:`~stablemd.training.trainer.Trainer` as ``stablemd train`` takes it (predict,
loss, backward, gradient clipping, Adam, EMA update) on a batch of 16 frames, for ethanol
(9 atoms) and aspirin (21 atoms), default PaiNN (64 features, 3 interactions, 5 Å), float32, one
thread. The three kinds are timed side by side: every round runs one step of each, in a
shuffled order, so a load that comes and goes on the machine falls on all of them alike.
Reported: median and fastest step per kind, and the ratios to ``direct``.

The frames are the built-in molecules displaced by 0.05 Å Gaussian noise, labelled with
made-up energies and forces (a step costs the same whatever the labels).

``python bench/training_forces.py`` (or ``python bench/run.py training_forces``), ~1 min.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from machine import machine_info

from stablemd.core.runtime import tune_memory_allocator
from stablemd.data.frames import FrameSet
from stablemd.systems import get_system
from stablemd.training.config import TrainConfig
from stablemd.training.trainer import Trainer

KINDS = ("conservative", "direct", "both")
MOLECULES = ("ethanol", "aspirin")
BATCH = 16


def labelled_frames(system: str, n: int, seed: int = 0) -> list[Atoms]:
    """``n`` displaced copies of ``system`` with made-up energy (eV) and forces (eV/Å)."""
    base = get_system(system).atoms
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = Atoms(base.numbers, base.positions + rng.normal(scale=0.05, size=(len(base), 3)))
        forces = rng.normal(size=(len(base), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=float(rng.normal()), forces=forces)
        frames.append(atoms)
    return frames


def time_steps(system: str, rounds: int, warmup: int, run_root: Path) -> dict:
    frames = labelled_frames(system, BATCH + 4)
    train, validation = FrameSet(frames[:BATCH]), FrameSet(frames[BATCH:])
    batch = train.batch(range(BATCH))
    trainers = {
        kind: Trainer(
            TrainConfig(forces=kind), train, validation, run_root / f"{system}-{kind}",
            progress=False,
        )
        for kind in KINDS
    }  # fmt: skip
    for _ in range(warmup):
        for trainer in trainers.values():
            trainer._train_step(batch)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    order = list(KINDS)
    shuffle = random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for kind in order:
            start = time.perf_counter()
            trainers[kind]._train_step(batch)
            times[kind].append(time.perf_counter() - start)
    median = {kind: statistics.median(t) for kind, t in times.items()}
    fastest = {kind: min(t) for kind, t in times.items()}
    return {
        "system": system,
        "atoms_per_frame": len(frames[0]),
        "batch_frames": BATCH,
        "median_step_s": median,
        "fastest_step_s": fastest,
        "median_ratio_to_direct": {k: median[k] / median["direct"] for k in KINDS},
        "fastest_ratio_to_direct": {k: fastest[k] / fastest["direct"] for k in KINDS},
    }


def main(out_dir: Path, quick: bool) -> dict:
    torch.set_num_threads(1)
    # numba's parallel launch of the fused kernel sets the OpenMP thread count of this thread
    # to its own (torch reads it back): one thread for both
    numba.set_num_threads(1)
    torch.manual_seed(0)
    rounds, warmup = (5, 2) if quick else (25, 3)
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [time_steps(system, rounds, warmup, Path(tmp)) for system in MOLECULES]
    assert torch.get_num_threads() == 1, "the steps ran on more than one thread"
    result = {
        "benchmark": "training_forces",
        "description": "one Trainer step (batch of 16 frames, default PaiNN, float32, one "
        "thread) training conservative, direct or both forces, timed side by side",
        "quick": quick,
        "rounds": rounds,
        "results": rows,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {**machine_info(), "numba_threads": numba.get_num_threads()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "training_forces.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    tune_memory_allocator()  # as the stablemd command does
    out = main(Path(__file__).resolve().parent / "results", quick=False)
    for row in out["results"]:
        print(row["system"])
        for kind in KINDS:
            print(
                f"  {kind:12s} median {1000 * row['median_step_s'][kind]:7.1f} ms "
                f"(×{row['median_ratio_to_direct'][kind]:.2f} direct), fastest "
                f"{1000 * row['fastest_step_s'][kind]:7.1f} ms "
                f"(×{row['fastest_ratio_to_direct'][kind]:.2f})"
            )
    print(f"load average before/after: {out['load_average_before_after']}")
