"""Cost of the ensemble-free uncertainty and of uncertainty-biased MD.

64 aspirin replicas (1344 atoms), PaiNN of default size (float32, untrained unless
``STABLEMD_BENCH_MODEL`` names a model file), one thread for torch and numba unless
``STABLEMD_BENCH_THREADS`` says otherwise. The posterior is fitted on 50 rattled aspirin
structures (0.05 Å); cost does not depend on calibration. Reported, in CPU time of this
process per call (alternating repeats, medians, so a loaded machine slows all alike):

(a) energy and forces with u (sketched with 512 and 128 projections; last-layer) against energy and
    forces alone (goal ≤ 1.5×), and a 5-model ensemble's forces and spread (about 5×);
(b) one Langevin step of uncertainty-biased MD (τ = 0.25; sketched features: a double
    backward; last-layer ones: two first-order passes) against one plain step (goal ≤ 2.5×).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import numba
import numpy as np
import torch
from machine import machine_info
from md_throughput import aspirin_state, langevin, load_model

from stablemd.core.runtime import tune_memory_allocator
from stablemd.data.frames import FrameSet
from stablemd.explore.uncertainty.bias import UncertaintyBiasedForces
from stablemd.explore.uncertainty.ensemble import ensemble_predict
from stablemd.explore.uncertainty.estimator import Uncertainty
from stablemd.explore.uncertainty.features import GradientFeatures
from stablemd.explore.uncertainty.fit import fit_posteriors
from stablemd.md.forces import ModelForces
from stablemd.md.runner import run
from stablemd.models.potential import predict
from stablemd.systems import get_system

REPLICAS = 64
TRAINING_FRAMES = 50
RATTLE_A = 0.05


def fitted_uncertainty(model, kind: str, projections: int = 512) -> Uncertainty:
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(0)
    base = get_system("aspirin").atoms
    frames = []
    for _ in range(TRAINING_FRAMES):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=RATTLE_A, size=atoms.positions.shape)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    features = GradientFeatures(model.gradient_feature_layers(), kind, projections, seed=0)
    atomic, structure = fit_posteriors(model, features, FrameSet(frames, torch.float32))
    return Uncertainty(features, atomic, structure, 1.0, 1.0, "conformal", 0.05)


def cpu_per_call(function, n_calls: int) -> float:
    cpu = time.process_time()
    for _ in range(n_calls):
        function()
    return (time.process_time() - cpu) / n_calls


def force_calls(model, uncertainties: dict, members: list, n_calls: int, repeats: int) -> dict:
    batch = aspirin_state(REPLICAS, seed=1).batch(torch.float32)
    calls = {
        "forces": lambda: predict(model, batch, ("energy", "forces")),
        **{
            f"forces_and_u_{kind}": (lambda u=u: u.predict(model, batch, ("energy", "forces")))
            for kind, u in uncertainties.items()
        },
        "ensemble_of_5": lambda: ensemble_predict(members, batch),
    }
    for call in calls.values():  # warm-up: numba kernels, allocator
        call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(cpu_per_call(call, n_calls))
    return {name: statistics.median(values) for name, values in times.items()}


def md_steps(model, uncertainties: dict, n_steps: int, repeats: int) -> dict:
    sketched, last_layer = uncertainties["sketched"], uncertainties["last-layer"]

    def step_time(term) -> float:
        state = aspirin_state(REPLICAS, seed=1)
        cpu = time.process_time()
        run(state, langevin(0.5, seed=1), term, n_steps, progress=False)
        return (time.process_time() - cpu) / (n_steps + 1)  # + the first evaluation

    terms = {
        "plain": lambda: ModelForces(model),
        "biased_sketched": lambda: UncertaintyBiasedForces(model, sketched, tau=0.25),
        "biased_last_layer": lambda: UncertaintyBiasedForces(model, last_layer, tau=0.25),
    }
    for make in terms.values():  # warm-up
        step_time(make())
    times = {name: [] for name in terms}
    for _ in range(repeats):
        for name, make in terms.items():
            times[name].append(step_time(make()))
    return {name: statistics.median(values) for name, values in times.items()}


def main(out_dir: Path, quick: bool) -> dict:
    threads = int(os.environ.get("STABLEMD_BENCH_THREADS", 1))
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    model = load_model(torch.float32)
    uncertainties = {kind: fitted_uncertainty(model, kind) for kind in ("sketched", "last-layer")}
    uncertainties["sketched_128"] = fitted_uncertainty(model, "sketched", 128)
    members = []
    for seed in range(5):
        torch.manual_seed(seed)
        members.append(type(model)(**model.hyperparameters()).to(torch.float32).eval())
    n_calls, n_steps, repeats = (2, 3, 1) if quick else (10, 10, 3)
    calls = force_calls(model, uncertainties, members, n_calls, repeats)
    steps = md_steps(model, uncertainties, n_steps, repeats)
    result = {
        "benchmark": "uncertainty_cost",
        "quick": quick,
        "model": os.environ.get("STABLEMD_BENCH_MODEL") or "untrained PaiNN (defaults)",
        "machine": {**machine_info(), "numba_threads": numba.get_num_threads()},
        "replicas": REPLICAS,
        "atoms": REPLICAS * len(get_system("aspirin").atoms),
        "projections": 512,
        "calls_per_repeat": n_calls,
        "steps_per_run": n_steps,
        "repeats": repeats,
        "cpu_s_per_call": calls,
        "ratio_forces_and_u_sketched": calls["forces_and_u_sketched"] / calls["forces"],
        "ratio_forces_and_u_sketched_128": calls["forces_and_u_sketched_128"] / calls["forces"],
        "ratio_forces_and_u_last_layer": calls["forces_and_u_last-layer"] / calls["forces"],
        "ratio_ensemble_of_5": calls["ensemble_of_5"] / calls["forces"],
        "cpu_s_per_md_step": steps,
        "ratio_biased_step_sketched": steps["biased_sketched"] / steps["plain"],
        "ratio_biased_step_last_layer": steps["biased_last_layer"] / steps["plain"],
        "goals": {"forces_and_u": 1.5, "biased_step": 2.5},
    }
    (out_dir / "uncertainty_cost.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    import sys

    tune_memory_allocator()
    out = Path(__file__).resolve().parent / "results"
    print(json.dumps(main(out, "--quick" in sys.argv), indent=1))
