"""Constant pressure (stochastic cell rescaling): the ideal gas's volume distribution, a harmonic
crystal's compressibility, the conserved quantity, frozen replicas, exact resume, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.neighborlist import neighbor_list
from md_support import ARGON_EPSILON_EV, ARGON_SIGMA_A, PairLJ, single_thread  # noqa: F401

from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.diagnose.trajectory.analysis import analyze_trajectory
from stablemd.md.barostats import BAR_IN_EV_PER_A3, WORK, StochasticCellRescaling
from stablemd.md.forces import CalculatorForces, ForceResult, ModelForces, model_force_term
from stablemd.md.integrators import BAOAB, make_integrator
from stablemd.md.monitoring import Observer
from stablemd.md.runner import run
from stablemd.md.settings import MDSettings
from stablemd.md.starts import initial_state
from stablemd.md.thermostats import LangevinNoise
from stablemd.models.painn import PaiNN
from stablemd.monitors.trajectory import TrajectoryWriter, read_replica

pytestmark = pytest.mark.usefixtures("single_thread")

TEMPERATURE_K = 300.0
KT = KB_EV_PER_K * TEMPERATURE_K


def zero_forces(state) -> ForceResult:
    """Non-interacting particles: no energy, no force, no stress."""
    zeros = state.positions.new_zeros
    return ForceResult(zeros(state.n_systems), zeros(state.positions.shape),
                       stress=zeros(state.n_systems, 3, 3))  # fmt: skip


class SpringCrystal:
    """A harmonic crystal: springs k (eV/Å²) of rest length r0 (Å) between the nearest
    neighbours of a perfect fcc lattice (fixed pairs and lattice images), energy, forces and
    stress by autograd over all replicas at once (each with its own cell)."""

    def __init__(self, atoms: Atoms, k: float = 1.0, nearest: float = 3.75):
        i, j, shifts, d = neighbor_list("ijSd", atoms, 1.2 * nearest)
        keep = i < j
        self.i, self.j = torch.as_tensor(i[keep]), torch.as_tensor(j[keep])
        self.shifts = torch.as_tensor(shifts[keep], dtype=torch.float64)
        self.r0, self.k, self.n = float(d.min()), k, len(atoms)

    def __call__(self, state) -> ForceResult:
        n_replicas = state.n_systems
        positions = state.positions.detach().view(n_replicas, self.n, 3).requires_grad_(True)
        strain = torch.zeros(n_replicas, 3, 3, dtype=torch.float64, requires_grad=True)
        deform = torch.eye(3, dtype=torch.float64) + 0.5 * (strain + strain.transpose(1, 2))
        r = positions @ deform
        cell = state.cell @ deform
        bonds = r[:, self.j] - r[:, self.i] + torch.einsum("bk,rkl->rbl", self.shifts, cell)
        energy = (0.5 * self.k * (bonds.norm(dim=2) - self.r0).square()).sum(dim=1)
        grad_r, grad_strain = torch.autograd.grad(energy.sum(), (positions, strain))
        stress = grad_strain / state.volume()[:, None, None]
        return ForceResult(energy.detach(), -grad_r.reshape(-1, 3), stress=stress)

    def static_pressure(self, atoms: Atoms, scale: float) -> float:
        """−tr(σ)/3 of the perfect lattice with lengths scaled by ``scale``, eV/Å³."""
        state = initial_state([atoms], 1, TEMPERATURE_K, 0)
        state.positions, state.cell = state.positions * scale, state.cell * scale
        return float(-torch.diagonal(self(state).stress[0]).sum() / 3)


class Volumes(Observer):
    """Records every replica's volume after the burn-in."""

    name = "volumes"

    def __init__(self, every: int, after_step: int = 0):
        super().__init__(every)
        self.after_step, self.values = after_step, []

    def __call__(self, state):
        if state.step > self.after_step:
            self.values.append(state.volume().numpy().copy())


def gas(n_atoms: int, replicas: int, volume: float, gamma_volumes: bool = False):
    """Replicas of ``n_atoms`` argon atoms placed at random in cubes of ``volume`` Å³, or with
    ``gamma_volumes`` of volumes drawn from the ideal gas's NPT distribution of that mean (so
    runs start in equilibrium and need no burn-in)."""
    rng = np.random.default_rng(0)
    volumes = [volume] * replicas
    if gamma_volumes:
        volumes = rng.gamma(n_atoms, volume / n_atoms, size=replicas)
    boxes = []
    for v in volumes:
        edge = v ** (1 / 3)
        positions = rng.uniform(0, edge, (n_atoms, 3))
        boxes.append(Atoms(f"Ar{n_atoms}", positions=positions, cell=[edge] * 3, pbc=True))
    return initial_state(boxes, replicas, TEMPERATURE_K, 0)


def crystal():
    return bulk("Ar", "fcc", a=5.3, cubic=True).repeat(2)


def npt(pressure: float, compressibility: float, tau_fs: float, dt: float, thermostat="csvr"):
    barostat = StochasticCellRescaling(pressure, TEMPERATURE_K, compressibility, tau_fs, seed=3)
    return make_integrator(thermostat, dt, TEMPERATURE_K, 0.01, 100.0, 4, barostat=barostat)


def mean_and_error(per_replica: np.ndarray) -> tuple[float, float]:
    """Mean over independent replicas and its standard error."""
    return per_replica.mean(), per_replica.std(ddof=1) / np.sqrt(len(per_replica))


def test_ideal_gas_volume_is_gamma_distributed_with_shape_n():
    """N atoms with zero total momentum (3N − 3 kinetic degrees of freedom) at pressure P:
    V ~ Gamma(N, k_BT/P), so ⟨V⟩ = N k_BT/P (not (N+1) k_BT/P, the count with the
    centre-of-mass momentum free) and var V = N (k_BT/P)²."""
    n = 8
    pressure = n * KT / 1000.0  # ⟨V⟩ = 1000 Å³
    integrator = npt(pressure, 1 / pressure, tau_fs=200.0, dt=2.0)
    volumes = Volumes(every=5)
    run(gas(n, 1024, 1000.0, gamma_volumes=True), integrator, zero_forces, 400, [volumes],
        progress=False)  # fmt: skip
    v = np.array(volumes.values)  # [frames, replicas]
    mean, mean_error = mean_and_error(v.mean(axis=0))
    variance, variance_error = mean_and_error(v.var(axis=0) + (v.mean(axis=0) - mean) ** 2)
    scale = KT / pressure
    assert mean_error < scale / 10  # sharp enough to tell N from N + 1 or N + 1/2
    assert abs(mean - n * scale) < 4 * mean_error, (mean, n * scale, mean_error)
    assert abs(variance - n * scale**2) < 4 * variance_error, (variance, n * scale**2)


def test_harmonic_crystal_volume_fluctuation_gives_its_compressibility():
    """var V = k_BT ⟨V⟩ κ_T, with κ_T = −(1/V) dV/dP from central differences of the static
    pressure of the lattice (the crystal is cold, so anharmonic corrections are small); ⟨V⟩
    near V₀(1 − κ_T P₀) (springs under thermal motion pull the lattice in by a few 1e-4 of V,
    so this part is coarse: the ideal gas pins the mean exactly)."""
    atoms, temperature = crystal(), 30.0
    springs = SpringCrystal(atoms)
    h = 1e-4
    v0 = atoms.get_volume()
    dp = springs.static_pressure(atoms, 1 + h) - springs.static_pressure(atoms, 1 - h)
    kappa = -((1 + h) ** 3 - (1 - h) ** 3) / dp  # Å³/eV
    pressure = 2000 * BAR_IN_EV_PER_A3
    barostat = StochasticCellRescaling(pressure, temperature, kappa, 100.0, seed=3)
    integrator = make_integrator("csvr", 5.0, temperature, 0.01, 100.0, 4, barostat=barostat)
    volumes = Volumes(every=4, after_step=100)
    run(initial_state([atoms], 32, temperature, 0), integrator, springs, 600, [volumes],
        progress=False)  # fmt: skip
    v = np.array(volumes.values)
    mean, mean_error = mean_and_error(v.mean(axis=0))
    variance, variance_error = mean_and_error(v.var(axis=0) + (v.mean(axis=0) - mean) ** 2)
    assert abs(mean - v0 * (1 - kappa * pressure)) < 4 * mean_error + 5e-4 * v0
    expected = KB_EV_PER_K * temperature * mean * kappa
    assert variance_error < 0.1 * expected
    assert abs(variance - expected) < 4 * variance_error, (variance, expected, variance_error)


def effective_energy_deviation(system: str, dt: float) -> tuple[float, float]:
    """RMS over replicas of the largest deviation of H + P₀V + work from its start over 0.6 ps,
    and the typical spread of H + P₀V alone (what the barostat exchanged), eV."""
    if system == "crystal":
        atoms = crystal()
        term, start = SpringCrystal(atoms), initial_state([atoms], 8, 100.0, 1)
        pressure, compressibility = 1000 * BAR_IN_EV_PER_A3, 3.0
    else:
        term, start = zero_forces, gas(8, 16, 1000.0)
        pressure = 8 * KT / 1000.0
        compressibility = 1 / pressure
    integrator = npt(pressure, compressibility, tau_fs=100.0, dt=dt, thermostat="nve")
    conserved, work = [], []

    class Record(Observer):
        name = "record"

        def __call__(self, state):
            conserved.append(integrator.conserved_energy(state))
            work.append(state.thermostat[WORK])

    run(start, integrator, term, round(600 / dt), [Record(every=round(10 / dt))],
        progress=False)  # fmt: skip
    conserved, work = torch.stack(conserved), torch.stack(work)
    deviation = (conserved - conserved[0]).abs().max(dim=0).values.square().mean().sqrt()
    return float(deviation), float((conserved - work).std(dim=0).mean())


@pytest.mark.parametrize("system", ["crystal", "gas"])
def test_effective_energy_is_conserved_as_the_time_step_shrinks(system):
    """H + P₀V + the barostat's work stays within a fraction of what the barostat exchanged,
    and that deviation shrinks with the time step (the move is Metropolis-like: its error is a
    random walk of O(dt^1.5) steps, O(dt) over a fixed time); in the gas the volume changes by
    tens of per cent, so a missing Jacobian term ½k_BT log V would not shrink."""
    coarse, exchanged = effective_energy_deviation(system, 2.0)
    fine, _ = effective_energy_deviation(system, 1.0)
    assert fine < 0.15 * exchanged, (fine, exchanged)
    assert fine < 0.65 * coarse, (fine, coarse)


def test_frozen_replicas_keep_cell_positions_and_work():
    atoms = crystal()
    springs = SpringCrystal(atoms)
    integrator = npt(1000 * BAR_IN_EV_PER_A3, 3.0, tau_fs=100.0, dt=2.0)
    state = integrator.prepare(initial_state([atoms], 3, 100.0, 1), springs)
    state.active = torch.tensor([True, False, True])
    later = state
    for _ in range(20):
        later = integrator.step(later, springs)
    frozen = state.system_index == 1
    assert torch.equal(later.positions[frozen], state.positions[frozen])
    assert torch.equal(later.velocities[frozen], state.velocities[frozen])
    assert torch.equal(later.cell[1], state.cell[1])
    assert later.thermostat[WORK][1] == 0
    assert not torch.equal(later.cell[0], state.cell[0])


def test_resumed_npt_run_equals_uninterrupted_run(tmp_path):
    atoms = crystal()
    springs = SpringCrystal(atoms)

    def fresh():
        return npt(1000 * BAR_IN_EV_PER_A3, 3.0, tau_fs=100.0, dt=2.0, thermostat="langevin")

    start = initial_state([atoms], 2, 100.0, 1)
    reference = run(start, fresh(), springs, 60, progress=False).state
    checkpoint = tmp_path / "npt.pt"
    run(start, fresh(), springs, 25, checkpoint=checkpoint, progress=False)
    resumed = run(start, fresh(), springs, 60, checkpoint=checkpoint, progress=False).state
    assert resumed.step == 60
    for name in ("positions", "velocities", "cell", "stress", "forces"):
        assert torch.equal(getattr(resumed, name), getattr(reference, name)), name
    assert torch.equal(resumed.thermostat[WORK], reference.thermostat[WORK])
    with pytest.raises(InputError, match="npt.pt: this run used barostat="):
        other = StochasticCellRescaling(1.0 * BAR_IN_EV_PER_A3, TEMPERATURE_K, 3.0, 100.0)
        integrator = make_integrator("langevin", 2.0, TEMPERATURE_K, 0.01, 100.0, 4, other)
        run(start, integrator, springs, 70, checkpoint=checkpoint, progress=False)


def test_without_pressure_the_run_is_the_constant_volume_one():
    """pressure_bar None: BAOAB as before, no stress asked, the cell untouched, bit for bit."""
    atoms = crystal()
    springs = SpringCrystal(atoms)

    def constant_volume(state):
        result = springs(state)
        result.stress = None
        return result

    settings = MDSettings(thermostat="langevin", temperature_K=100.0, timestep_fs=2.0)
    assert settings.barostat() is None
    integrator = settings.integrator()
    assert isinstance(integrator, BAOAB)
    start = initial_state([atoms], 2, 100.0, 1)
    ours = run(start, integrator, constant_volume, 30, progress=False).state
    reference = BAOAB(2.0, LangevinNoise(100.0, 0.01, seed=1))
    theirs = run(start, reference, constant_volume, 30, progress=False).state
    assert torch.equal(ours.positions, theirs.positions)
    assert torch.equal(ours.cell, start.cell) and ours.stress is None


def test_a_barostat_refuses_molecules_in_vacuum_and_terms_without_stress():
    molecule = Atoms("Ar2", positions=[[0, 0, 0], [3.8, 0, 0]])
    integrator = npt(1 * BAR_IN_EV_PER_A3, 3.0, tau_fs=100.0, dt=2.0)
    with pytest.raises(InputError, match="replica 0 is not periodic"):
        integrator.prepare(initial_state([molecule], 1, 100.0, 0), zero_forces)

    def no_stress(state):
        result = zero_forces(state)
        result.stress = None
        return result

    with pytest.raises(InputError, match="gives no stress"):
        integrator.prepare(gas(4, 1, 500.0), no_stress)
    with pytest.raises(ValueError, match="conservative forces without multiple time stepping"):
        MDSettings(pressure_bar=1.0, mts=4)
    direct_only = PaiNN([18], n_features=8, n_interactions=1)
    direct_only.metadata = {"training": {"config": {"forces": "direct"}}}
    with pytest.raises(InputError, match="m.pt was trained with direct forces only.*stress"):
        model_force_term(direct_only, model="m.pt", stress=True)
    with pytest.raises(InputError, match="forces=direct: a barostat needs the stress"):
        model_force_term(direct_only, forces="direct", stress=True)
    assert model_force_term(direct_only, forces="conservative", stress=True).stress


def test_model_and_calculator_stress_agree_and_frozen_replicas_get_zeros():
    """ModelForces and CalculatorForces give the same stress (Lennard-Jones argon in a periodic
    box, as a potential and as ASE's calculator); a frozen replica gets zeros."""
    atoms = crystal()
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    state = initial_state([atoms], 3, 100.0, 0)
    state.active = torch.tensor([True, False, True])
    model = ModelForces(PairLJ(cutoff=7.0), stress=True)(state)
    ase_lj = LennardJones(epsilon=ARGON_EPSILON_EV, sigma=ARGON_SIGMA_A, rc=7.0, smooth=False)
    calculator = CalculatorForces(ase_lj, stress=True)(state)
    assert torch.equal(model.stress[1], torch.zeros(3, 3))
    torch.testing.assert_close(model.stress, calculator.stress, rtol=1e-9, atol=1e-12)
    assert float(model.stress[0].abs().max()) > 1e-5
    assert ModelForces(PairLJ(cutoff=7.0))(state).stress is None
    with pytest.raises(ValueError, match="with stress to one without"):
        model + ModelForces(PairLJ(cutoff=7.0))(state)


def test_trajectory_records_each_replicas_cell_and_volume(tmp_path):
    atoms = crystal()
    springs = SpringCrystal(atoms)
    integrator = npt(1000 * BAR_IN_EV_PER_A3, 3.0, tau_fs=100.0, dt=2.0)
    path = tmp_path / "npt.h5"
    with TrajectoryWriter(path, integrator, every=10) as writer:
        run(initial_state([atoms], 2, 100.0, 1), integrator, springs, 40, [writer],
            progress=False)  # fmt: skip
    data = read_replica(path, 1)
    assert data["cell"].shape == (5, 3, 3)
    np.testing.assert_allclose(data["volume"], np.abs(np.linalg.det(data["cell"])), rtol=1e-12)
    assert data["volume"].std() > 0
    with pytest.raises(InputError, match="box changes from frame to frame"):
        analyze_trajectory(path, tmp_path / "analysis")
