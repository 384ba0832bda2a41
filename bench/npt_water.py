"""Density of SPC/Fw water at 300 K and 1 bar: stablemd's barostat against OpenMM's own.

The same OpenMM system (64 flexible SPC/Fw waters, :func:`stablemd.oracles.spcfw.build_system`,
PME, a fixed 5.5 Å cutoff (under half the smallest box the density may reach) with the
long-range dispersion correction, OpenMM's CPU platform on one thread) is run twice from the
relaxed built-in box (0.997 g/cm³):

- **stablemd**: the batched engine with OpenMM as its force term, stochastic cell rescaling
  (τ_p = 500 fs, β_T = 4.5e-5 /bar) and Langevin noise (OBABO, γ = 1/ps), 0.5 fs steps. The
  force term gives the isotropic stress from two extra energies at strains ±1e-4 (the
  barostat only needs the trace);
- **openmm**: ``LangevinMiddleIntegrator`` (γ = 1/ps, 0.5 fs) with ``MonteCarloBarostat``
  (volume moves every 25 steps).

Each records the volume every 10 fs after a burn-in; the mean density's error is the standard
error over blocks of 2.5 ps. The literature value for SPC/Fw at 300 K (Wu, Tepper & Voth 2006,
larger box and cutoff) is about 1.01 g/cm³. One command, in the background at one thread:
``OMP_NUM_THREADS=1 python bench/npt_water.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import torch
from machine import machine_info
from openmm import unit

from stablemd.core.units import KJ_PER_MOL_IN_EV
from stablemd.md.forces import ForceResult
from stablemd.md.monitoring import Observer
from stablemd.md.runner import run
from stablemd.md.settings import MDSettings
from stablemd.md.starts import initial_state
from stablemd.md.state import MDState
from stablemd.oracles.spcfw import build_system, whole_molecules
from stablemd.systems import get_system
from stablemd.systems.water import G_PER_CM3_IN_AMU_PER_A3

TEMPERATURE_K = 300.0
PRESSURE_BAR = 1.0
TIMESTEP_FS = 0.5
CUTOFF_A = 5.5
BAROSTAT_TIME_FS = 500.0
FRICTION_PER_FS = 0.001
RECORD_EVERY_FS = 10.0
BLOCK_PS = 2.5
STRAIN = 1e-4
_NM = 10.0


def _context(atoms, barostat: bool = False) -> openmm.Context:
    system = build_system(len(atoms) // 3, np.asarray(atoms.cell), CUTOFF_A, 1e-5)
    if barostat:
        system.addForce(openmm.MonteCarloBarostat(PRESSURE_BAR, TEMPERATURE_K, 25))
        integrator = openmm.LangevinMiddleIntegrator(
            TEMPERATURE_K, FRICTION_PER_FS * 1000, TIMESTEP_FS / 1000
        )
    else:
        integrator = openmm.VerletIntegrator(TIMESTEP_FS / 1000)
    platform = openmm.Platform.getPlatformByName("CPU")
    return openmm.Context(system, integrator, platform, {"Threads": "1"})


class OpenMMWater:
    """A force term of one OpenMM context: energy, forces and the isotropic stress
    tr(σ)/3 · I with tr(σ) = (1/V) dE/dε by central differences of an isotropic strain."""

    def __init__(self, atoms):
        self.context = _context(atoms)

    def _energy_forces(self, positions: np.ndarray, cell: np.ndarray, forces: bool):
        self.context.setPeriodicBoxVectors(*(openmm.Vec3(*row / _NM) for row in cell))
        self.context.setPositions(positions / _NM)
        state = self.context.getState(getEnergy=True, getForces=forces)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if not forces:
            return energy * KJ_PER_MOL_IN_EV, None
        f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        return energy * KJ_PER_MOL_IN_EV, f * (KJ_PER_MOL_IN_EV / _NM)

    def __call__(self, state: MDState) -> ForceResult:
        energy = torch.zeros(state.n_systems, dtype=torch.float64)
        forces = torch.zeros_like(state.positions)
        stress = torch.zeros(state.n_systems, 3, 3, dtype=torch.float64)
        counts = state.atoms_per_system.tolist()
        starts = np.cumsum([0, *counts])
        for s in torch.nonzero(state.active)[:, 0].tolist():
            atoms = slice(int(starts[s]), int(starts[s + 1]))
            cell = state.cell[s].numpy()
            positions = whole_molecules(state.positions[atoms].numpy(), cell)
            e, f = self._energy_forces(positions, cell, True)
            plus, _ = self._energy_forces(positions * (1 + STRAIN), cell * (1 + STRAIN), False)
            minus, _ = self._energy_forces(positions * (1 - STRAIN), cell * (1 - STRAIN), False)
            trace = (plus - minus) / (2 * STRAIN) / abs(np.linalg.det(cell))
            energy[s], forces[atoms] = e, torch.as_tensor(f)
            stress[s] = trace / 3 * torch.eye(3, dtype=torch.float64)
        return ForceResult(energy, forces, stress=stress)


class VolumeRecorder(Observer):
    name = "volume"

    def __init__(self, every: int, burn_in_step: int):
        super().__init__(every)
        self.burn_in_step = burn_in_step
        self.volumes: list[float] = []

    def __call__(self, state: MDState) -> None:
        if state.step >= self.burn_in_step:
            self.volumes.append(float(state.volume()[0]))


def density(volumes: np.ndarray, mass_amu: float) -> np.ndarray:
    """g/cm³ of ``mass_amu`` in ``volumes`` Å³."""
    return mass_amu / volumes / G_PER_CM3_IN_AMU_PER_A3


def block_estimate(values: np.ndarray, per_block: int) -> dict:
    """Mean and its standard error over consecutive blocks of ``per_block`` values."""
    n_blocks = len(values) // per_block
    blocks = values[: n_blocks * per_block].reshape(n_blocks, per_block).mean(axis=1)
    return {
        "mean": float(blocks.mean()),
        "error": float(blocks.std(ddof=1) / np.sqrt(n_blocks)),
        "blocks": n_blocks,
        "std_of_samples": float(values.std()),
    }


def run_stablemd(atoms, burn_in_ps: float, production_ps: float) -> dict:
    settings = MDSettings(
        replicas=1, temperature_K=TEMPERATURE_K, timestep_fs=TIMESTEP_FS,
        thermostat="langevin", friction_per_fs=FRICTION_PER_FS, seed=0,
        pressure_bar=PRESSURE_BAR, barostat_time_fs=BAROSTAT_TIME_FS,
    )  # fmt: skip
    state = initial_state([atoms], 1, TEMPERATURE_K, settings.seed)
    integrator = settings.integrator()
    every = round(RECORD_EVERY_FS / TIMESTEP_FS)
    burn_in = round(burn_in_ps * 1000 / TIMESTEP_FS)
    n_steps = burn_in + round(production_ps * 1000 / TIMESTEP_FS)
    recorder = VolumeRecorder(every, burn_in)
    conserved = []

    class Conserved(Observer):
        name = "conserved"

        def __call__(self, state: MDState) -> None:
            conserved.append(float(integrator.conserved_energy(state)[0]))

    started = time.perf_counter()
    result = run(
        state, integrator, OpenMMWater(atoms), n_steps,
        [recorder, Conserved(every * 100)], progress=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    drift = (conserved[-1] - conserved[0]) / (result.state.time_fs / 1000) / len(atoms)
    return {
        "volumes": np.array(recorder.volumes),
        "wall_time_s": wall,
        "ms_per_step": 1000 * wall / n_steps,
        "conserved_drift_eV_per_atom_per_ps": drift,
    }


def run_openmm(atoms, burn_in_ps: float, production_ps: float) -> dict:
    context = _context(atoms, barostat=True)
    context.setPositions(atoms.positions / _NM)
    context.setVelocitiesToTemperature(TEMPERATURE_K, 1)
    integrator = context.getIntegrator()
    every = round(RECORD_EVERY_FS / TIMESTEP_FS)
    started = time.perf_counter()
    integrator.step(round(burn_in_ps * 1000 / TIMESTEP_FS))
    volumes = []
    for _ in range(round(production_ps * 1000 / RECORD_EVERY_FS)):
        integrator.step(every)
        box = context.getState().getPeriodicBoxVolume().value_in_unit(unit.nanometer**3)
        volumes.append(box * _NM**3)
    wall = time.perf_counter() - started
    n_steps = round((burn_in_ps + production_ps) * 1000 / TIMESTEP_FS)
    return {"volumes": np.array(volumes), "wall_time_s": wall, "ms_per_step": 1000 * wall / n_steps}


def main(out_dir: Path, quick: bool = False) -> dict:
    torch.set_num_threads(1)
    atoms = get_system("water").atoms
    mass = float(atoms.get_masses().sum())
    burn_in_ps, ours_ps, openmm_ps = (0.5, 1.0, 2.0) if quick else (5.0, 25.0, 50.0)
    per_block = round(BLOCK_PS * 1000 / RECORD_EVERY_FS)
    if quick:
        per_block = 20
    runs = {
        "openmm": run_openmm(atoms, burn_in_ps, openmm_ps),
        "stablemd": run_stablemd(atoms, burn_in_ps, ours_ps),
    }
    result = {
        "system": f"{len(atoms) // 3} SPC/Fw waters, PME, cutoff {CUTOFF_A} Å, dispersion "
        "correction, OpenMM CPU platform (one thread)",
        "temperature_K": TEMPERATURE_K,
        "pressure_bar": PRESSURE_BAR,
        "timestep_fs": TIMESTEP_FS,
        "burn_in_ps": burn_in_ps,
        "block_ps": per_block * RECORD_EVERY_FS / 1000,
        "literature_density_g_cm3": 1.01,
        "quick": quick,
        "machine": machine_info(),
    }
    for name, done in runs.items():
        rho = density(done.pop("volumes"), mass)
        result[name] = {
            "production_ps": len(rho) * RECORD_EVERY_FS / 1000,
            "density_g_cm3": block_estimate(rho, per_block),
            **done,
        }
    ours, theirs = (result[k]["density_g_cm3"] for k in ("stablemd", "openmm"))
    difference = ours["mean"] - theirs["mean"]
    result["difference_g_cm3"] = difference
    result["difference_in_errors"] = difference / np.hypot(ours["error"], theirs["error"])
    result["stablemd"]["barostat"] = {"tau_fs": BAROSTAT_TIME_FS, "compressibility_per_bar": 4.5e-5}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "npt_water.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    results = Path(__file__).resolve().parent / "results"
    print(json.dumps(main(results, quick="--quick" in sys.argv), indent=1))
