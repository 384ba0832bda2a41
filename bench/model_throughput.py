"""Energy + force throughput of PaiNN and the MACE adapter on batches of aspirin replicas.

``predict(forces=True)`` (neighbour list, forward and backward) on 1, 16 and 64 replicas of
aspirin (21 atoms) in one batch, float32 and float64, untrained models with default
hyperparameters. Reported as atom-steps per second (atoms in the batch / median wall time).
PaiNN is timed twice, side by side: as ``predict`` runs it (the fused message kernel) and
through the plain autograd path that training uses (``path: autograd``).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from machine import machine_info

from stablemd.core.batch import Batch
from stablemd.core.runtime import tune_memory_allocator
from stablemd.models.potential import predict
from stablemd.models.registry import build_potential
from stablemd.systems import get_system

REPLICAS = [1, 16, 64]
KINDS = ["painn", "mace"]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def aspirin_replicas(n: int, seed: int = 0, noise: float = 0.05) -> list[Atoms]:
    """``n`` copies of the xTB-relaxed aspirin, each displaced by Gaussian noise (Å)."""
    base = get_system("aspirin").atoms
    rng = np.random.default_rng(seed)
    return [
        Atoms(base.numbers, base.positions + rng.normal(scale=noise, size=base.positions.shape))
        for _ in range(n)
    ]


def autograd_path_forces(model, batch: Batch) -> torch.Tensor:
    """Forces through the model's differentiable-twice path (no fused kernel)."""
    positions = batch.positions.detach().requires_grad_(True)
    work = Batch(positions, batch.numbers, batch.system_index, batch.cell, batch.pbc)
    return -torch.autograd.grad(model(work)["energies"].sum(), positions)[0]


PATHS = {"predict": lambda model, batch: predict(model, batch), "autograd": autograd_path_forces}


def median_seconds(forces, model, batch: Batch, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        forces(model, batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forces(model, batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(out_dir: Path, quick: bool) -> dict:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    repeats = 3 if quick else 10
    replicas = aspirin_replicas(max(REPLICAS))
    elements = sorted(set(replicas[0].numbers.tolist()))
    models = {kind: build_potential(kind, elements=elements).eval() for kind in KINDS}
    rows = []
    for dtype_name, dtype in DTYPES.items():
        for kind, model in models.items():
            model.to(dtype)
            paths = ["predict", "autograd"] if kind == "painn" else ["predict"]
            for n in REPLICAS:
                batch = Batch.from_atoms(replicas[:n], dtype=dtype)
                for path in paths:
                    seconds = median_seconds(PATHS[path], model, batch, repeats)
                    rows.append(
                        {
                            "model": kind,
                            "path": path,
                            "dtype": dtype_name,
                            "replicas": n,
                            "atoms": batch.n_atoms,
                            "median_s": seconds,
                            "atom_steps_per_s": batch.n_atoms / seconds,
                        }
                    )
    result = {
        "benchmark": "model_throughput",
        "description": "predict(forces=True) on aspirin replicas in one batch, median wall time",
        "quick": quick,
        "repeats": repeats,
        "hyperparameters": {kind: m.hyperparameters() for kind, m in models.items()},
        "parameters": {kind: sum(p.numel() for p in m.parameters()) for kind, m in models.items()},
        "results": rows,
        "machine": machine_info(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model_throughput.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    tune_memory_allocator()  # as the stablemd command does
    out = main(Path(__file__).resolve().parent / "results", quick=False)
    for row in out["results"]:
        print(
            f"{row['model']:6s} {row['path']:9s} {row['dtype']:8s} {row['replicas']:3d} replicas "
            f"{row['atom_steps_per_s']:10.0f} atom-steps/s"
        )
