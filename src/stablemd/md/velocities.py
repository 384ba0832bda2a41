"""Kinetic temperature and Maxwell–Boltzmann velocities, per replica.

Every replica has its centre-of-mass momentum removed, so it has 3N − 3 degrees of freedom.
Velocities are Å/fs, masses amu, temperatures K.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from stablemd.core.units import KB_EV_PER_K
from stablemd.md.state import AMU_A2_PER_FS2_IN_EV, MDState


def degrees_of_freedom(state: MDState) -> torch.Tensor:
    """3N − 3 per replica [n_systems] float64 (at least 1, so a lone atom has T = 0)."""
    return (3 * state.atoms_per_system - 3).clamp_min(1).to(state.positions.dtype)


def temperature(state: MDState) -> torch.Tensor:
    """Kinetic temperature per replica [n_systems], K."""
    return 2 * state.kinetic_energy() / (degrees_of_freedom(state) * KB_EV_PER_K)


def remove_com_momentum(state: MDState, velocities: torch.Tensor) -> torch.Tensor:
    """``velocities`` [n_atoms, 3] with each replica's total momentum subtracted."""
    masses = state.masses[:, None]
    momentum = state.sum_per_system(masses * velocities)
    total_mass = state.sum_per_system(state.masses)
    return velocities - (momentum / total_mass[:, None])[state.system_index]


def thermal_velocities(
    state: MDState, temperature_K: float, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian velocities of variance k_B T / m per component, COM momentum removed.

    Projecting out the total momentum leaves exactly the Maxwell–Boltzmann distribution
    conditioned on zero momentum (3N − 3 degrees of freedom).
    """
    kt = KB_EV_PER_K * temperature_K
    sigma = torch.sqrt(kt / (state.masses * AMU_A2_PER_FS2_IN_EV))[:, None]
    noise = torch.randn(state.positions.shape, generator=generator, dtype=state.positions.dtype)
    return remove_com_momentum(state, sigma * noise)


def maxwell_boltzmann(
    state: MDState,
    temperature_K: float,
    generator: torch.Generator | int = 0,
    exact: bool = False,
) -> MDState:
    """``state`` with velocities drawn at ``temperature_K`` (seed or generator).

    ``exact=True`` rescales each replica to exactly ``temperature_K``.
    """
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    velocities = thermal_velocities(state, temperature_K, generator)
    state = replace(state, velocities=velocities)
    if exact and temperature_K > 0:
        scale = torch.sqrt(temperature_K / temperature(state).clamp_min(1e-300))
        state = replace(state, velocities=velocities * scale[state.system_index, None])
    return state
