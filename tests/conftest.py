"""Shared fixtures: small sets of real GFN2-xTB labels, made once per test session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from stablemd.core import runtime
from stablemd.oracles import get_oracle

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def user_configuration(tmp_path, monkeypatch):
    """Every test has an empty configuration directory of its own (stored systems live there),
    never the user's ~/.config; nothing is created until a test stores something."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(autouse=True)
def fixed_thread_count(monkeypatch):
    """Two torch threads and no thread budget in every test. A command run in-process turns the
    budget on for the rest of the process (``core/runtime.py``), after which MD in later tests
    changes its thread count with the machine's load, and with it the order of the sums that
    the bit-for-bit resume tests compare."""
    monkeypatch.setattr(runtime, "_budget", None)
    torch.set_num_threads(2)


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
