"""Maxwell–Boltzmann velocities: zero momentum, exact temperature, the right distribution."""

from __future__ import annotations

import pytest
import torch
from md_support import argon_state
from scipy import stats

from stablemd.core.units import KB_EV_PER_K
from stablemd.md.velocities import degrees_of_freedom, maxwell_boltzmann, temperature


def test_velocities_have_zero_momentum_and_exact_temperature():
    state = maxwell_boltzmann(argon_state(8), 300.0, 3, exact=True)
    momentum = state.sum_per_system(state.masses[:, None] * state.velocities)
    assert momentum.abs().max() < 1e-12
    assert torch.allclose(temperature(state), torch.full((8,), 300.0, dtype=torch.float64))
    same = maxwell_boltzmann(argon_state(8), 300.0, 3, exact=True)
    assert torch.equal(same.velocities, state.velocities)


def test_kinetic_energy_follows_gamma_distribution():
    """2000 independent replicas: KE / k_B T ~ Gamma((3N − 3)/2); mean within 1 % (SE 0.4 %),
    variance within 10 % (SE 3.4 %), KS p-value > 1e-3."""
    state = maxwell_boltzmann(argon_state(2000), 50.0, 0)
    reduced = (state.kinetic_energy() / (KB_EV_PER_K * 50.0)).numpy()
    shape = float(degrees_of_freedom(state)[0]) / 2
    assert reduced.mean() / shape == pytest.approx(1, abs=0.01)
    assert reduced.var() / shape == pytest.approx(1, abs=0.10)
    assert stats.kstest(reduced, stats.gamma(shape).cdf).pvalue > 1e-3
