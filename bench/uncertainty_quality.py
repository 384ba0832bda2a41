"""Quality of the ensemble-free uncertainty against a 5-model ensemble, on hotter structures.

Ethanol labelled with GFN2-xTB: 100 structures rattled by 0.05 Å (training 70, validation
30), and 40 "hot" test structures rattled by 0.15 Å that no model saw. Five small PaiNN models
(16 features, 2 interactions, 60 epochs) are trained with seeds 0–4 (the seed draws the split
and the initial weights, so the members also see different splits of the same 100 frames).
Model 0 gets the gradient-feature uncertainty (sketched, 512 projections; and last-layer),
calibrated (conformal, α = 0.05) on its validation frames; the ensemble's spread is calibrated
on the same frames. Reported on the hot set, per structure (u against |ΔE|/N) and per atom
(u against ‖ΔF_i‖/√3): the Spearman rank correlation between u and the error and the coverage
of the 95 % interval. The ensemble is judged against the error of its mean, as it is used.
Plots of error against u on the hot set: ``uncertainty_quality_<kind>.png``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from machine import machine_info
from scipy.stats import spearmanr

from stablemd.core.runtime import tune_memory_allocator
from stablemd.data.database import write_frames
from stablemd.data.frames import FrameSet
from stablemd.explore.uncertainty.calibration import calibration_factor
from stablemd.explore.uncertainty.ensemble import ensemble_predict
from stablemd.explore.uncertainty.evaluation import calibration_metrics, plot_calibration
from stablemd.explore.uncertainty.fit import UncertaintyErrors
from stablemd.explore.uncertainty.workflow import fit_model_uncertainty
from stablemd.models.registry import load_potential
from stablemd.oracles import get_oracle
from stablemd.systems import get_system
from stablemd.training.config import TrainConfig
from stablemd.training.workflow import locate_training_frames, train_from_database

MEMBERS = 5


def labelled(n: int, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    oracle = get_oracle("xtb")
    base = get_system("ethanol").atoms
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=scale, size=atoms.positions.shape)
        atoms.calc = oracle
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def ensemble_errors(members, frames: FrameSet) -> dict[str, torch.Tensor]:
    parts = {"total": [], "energy": [], "atomic": [], "forces": []}
    for batch in frames.batches(16):
        out = ensemble_predict(members, batch)
        n = batch.atoms_per_system.double()
        parts["total"].append(out["uncertainty"])
        parts["energy"].append((out["energy"] - batch.energy.double()).abs() / n)
        parts["atomic"].append(out["atomic_uncertainty"])
        error = out["forces"] - batch.forces.double()
        parts["forces"].append(error.pow(2).mean(1).sqrt())
    return {k: torch.cat(v) for k, v in parts.items()}


def main(out_dir: Path, quick: bool) -> dict:
    torch.set_num_threads(int(os.environ.get("STABLEMD_BENCH_THREADS", 1)))
    epochs = 5 if quick else 60
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        train_frames, hot = labelled(100, 0.05, 0), labelled(40, 0.15, 1)
        write_frames(work / "ethanol.db", train_frames)
        paths = []
        for seed in range(MEMBERS):
            config = TrainConfig(
                model="painn", seed=seed, max_epochs=epochs, batch_size=8,
                model_options={"n_features": 16, "n_interactions": 2},
            )  # fmt: skip
            path = work / f"m{seed}.pt"
            train_from_database(work / "ethanol.db", 70, 30, config, path, progress=False)
            paths.append(path)
        results = {}
        hot_set = FrameSet(hot, torch.float32)
        for kind in ("sketched", "last-layer"):
            out = work / f"m0-{kind}.pt"
            fit_model_uncertainty(paths[0], work / "ethanol.db", out, kind=kind)
            potential = load_potential(out)
            from stablemd.explore.uncertainty.estimator import model_uncertainty

            metrics, values = calibration_metrics(potential, model_uncertainty(potential), hot_set)
            results[f"gradient_features_{kind}"] = metrics
            plot_calibration(values, 1.0, out_dir / f"uncertainty_quality_{kind}.png")
        members = [load_potential(p) for p in paths]
        first = members[0]
        located = locate_training_frames(first.metadata, work / "ethanol.db", train_frames)
        validation = FrameSet([train_frames[i] for i in located.val], torch.float32)
        val, test = ensemble_errors(members, validation), ensemble_errors(members, hot_set)
        ensemble = {}
        for level, (u, err) in {"energy_per_atom": ("total", "energy"),
                                "forces_per_atom": ("atomic", "forces")}.items():  # fmt: skip
            c = calibration_factor(val[err], val[u], "conformal", 0.05)
            ensemble[level] = {
                "n": len(test[u]),
                "coverage": float((test[err] <= c * test[u]).double().mean()),
                "spearman": float(spearmanr(test[u].numpy(), test[err].numpy()).statistic),
                "mean_u": float((c * test[u]).mean()),
                "rmse": float(test[err].pow(2).mean().sqrt()),
            }
        results["ensemble_of_5"] = ensemble
        factors = {
            u: calibration_factor(val[err], val[u], "conformal", 0.05)
            for u, err in (("total", "energy"), ("atomic", "forces"))
        }
        calibrated = UncertaintyErrors(
            factors["atomic"] * test["atomic"], test["forces"],
            factors["total"] * test["total"], test["energy"],
        )  # fmt: skip
        plot_calibration(calibrated, 1.0, out_dir / "uncertainty_quality_ensemble.png")
    result = {
        "benchmark": "uncertainty_quality",
        "quick": quick,
        "machine": machine_info(),
        "system": "ethanol, GFN2-xTB",
        "train_val": [70, 30],
        "hot_test_frames": 40,
        "rattle_A": {"train": 0.05, "hot": 0.15},
        "model": "PaiNN 16 features, 2 interactions",
        "epochs": epochs,
        "results": results,
    }
    (out_dir / "uncertainty_quality.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    import sys

    tune_memory_allocator()
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    print(json.dumps(main(results, quick="--quick" in sys.argv), indent=1))
