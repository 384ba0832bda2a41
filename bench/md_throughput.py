"""Throughput and energy conservation of the batched MD engine.

(a) 64 aspirin replicas in one batch (our Langevin BAOAB) vs the same 64 one after another
    with ASE's LangevinBAOAB and the model as an ASE calculator (``stablemd.ase``): same
    thermostat, time step and step count; atom-steps/s and their ratio.
(b) Engine overhead of a 64-replica aspirin run with a trajectory writer and a stability
    criterion: wall time outside force evaluation, as a fraction of the total.
(c) Water boxes of 64, 216 and 512 molecules (one replica each): wall time per atom-step.
(d) NVE energy conservation, float64 model, aspirin, 0.5 fs: per replica
    |slope of E_tot × duration| / std(E_kin) (≤ 1 passes), 10 ps (quick: 0.25 ps).

The model is an untrained PaiNN (default hyperparameters, float32 for (a)–(c)) unless
``STABLEMD_BENCH_MODEL`` names a model file. ``STABLEMD_BENCH_THREADS`` sets torch's threads.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.md.langevinbaoab import LangevinBAOAB
from machine import machine_info

from stablemd.ase import Calculator
from stablemd.md.forces import ModelForces
from stablemd.md.integrators import BAOAB, VelocityVerlet
from stablemd.md.monitoring import Observer
from stablemd.md.runner import run
from stablemd.md.starts import state_from_atoms
from stablemd.md.thermostats import LangevinNoise
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.models.painn import PaiNN
from stablemd.models.registry import load_potential
from stablemd.monitors.criteria import BondLengthDeviation
from stablemd.monitors.trajectory import TrajectoryWriter
from stablemd.systems import get_system

REPLICAS = 64
TEMPERATURE_K = 300.0
TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.01
WATER_SIZES = [64, 216, 512]
#: Steps run (and not timed) on each path of (a) before its timed run.
WARMUP_STEPS = 5


def load_model(dtype: torch.dtype):
    path = os.environ.get("STABLEMD_BENCH_MODEL")
    if path:
        return load_potential(path, dtype=dtype)
    torch.manual_seed(0)
    return PaiNN([1, 6, 8]).to(dtype).eval()


def aspirin_state(n_replicas: int, seed: int = 0):
    atoms = get_system("aspirin").atoms
    return maxwell_boltzmann(state_from_atoms([atoms] * n_replicas), TEMPERATURE_K, seed)


def langevin(timestep_fs: float, seed: int) -> BAOAB:
    return BAOAB(timestep_fs, LangevinNoise(TEMPERATURE_K, FRICTION_PER_FS, seed=seed))


def batched_vs_sequential(model, n_steps: int) -> dict:
    """(a): one batch of 64 replicas vs 64 ASE runs in turn, each path warmed up first."""
    state = aspirin_state(REPLICAS)
    integrator = langevin(TIMESTEP_FS, seed=0)
    run(state.clone(), integrator, ModelForces(model), WARMUP_STEPS, progress=False)
    result = run(state, integrator, ModelForces(model), n_steps, progress=False)
    batched = state.n_atoms * n_steps / result.wall_time_s

    calculator = Calculator(model)

    def ase_run(atoms, steps):
        atoms.calc = calculator
        LangevinBAOAB(
            atoms, TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K,
            T_tau=units.fs / FRICTION_PER_FS, rng=0,
        ).run(steps)  # fmt: skip

    replicas = state_to_atoms(state)
    ase_run(replicas[0].copy(), WARMUP_STEPS)
    started = time.perf_counter()
    for atoms in replicas:
        ase_run(atoms, n_steps)
    sequential = state.n_atoms * n_steps / (time.perf_counter() - started)
    return {
        "replicas": REPLICAS,
        "steps": n_steps,
        "batched_atom_steps_per_s": batched,
        "sequential_ase_atom_steps_per_s": sequential,
        "speedup": batched / sequential,
        "target_speedup": 10.0,
    }


def state_to_atoms(state):
    """Each replica as ASE ``Atoms`` with its velocities (ASE units)."""
    out = []
    for k, atoms in enumerate(state.batch().to_atoms()):
        atoms.set_velocities(state.velocities[state.system_index == k].numpy() / units.fs)
        out.append(atoms)
    return out


def engine_overhead(model, n_steps: int, out_dir: Path) -> dict:
    """(b): share of wall time outside force evaluation, with writer and criterion on."""
    system = get_system("aspirin")
    state = aspirin_state(REPLICAS, seed=1)
    integrator = langevin(TIMESTEP_FS, seed=1)
    every = 10
    criterion = BondLengthDeviation(system.bonds, system.reference_bond_lengths, every=every)
    path = out_dir / "md_throughput_trajectory.h5"
    with TrajectoryWriter(path, integrator, every=every) as writer:
        result = run(
            state, integrator, ModelForces(model), n_steps, [criterion, writer], progress=False
        )
    path.unlink()
    overhead = result.wall_time_s - result.force_time_s
    return {
        "replicas": REPLICAS,
        "steps": n_steps,
        "observers_every": every,
        "wall_s": result.wall_time_s,
        "force_s": result.force_time_s,
        "overhead_fraction": overhead / result.wall_time_s,
        "target_overhead_fraction": 0.10,
    }


def water_scaling(model, n_steps: int) -> dict:
    """(c): wall time per atom-step of one water box of each size."""
    rows = []
    for n_molecules in WATER_SIZES:
        system = get_system("water", n_molecules=n_molecules)
        state = maxwell_boltzmann(state_from_atoms([system.atoms]), TEMPERATURE_K, 0)
        integrator = langevin(system.timestep_fs, seed=0)
        forces = ModelForces(model)
        integrator.prepare(state, forces)  # warm-up
        result = run(state, integrator, forces, n_steps, progress=False)
        atom_steps = state.n_atoms * n_steps
        rows.append(
            {
                "molecules": n_molecules,
                "atoms": state.n_atoms,
                "us_per_atom_step": 1e6 * result.wall_time_s / atom_steps,
                "force_us_per_atom_step": 1e6 * result.force_time_s / atom_steps,
                "engine_us_per_atom_step": 1e6
                * (result.wall_time_s - result.force_time_s)
                / atom_steps,
            }
        )

    def growth(key: str) -> float:
        return rows[-1][key] / rows[0][key]

    return {
        "steps": n_steps,
        "boxes": rows,
        "growth_largest_over_smallest": growth("us_per_atom_step"),
        "force_growth": growth("force_us_per_atom_step"),
        "engine_growth": growth("engine_us_per_atom_step"),
        "target_growth": 1.5,
    }


def nve_drift(time_ps: float, n_replicas: int) -> dict:
    """(d): |slope of E_tot × duration| / std(E_kin) per replica, float64 model."""
    model = load_model(torch.float64)
    integrator = VelocityVerlet(TIMESTEP_FS)
    n_steps = round(time_ps * 1000 / TIMESTEP_FS)
    every = 10
    samples = Samples(integrator, every)
    result = run(
        aspirin_state(n_replicas, seed=2), integrator, ModelForces(model), n_steps, [samples],
        progress=False,
    )  # fmt: skip
    total, kinetic = np.array(samples.total), np.array(samples.kinetic)
    times = np.arange(len(total)) * every * TIMESTEP_FS
    slopes = np.polyfit(times, total, 1)[0]
    score = np.abs(slopes * times[-1]) / kinetic.std(axis=0)
    return {
        "replicas": n_replicas,
        "time_ps": time_ps,
        "timestep_fs": TIMESTEP_FS,
        "score_per_replica": score.tolist(),
        "score_median": float(np.median(score)),
        "score_max": float(score.max()),
        "passing_fraction": float((score <= 1).mean()),
        "wall_s": result.wall_time_s,
    }


class Samples(Observer):
    """Total and kinetic energy per replica at every call."""

    name = "energy_samples"

    def __init__(self, integrator, every: int):
        super().__init__(every)
        self.integrator = integrator
        self.total, self.kinetic = [], []

    def __call__(self, state) -> None:
        self.total.append(self.integrator.conserved_energy(state).numpy())
        self.kinetic.append(state.kinetic_energy().numpy())


#: Length of the NVE drift run in full mode (ps); 10 ps takes about an hour on 2 cores.
DRIFT_PS = float(os.environ.get("STABLEMD_BENCH_DRIFT_PS", 10.0))


def main(out_dir: Path, quick: bool) -> dict:
    torch.set_num_threads(int(os.environ.get("STABLEMD_BENCH_THREADS", 2)))
    model = load_model(torch.float32)
    result = {
        "benchmark": "md_throughput",
        "quick": quick,
        "model": os.environ.get("STABLEMD_BENCH_MODEL") or "untrained PaiNN (defaults)",
        "machine": machine_info(),
        "batched_vs_sequential": batched_vs_sequential(model, 5 if quick else 100),
        "engine_overhead": engine_overhead(model, 20 if quick else 200, out_dir),
        "water_scaling": water_scaling(model, 3 if quick else 20),
        "nve_drift": nve_drift(0.25 if quick else DRIFT_PS, 4 if quick else 16),
    }
    (out_dir / "md_throughput.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from run import run_as_script

    run_as_script(main)
