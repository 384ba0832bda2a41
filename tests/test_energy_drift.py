"""NVE energy drift and per-element temperatures: conservative forces pass and
non-conservative ones fail on the same system; element temperatures read the bath's
temperature at equilibrium and the hand-computed value for velocities set by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.data import atomic_masses
from md_support import single_thread  # noqa: F401

from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.diagnose.energy_drift import (
    element_temperatures,
    energy_drift_from_series,
    least_squares_slope,
    nve_energy_drift,
    thermostat_element_temperatures,
)
from stablemd.md.forces import ForceResult, ModelForces
from stablemd.md.integrators import make_integrator
from stablemd.md.starts import initial_state, state_from_atoms
from stablemd.md.velocities import temperature
from stablemd.models.painn import PaiNN
from stablemd.models.potential import predict

pytestmark = pytest.mark.usefixtures("single_thread")


class SpringNetwork:
    """E = ½ k Σ_{i<j} (|r_ij| − d_ij)² over all pairs of each replica, rest lengths d_ij those
    of ``atoms``: conservative, translation and rotation invariant, minimum at ``atoms``."""

    def __init__(self, atoms, k: float = 20.0):
        self.k, self.n = k, len(atoms)
        self.i, self.j = torch.triu_indices(self.n, self.n, 1)
        p = torch.as_tensor(atoms.positions, dtype=torch.float64)
        self.rest = (p[self.j] - p[self.i]).norm(dim=1)

    def __call__(self, state):
        x = state.positions.detach().view(state.n_systems, self.n, 3).requires_grad_(True)
        r = (x[:, self.j] - x[:, self.i]).norm(dim=-1)
        energy = 0.5 * self.k * (r - self.rest).square().sum(1)
        (grad,) = torch.autograd.grad(energy.sum(), x)
        forces = -grad.reshape(-1, 3) * state.active_atoms[:, None]
        return ForceResult(energy.detach() * state.active, forces)


class Swirl:
    """f = c ẑ × (r − centroid) on every atom: a curl with no energy, non-conservative."""

    def __init__(self, c: float):
        self.c = c

    def __call__(self, state):
        centroid = state.sum_per_system(state.positions) / state.atoms_per_system[:, None]
        x = state.positions - centroid[state.system_index]
        f = self.c * torch.stack([-x[:, 1], x[:, 0], torch.zeros_like(x[:, 0])], 1)
        energy = torch.zeros(state.n_systems, dtype=torch.float64)
        return ForceResult(energy, f * state.active_atoms[:, None])


class DirectForces:
    """The direct-force head of a model (times ``scale``) as a force term, shaped like
    ``ModelForces``; its energy is the energy head's."""

    def __init__(self, potential, scale: float = 1.0):
        self.potential, self.scale = potential.eval(), scale

    def __call__(self, state):
        out = predict(self.potential, state.batch(), ("energy", "direct_forces"))
        forces = self.scale * out["direct_forces"].detach() * state.active_atoms[:, None]
        return ForceResult(out["energy"].detach() * state.active, forces)


def summed(*terms):
    def term(state):
        result = terms[0](state)
        for other in terms[1:]:
            result = result + other(state)
        return result

    return term


def test_least_squares_slope_of_a_line():
    time = np.linspace(0.0, 3.0, 31)
    values = np.stack([2.5 * time - 1.0, -0.25 * time + 4.0], axis=1)
    np.testing.assert_allclose(least_squares_slope(time, values), [2.5, -0.25], rtol=1e-12)


def test_drift_score_of_known_series():
    """C = C₀ + a t, E_kin a sine of known spread: slope a/N per atom and score
    |a × duration| / std(E_kin), by hand; a non-finite tail is left out of the fit."""
    time_fs = np.arange(0.0, 2001.0, 10.0)
    time_ps = time_fs / 1000
    a = np.array([0.3, -0.05])  # eV/ps
    conserved = -12.0 + np.outer(time_ps, a)
    kinetic = 1.0 + 0.2 * np.sin(2 * np.pi * time_ps[:, None] / 0.1) * [1.0, 2.0]
    temperature_K = 300 + np.outer(time_ps, [7.0, -3.0])
    conserved[-5:, 1] = np.nan  # replica 1 blew up at the end
    result = energy_drift_from_series(time_fs, conserved, kinetic, temperature_K, [9, 3])
    np.testing.assert_allclose(result.slope_eV_per_atom_per_ps, a / [9, 3], rtol=1e-10)
    np.testing.assert_allclose(result.duration_ps, [2.0, 1.95], rtol=1e-12)
    spread = [kinetic[:, 0].std(), kinetic[:-5, 1].std()]
    np.testing.assert_allclose(result.score, np.abs(a) * [2.0, 1.95] / spread, rtol=1e-10)
    np.testing.assert_allclose(result.temperature_drift_K_per_ps, [7.0, -3.0], rtol=1e-10)
    assert result.non_finite.tolist() == [False, True]
    assert result.passed == (result.score.mean() <= 1)


def test_conservative_forces_pass_and_a_curl_fails():
    ethanol = molecule("CH3CH2OH")
    springs = SpringNetwork(ethanol)
    kwargs = dict(timestep_fs=0.5, n_steps=600, every=10, replicas=3, temperature_K=300.0)
    good = nve_energy_drift(springs, [ethanol], **kwargs)
    bad = nve_energy_drift(summed(springs, Swirl(0.5)), [ethanol], **kwargs)
    assert good.passed and good.max_score < 0.1, good.score  # measured 0.004–0.012
    assert abs(good.mean_slope_eV_per_atom_per_ps) < 1e-3
    assert not bad.passed and (bad.score > 1).all(), bad.score
    assert (bad.slope_eV_per_atom_per_ps > 0).all()  # the curl only ever heats here
    assert (bad.temperature_drift_K_per_ps > 1000).all()
    assert good.time_fs.shape == (61,) and good.conserved_eV.shape == (61, 3)
    assert good.time_fs[-1] == pytest.approx(300.0)
    assert not good.non_finite.any()


def test_painn_energy_head_passes_and_its_direct_head_fails():
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], cutoff=5.0, n_features=8, n_interactions=1).double().eval()
    ethanol = molecule("CH3CH2OH")
    springs = SpringNetwork(ethanol)
    kwargs = dict(timestep_fs=0.5, n_steps=300, every=5, replicas=2)
    conservative = nve_energy_drift(summed(springs, ModelForces(model)), [ethanol], **kwargs)
    direct = nve_energy_drift(summed(springs, DirectForces(model, 3.0)), [ethanol], **kwargs)
    assert conservative.passed, conservative.score  # measured 0.11–0.12
    assert not direct.passed, direct.score  # measured 3.3


def test_element_temperatures_of_velocities_set_by_hand():
    water = molecule("H2O")  # O, H, H
    state = state_from_atoms([water, water])
    u = 0.01  # Å/fs
    velocities = torch.zeros(6, 3, dtype=torch.float64)
    velocities[0:3] = torch.tensor([0.3, -0.2, 0.1])  # replica 0: the molecule only translates
    velocities[4, 0], velocities[5, 0] = u, -u  # replica 1: the hydrogens move apart
    state.velocities = velocities
    elements, values = element_temperatures(state)
    assert elements.tolist() == [1, 8]
    torch.testing.assert_close(values[0], torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)
    m_h, m_o = atomic_masses[1], atomic_masses[8]
    total = 2 * m_h + m_o
    # Two hydrogens, ½ m u² each, hold 2·3(1 − m_H/M) of the 3N − 3 = 6 degrees of freedom.
    kinetic_ev = m_h * u**2 * 103.642696562  # 2 × ½ m_H u², amu Å²/fs² → eV
    expected_h = 2 * kinetic_ev / (KB_EV_PER_K * 6 * (1 - m_h / total))
    assert float(values[1, 0]) == pytest.approx(expected_h, rel=1e-6)
    assert float(values[1, 1]) == pytest.approx(0.0, abs=1e-12)
    # The degrees-of-freedom-weighted mean is the replica's kinetic temperature.
    dof = torch.tensor([6 * (1 - m_h / total), 3 * (1 - m_o / total)], dtype=torch.float64)
    assert float((values[1] * dof).sum() / dof.sum()) == pytest.approx(
        float(temperature(state)[1]), rel=1e-12
    )


def test_every_element_reads_the_langevin_temperature():
    """Equipartition: with COM motion and each element's share of the 3N − 3 degrees of freedom
    counted, every element of ethanol reads the bath's 300 K (the plain 3 N_Z would put carbon
    26 % and oxygen 35 % low)."""
    ethanol = molecule("CH3CH2OH")
    integrator = make_integrator("langevin", 0.5, 300.0, 0.02, 100.0, seed=3)
    result = thermostat_element_temperatures(
        SpringNetwork(ethanol), [ethanol], integrator, n_steps=3000, every=10,
        discard_fs=200.0, replicas=12, temperature_K=300.0, seed=1,
    )  # fmt: skip
    assert result.elements.tolist() == [1, 6, 8]
    error = result.mean_per_replica_K.std(0, ddof=1) / np.sqrt(12)
    assert (error < 0.04 * 300).all(), error
    assert (np.abs(result.mean_K - 300.0) < 4 * error).all(), (result.mean_K, error)
    assert result.temperature_K.shape == (301, 12, 3)


def test_bad_runs_are_refused():
    ethanol = molecule("CH3CH2OH")
    with pytest.raises(InputError, match="two recording intervals"):
        nve_energy_drift(SpringNetwork(ethanol), [ethanol], n_steps=10, every=10)
    state = initial_state([ethanol, molecule("H2O")], 2, 300.0, 0)
    if set(state.numbers[state.system_index == 0].tolist()) != {1, 6, 8}:
        state = initial_state([molecule("H2O"), ethanol], 2, 300.0, 0)
    with pytest.raises(InputError, match="no atom of element"):
        element_temperatures(state)
