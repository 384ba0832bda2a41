"""Integrators: agreement with ASE, canonical sampling (kinetic and configurational, degrees of
freedom counted here, not taken from the code under test), conserved quantities, frozen
replicas, multiple time stepping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import molecule
from ase.calculators.lj import LennardJones
from ase.md.verlet import VelocityVerlet as AseVelocityVerlet
from md_support import (
    ARGON_EPSILON_EV,
    ARGON_SIGMA_A,
    ClusterLJ,
    PairLJ,
    argon_cluster,
    argon_state,
    run_steps,
    single_thread,  # noqa: F401
)
from scipy import stats

from stablemd.ase import Calculator
from stablemd.core.units import KB_EV_PER_K
from stablemd.md.forces import CalculatorForces, ForceLevels, ForceResult, ModelForces
from stablemd.md.integrators import RESPA, VelocityVerlet, make_integrator
from stablemd.md.starts import state_from_atoms
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.models.painn import PaiNN

pytestmark = pytest.mark.usefixtures("single_thread")

ARGON_T_K = 20.0
ARGON_DT_FS = 10.0


def thermostats(tau_fs: float = 200.0) -> dict:
    names = ("langevin", "nose-hoover", "csvr")
    return {
        name: make_integrator(name, ARGON_DT_FS, ARGON_T_K, 1 / tau_fs, tau_fs, seed=1)
        for name in names
    }


class CentroidSprings:
    """E = ½ K Σ_i |r_i − c|² per replica, c the replica's centroid: 3N − 3 harmonic modes and
    no force on the centre of mass, so ⟨Σ_i |r_i − c|²⟩ = (3N − 3) k_B T / K exactly."""

    def __init__(self, stiffness_eV_per_A2: float):
        self.k = stiffness_eV_per_A2

    def __call__(self, state):
        centroid = state.sum_per_system(state.positions) / state.atoms_per_system[:, None]
        offset = state.positions - centroid[state.system_index]
        energy = 0.5 * self.k * state.sum_per_system(offset.square().sum(-1))
        return ForceResult(energy * state.active, -self.k * offset * state.active_atoms[:, None])


def ase_agreement(atoms, calculator, forces_fn, timestep_fs, temperature_K, n_steps=1000):
    """Largest position difference (Å) between our NVE run and ASE's VelocityVerlet."""
    state = maxwell_boltzmann(state_from_atoms([atoms]), temperature_K, 0)
    reference = atoms.copy()
    reference.calc = calculator
    reference.set_velocities(state.velocities.numpy() / units.fs)
    ours = run_steps(VelocityVerlet(timestep_fs), state, forces_fn, n_steps)
    AseVelocityVerlet(reference, timestep=timestep_fs * units.fs).run(n_steps)
    moved = np.abs(reference.positions - atoms.positions).max()
    return np.abs(reference.positions - ours.positions.numpy()).max(), moved


def test_velocity_verlet_matches_ase_on_lennard_jones():
    calculator = LennardJones(epsilon=ARGON_EPSILON_EV, sigma=ARGON_SIGMA_A, rc=30.0)
    difference, moved = ase_agreement(
        argon_cluster(), calculator, CalculatorForces(calculator), ARGON_DT_FS, ARGON_T_K
    )
    assert moved > 0.1
    assert difference < 1e-8


def test_velocity_verlet_matches_ase_with_painn_calculator():
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1).double()
    model.energy_scaling.scale.fill_(0.1)  # gentle forces keep 1000 steps out of chaos
    difference, moved = ase_agreement(
        molecule("CH3CH2OH"), Calculator(model), ModelForces(model), 0.25, 100.0
    )
    assert moved > 0.1
    assert difference < 1e-8


@pytest.mark.parametrize("name", ["langevin", "nose-hoover", "csvr"])
def test_thermostat_samples_canonical_kinetic_energy(name):
    """KE of 64 Ar13 replicas (3N − 3 = 36 dof) vs Gamma(dof/2, k_B T).

    3200 samples (every 0.4 ps after 8 ps of equilibration), correlated, so effectively ≈ 800:
    standard errors ≈ 0.8 % on the mean and ≈ 5 % on the variance. Tolerances: mean 3 %,
    variance 15 %, KS p-value > 1e-3. NVE from the same start fails all three (mean ≈ 0.5,
    variance ≈ 0.15).
    """
    integrator = thermostats()[name]
    forces = ClusterLJ()
    state = maxwell_boltzmann(argon_state(64), ARGON_T_K, 0)
    state = run_steps(integrator, state, forces, 800)
    samples = []
    for _ in range(50):
        state = run_steps(integrator, state, forces, 40)
        samples.append(state.kinetic_energy())
    kt = KB_EV_PER_K * ARGON_T_K
    shape = (3 * 13 - 3) / 2  # 13 atoms, total momentum zero
    reduced = (torch.stack(samples) / kt).flatten().numpy()
    assert abs(reduced.mean() / shape - 1) < 0.03
    assert abs(reduced.var() / shape - 1) < 0.15
    assert stats.kstest(reduced, stats.gamma(shape).cdf).pvalue > 1e-3


@pytest.mark.parametrize("name", ["nve", "langevin", "nose-hoover", "csvr"])
def test_conserved_quantity_does_not_drift(name):
    """Ar13 at 20 K, 2000 steps of 10 fs while the thermostat heats the replicas from the
    minimum (> 10 k_B T exchanged): the fitted drift of the conserved quantity over the run is
    below 0.5 % of k_B T per replica in NVE and 5 % with a thermostat (measured: 0.1 %, 1–3 %;
    the error is the O(Δt²) integration error, 4× smaller at half the time step)."""
    integrator = {"nve": VelocityVerlet(ARGON_DT_FS), **thermostats()}[name]
    forces = ClusterLJ()
    state = integrator.prepare(maxwell_boltzmann(argon_state(16), ARGON_T_K, 0), forces)
    conserved, total = [], []
    for _ in range(100):
        state = run_steps(integrator, state, forces, 20)
        conserved.append(integrator.conserved_energy(state))
        total.append(state.potential_energy + state.kinetic_energy())
    conserved, total = torch.stack(conserved), torch.stack(total)
    time = torch.arange(len(conserved), dtype=torch.float64)
    centred = time - time.mean()
    slope = (centred[:, None] * (conserved - conserved.mean(0))).sum(0) / centred.square().sum()
    kt = KB_EV_PER_K * ARGON_T_K
    bound = 0.005 if name == "nve" else 0.05
    assert (slope * len(time)).abs().max() < bound * kt
    if name != "nve":
        assert (total - total[0]).abs().max() > 10 * kt


@pytest.mark.parametrize("name", ["nve", "langevin", "nose-hoover", "csvr"])
def test_frozen_replicas_stay_put_and_cost_nothing(name):
    integrator = {"nve": VelocityVerlet(ARGON_DT_FS), **thermostats()}[name]
    model = PairLJ()
    forces = ModelForces(model)
    state = maxwell_boltzmann(argon_state(4), ARGON_T_K, 0)
    state = integrator.prepare(state, forces)
    state.active = torch.tensor([True, False, True, False])
    before = state.clone()
    model.atoms_evaluated = 0
    after = run_steps(integrator, state, forces, 10)
    assert model.atoms_evaluated == 10 * 2 * 13
    frozen, moving = state.system_index % 2 == 1, state.system_index % 2 == 0
    for field in ("positions", "velocities", "forces"):
        assert torch.equal(getattr(after, field)[frozen], getattr(before, field)[frozen])
    assert not torch.equal(after.positions[moving], before.positions[moving])
    assert torch.equal(after.potential_energy[1::2], before.potential_energy[1::2])
    for key, value in after.thermostat.items():
        assert torch.equal(value[1::2], before.thermostat.get(key, value)[1::2])


@pytest.mark.parametrize("name", ["langevin", "nose-hoover", "csvr"])
def test_thermostat_samples_canonical_positions_of_a_harmonic_system(name):
    """64 replicas of 4 argon atoms on centroid springs (3N − 3 = 9 modes of one frequency,
    period ≈ 200 fs), thermostat time 50 fs: ⟨Σ|r_i − c|²⟩ = 9 k_B T / K. 6400 samples every
    400 fs after 20 ps; the replicas' means spread by ≈ 4 %, so the standard error is ≈ 0.5 %:
    tolerance 4 %. Counting 3N instead of 3N − 3 degrees of freedom would give 12/9."""
    stiffness = 4.0
    springs = CentroidSprings(stiffness)
    integrator = thermostats(tau_fs=50.0)[name]
    atoms = argon_cluster()[:4]
    atoms.positions = 0.02 * np.random.default_rng(0).normal(size=(4, 3))  # near equilibrium
    state = maxwell_boltzmann(state_from_atoms([atoms] * 64), ARGON_T_K, 0)
    state = run_steps(integrator, state, springs, 2000)
    samples = []
    for _ in range(100):
        state = run_steps(integrator, state, springs, 40)
        centroid = state.sum_per_system(state.positions) / 4
        offset = state.positions - centroid[state.system_index]
        samples.append(state.sum_per_system(offset.square().sum(-1)))
    expected = 9 * KB_EV_PER_K * ARGON_T_K / stiffness
    assert abs(torch.stack(samples).mean().item() / expected - 1) < 0.04


def levels_of_argon():
    """Lennard-Jones as the fast level, weak centroid springs (period ≈ 30 ps) as the slow one."""
    return ForceLevels(ClusterLJ(), CentroidSprings(0.0002))


def test_respa_with_one_inner_step_is_velocity_verlet_bit_for_bit():
    levels = levels_of_argon()
    for name in ("nve", "nose-hoover", "csvr"):
        plain = make_integrator(name, ARGON_DT_FS, ARGON_T_K, 0.01, 200.0, seed=3)
        thermostat = plain.thermostat
        respa = RESPA(
            ARGON_DT_FS,
            1,
            make_integrator(name, ARGON_DT_FS, ARGON_T_K, 0.01, 200.0, seed=3).thermostat,
        )
        start = maxwell_boltzmann(argon_state(3), ARGON_T_K, 0)
        a = run_steps(plain, start, levels, 50)
        b = run_steps(respa, start, levels, 50)
        for field in ("positions", "velocities", "forces"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (name, field, thermostat)


def test_respa_without_slow_forces_is_velocity_verlet_at_the_inner_step():
    no_slow = ForceLevels(ClusterLJ(), CentroidSprings(0.0))
    start = maxwell_boltzmann(argon_state(3), ARGON_T_K, 0)
    inner = run_steps(VelocityVerlet(ARGON_DT_FS), start, ClusterLJ(), 40)
    outer = run_steps(RESPA(ARGON_DT_FS, 8), start, no_slow, 5)
    assert torch.equal(inner.positions, outer.positions)
    assert torch.equal(inner.velocities, outer.velocities)
    assert outer.step == 5 and outer.time_fs == pytest.approx(40 * ARGON_DT_FS)


def test_respa_conserves_energy_like_velocity_verlet_at_the_inner_step():
    """Ar13 with slow springs: 8 inner steps of 10 fs per outer step, 2 ps. The energy error of
    RESPA stays within twice that of velocity Verlet at 10 fs (RESPA's error is set by the
    fast forces' step; the slow ones vary little over 80 fs)."""
    levels = levels_of_argon()
    start = maxwell_boltzmann(argon_state(4), ARGON_T_K, 0)

    def spread(integrator, steps_per_sample, samples=25):
        state = integrator.prepare(start, levels)
        energies = []
        for _ in range(samples):
            state = run_steps(integrator, state, levels, steps_per_sample)
            energies.append(integrator.conserved_energy(state))
        energies = torch.stack(energies)
        return (energies - energies[0]).abs().max().item()

    verlet, respa = spread(VelocityVerlet(ARGON_DT_FS), 8), spread(RESPA(ARGON_DT_FS, 8), 1)
    assert respa < 2 * verlet + 1e-6 * KB_EV_PER_K * ARGON_T_K
    assert respa < 0.05 * KB_EV_PER_K * ARGON_T_K
