"""Shared fixtures: small sets of real GFN2-xTB labels, made once per test session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from stablemd.oracles import get_oracle

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def user_configuration(tmp_path, monkeypatch):
    """Every test has an empty configuration directory of its own (stored systems live there),
    never the user's ~/.config; nothing is created until a test stores something."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def xtb_labelled(atoms_list):
    """Attach GFN2-xTB energy and forces (eV, eV/Å) to each structure as a single-point result."""
    calculator = get_oracle("xtb")
    out = []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.calc = calculator
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        out.append(atoms)
    return out


@pytest.fixture(scope="session")
def ethanol_frames():
    """60 ethanol structures displaced by 0.05 Å Gaussian noise, labelled with GFN2-xTB."""
    rng = np.random.default_rng(0)
    base = molecule("CH3CH2OH")
    structures = []
    for _ in range(60):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        structures.append(atoms)
    return xtb_labelled(structures)
