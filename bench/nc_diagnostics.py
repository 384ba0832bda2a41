"""Jacobian asymmetry λ and closed-loop work of the energy head (−∂E/∂r) and the direct-force
head of one PaiNN on ethanol, with the time each diagnostic takes.

The model is an **untrained** PaiNN with the default hyperparameters (seed 0), or the model file
in STABLEMD_BENCH_MODEL: training a direct head is another branch's work. An untrained direct
head is a random equivariant vector field, so its λ is an upper reference, not the paper's
0.004–0.03 for trained models. Structures: ethanol rattled by 0.05 Å (8 frames, seed 0).

Writes ``results/nc_diagnostics.json``; ``python bench/nc_diagnostics.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase.build import molecule

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from stablemd.diagnose.conservation import (  # noqa: E402
    closed_loop_work,
    jacobian_asymmetry,
    rotation_deformation_loop,
)
from stablemd.models.painn import PaiNN  # noqa: E402
from stablemd.models.registry import load_potential  # noqa: E402


def structures(n: int = 8, scale: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        out.append(atoms)
    return out


def model():
    path = os.environ.get("STABLEMD_BENCH_MODEL")
    if path:
        return load_potential(path, dtype=torch.float64), path
    torch.manual_seed(0)
    return PaiNN([1, 6, 8]).double().eval(), "untrained PaiNN (defaults, seed 0)"


def main(out_dir: Path, quick: bool = False) -> dict:
    """λ and loop work of both heads (``quick`` changes nothing: it takes seconds)."""
    torch.set_num_threads(1)
    potential, name = model()
    frames = structures()
    path = rotation_deformation_loop(molecule("CH3CH2OH"), n_points=1000)
    result = {"model": name, "machine": machine_info(), "structures": "ethanol ±0.05 Å, 8"}
    for forces in ("conservative", "direct"):
        start = time.perf_counter()
        lam = jacobian_asymmetry(potential, frames, forces)
        lam_s = time.perf_counter() - start
        start = time.perf_counter()
        loop = closed_loop_work(potential, path, forces)
        loop_s = time.perf_counter() - start
        near = lam.pair_distance < 2.0
        result[forces] = {
            "lambda_overall": lam.overall_lambda,
            "lambda_per_structure": lam.structure_lambda.tolist(),
            "lambda_atom_mean_by_element": {
                int(z): float(lam.atom_lambda[lam.atom_numbers == z].mean())
                for z in np.unique(lam.atom_numbers)
            },
            "lambda_pair_mean_below_2A": float(lam.pair_lambda[near].mean()),
            "lambda_pair_mean_above_2A": float(lam.pair_lambda[~near].mean()),
            "lambda_seconds": lam_s,
            "loop_work_eV": loop.work_eV,
            "loop_work_per_atom_eV": loop.work_per_atom_eV,
            "loop_quadrature_error_eV": loop.quadrature_error_eV,
            "loop_absolute_work_eV": loop.absolute_work_eV,
            "loop_path_length_A": loop.path_length_A,
            "loop_points": path.n_points,
            "loop_seconds": loop_s,
        }
    (out_dir / "nc_diagnostics.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    print(json.dumps(main(results), indent=1))
