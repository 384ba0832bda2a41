"""The ASE calculator of a model: agrees with ASE's numerical derivatives, drives ASE MD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from stablemd.ase import Calculator
from stablemd.models.painn import PaiNN
from stablemd.models.registry import save_potential


def small_painn(elements, dtype=torch.float64):
    torch.manual_seed(0)
    return PaiNN(elements=elements, n_features=16, n_interactions=2, cutoff=4.0).to(dtype)


def test_forces_match_ase_numerical_forces_and_file_round_trip(tmp_path):
    path = tmp_path / "model.pt"
    save_potential(small_painn([1, 6, 8]), path)
    atoms = molecule("CH3CH2OH")
    atoms.calc = Calculator.from_file(path)
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-4), atol=1e-6)
    # The per-atom energies add up to the total (up to summation order).
    assert atoms.get_potential_energies().sum() == pytest.approx(
        atoms.get_potential_energy(), rel=1e-14
    )


def test_stress_matches_ase_numerical_stress():
    atoms = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    atoms.calc = Calculator(small_painn([29]))
    np.testing.assert_allclose(
        atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-5), atol=1e-7
    )


def test_ase_velocity_verlet_conserves_energy_with_the_model():
    atoms = molecule("CH3CH2OH")
    atoms.calc = Calculator(small_painn([1, 6, 8]))
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    start = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.25 * units.fs).run(200)
    assert abs(atoms.get_total_energy() - start) < 1e-3 * len(atoms)
