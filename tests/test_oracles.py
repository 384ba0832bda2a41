"""Oracles: xTB and SPC/Fw forces against their energies, SPC/Fw against its analytic form."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import CalculationFailed, Calculator
from ase.calculators.fd import calculate_numerical_stress
from ase.units import Bohr, Hartree, kcal, mol

from stablemd.core.errors import InputError
from stablemd.oracles import SPCFwCalculator, get_oracle, label, level_of_theory, spcfw
from stablemd.systems import get_system

KCAL_MOL = kcal / mol
COULOMB_EV_A = Hartree * Bohr  # e²/(4πε0) in eV·Å


def central_differences(atoms, coordinates, h):
    """−∂E/∂x_(atom, axis) by central differences for the listed (atom, axis) pairs."""
    out = []
    for atom, axis in coordinates:
        energies = []
        for sign in (1, -1):
            displaced = atoms.copy()
            displaced.calc = atoms.calc
            displaced.positions[atom, axis] += sign * h
            energies.append(displaced.get_potential_energy())
        out.append(-(energies[0] - energies[1]) / (2 * h))
    return np.array(out)


def water_molecule(r1, r2, theta_deg, origin=(0, 0, 0), rotation=np.eye(3)):
    half = np.deg2rad(theta_deg) / 2
    local = np.array([[0, 0, 0], [r1 * np.sin(half), r1 * np.cos(half), 0],
                      [-r2 * np.sin(half), r2 * np.cos(half), 0]])  # fmt: skip
    return Atoms("OH2", positions=local @ rotation.T + origin)


def test_xtb_forces_are_minus_the_energy_gradient():
    atoms = get_system("ethanol").atoms
    atoms.positions += np.random.default_rng(1).normal(scale=0.05, size=atoms.positions.shape)
    atoms.calc = get_oracle("xtb", accuracy=0.01)
    coordinates = [(0, 0), (4, 1), (7, 2), (8, 0), (8, 2)]
    expected = central_differences(atoms, coordinates, h=1e-3)
    forces = atoms.get_forces()
    assert np.abs(forces).max() > 0.1  # displaced, so the check is not trivial
    np.testing.assert_allclose([forces[a, x] for a, x in coordinates], expected, atol=5e-4)
    assert level_of_theory(atoms.calc) == "GFN2-xTB"


def test_spcfw_single_molecule_is_the_analytic_bonded_energy():
    atoms = water_molecule(1.10, 0.95, 100.0)
    atoms.calc = SPCFwCalculator()
    expected = KCAL_MOL * (
        spcfw.BOND_K_KCAL_PER_A2 / 2 * ((1.10 - 1.012) ** 2 + (0.95 - 1.012) ** 2)
        + spcfw.ANGLE_K_KCAL_PER_RAD2 / 2 * np.deg2rad(100.0 - 113.24) ** 2
    )
    assert atoms.get_potential_energy() == pytest.approx(expected, rel=1e-6)
    assert np.abs(atoms.get_forces().sum(axis=0)).max() < 1e-8


def test_spcfw_dimer_interaction_is_coulomb_plus_oxygen_lj():
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    first = water_molecule(1.0, 1.03, 110.0)
    for separation in (3.0, 4.5, 60.0):
        second = water_molecule(0.98, 1.02, 116.0, (separation, 0.3, -0.2), rotation)
        dimer = first + second
        energies = []
        for atoms in (dimer, first, second):
            atoms = atoms.copy()
            atoms.calc = SPCFwCalculator()
            energies.append(atoms.get_potential_energy())
        interaction = energies[0] - energies[1] - energies[2]
        charges = np.array([spcfw.CHARGE_O, spcfw.CHARGE_H, spcfw.CHARGE_H])
        r = np.linalg.norm(first.positions[:, None] - second.positions[None], axis=-1)
        coulomb = COULOMB_EV_A * (charges[:, None] * charges[None] / r).sum()
        x = spcfw.SIGMA_OO_A / r[0, 0]
        lj = 4 * spcfw.EPSILON_OO_KCAL * KCAL_MOL * (x**12 - x**6)
        assert interaction == pytest.approx(coulomb + lj, rel=1e-5, abs=1e-7)
    assert abs(interaction) < 1e-4  # at 60 Å the molecules barely feel each other


@pytest.fixture(scope="module")
def small_box():
    atoms = get_system("water", n_molecules=8).atoms
    atoms.positions += np.random.default_rng(2).normal(scale=0.03, size=atoms.positions.shape)
    atoms.positions[1] += atoms.cell[0]  # split a molecule across the boundary
    atoms.calc = SPCFwCalculator()
    return atoms


def test_spcfw_periodic_forces_are_minus_the_energy_gradient(small_box):
    coordinates = [(0, 0), (1, 1), (2, 2), (9, 0), (22, 1)]
    expected = central_differences(small_box, coordinates, h=1e-4)
    forces = small_box.get_forces()
    np.testing.assert_allclose([forces[a, x] for a, x in coordinates], expected, atol=1e-5)


def test_spcfw_stress_is_the_strain_derivative_of_the_energy(small_box):
    atoms = small_box.copy()
    atoms.calc = SPCFwCalculator(cutoff=3.0)  # the same cutoff in every strained cell
    stress = atoms.get_stress()
    numerical = calculate_numerical_stress(atoms, eps=1e-4)
    assert np.abs(stress).max() > 1e-3
    np.testing.assert_allclose(stress, numerical, atol=1e-6)


def test_spcfw_is_invariant_under_rotating_the_whole_periodic_system(small_box):
    rotation = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
    rotated = small_box.copy()
    rotated.set_cell(np.asarray(small_box.cell) @ rotation.T)
    rotated.positions = small_box.positions @ rotation.T
    rotated.calc = SPCFwCalculator()
    assert rotated.get_potential_energy() == pytest.approx(
        small_box.get_potential_energy(), abs=1e-8
    )
    np.testing.assert_allclose(rotated.get_forces(), small_box.get_forces() @ rotation.T, atol=1e-8)


def test_spcfw_rejects_atoms_that_are_not_water():
    with pytest.raises(InputError, match="atom 0 has Z=6"):
        label(get_system("ethanol").atoms, SPCFwCalculator())


class Broken(Calculator):
    implemented_properties = ["energy", "forces"]

    def __init__(self, mode):
        super().__init__()
        self.mode = mode

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        super().calculate(atoms, properties, system_changes)
        if self.mode == "raise":
            raise CalculationFailed("SCF not converged")
        self.results = {"energy": 0.0, "forces": np.full((len(self.atoms), 3), np.nan)}


@pytest.mark.parametrize(("mode", "reason"), [("raise", "SCF not converged"), ("nan", "forces")])
def test_label_flags_failures_instead_of_raising(mode, reason):
    result = label(get_system("ethanol").atoms, Broken(mode))
    assert not result.ok and reason in result.error
    ok = label(get_system("ethanol").atoms, get_oracle("ase.calculators.emt:EMT"))
    assert ok.ok and ok.forces.shape == (9, 3) and np.isfinite(ok.energy)
    assert ok.attach(get_system("ethanol").atoms).get_potential_energy() == ok.energy


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("gaussian-magic", {}, "unknown oracle 'gaussian-magic'"),
        ("no_such_module:Calc", {}, "cannot import"),
        ("ase.atoms:Atoms", {}, "not an ASE Calculator"),
        ("openmm-spcfw", {"colour": "red"}, "bad keyword"),
    ],
)
def test_get_oracle_errors(name, kwargs, message):
    with pytest.raises(InputError, match=message):
        get_oracle(name, **kwargs)
