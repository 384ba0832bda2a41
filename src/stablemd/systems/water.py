"""A periodic cubic box of flexible SPC/Fw water at liquid density."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import atomic_masses
from ase.optimize import LBFGS
from scipy.spatial.transform import Rotation

from stablemd.core.errors import InputError
from stablemd.oracles.spcfw import ANGLE_THETA0_DEG, BOND_R0_A, SPCFwCalculator

#: 1 g/cm³ in amu/Å³.
G_PER_CM3_IN_AMU_PER_A3 = 1.0 / 1.66053906660
RELAX_FMAX_EV_PER_A = 0.1
RELAX_MAX_STEPS = 300


def box_length(n_molecules: int, density_g_cm3: float) -> float:
    """Edge (Å) of the cubic box holding ``n_molecules`` waters at ``density_g_cm3``."""
    mass = n_molecules * (atomic_masses[8] + 2 * atomic_masses[1])
    return (mass / (density_g_cm3 * G_PER_CM3_IN_AMU_PER_A3)) ** (1 / 3)


def water_box(n_molecules: int = 64, density_g_cm3: float = 0.997, seed: int = 0) -> Atoms:
    """Unrelaxed waters (O,H,H each) at the SPC/Fw geometry, oxygens on a cubic grid, randomly
    oriented (seeded), in a periodic cube of the given density."""
    if n_molecules < 1:
        raise InputError(f"water: n_molecules must be at least 1, got {n_molecules}")
    if density_g_cm3 <= 0:
        raise InputError(f"water: density_g_cm3 must be positive, got {density_g_cm3}")
    length = box_length(n_molecules, density_g_cm3)
    per_side = int(np.ceil(n_molecules ** (1 / 3) - 1e-9))
    grid = (np.indices((per_side,) * 3).reshape(3, -1).T[:n_molecules] + 0.5) * length / per_side
    half = np.deg2rad(ANGLE_THETA0_DEG) / 2
    template = BOND_R0_A * np.array([[0, 0, 0], [np.sin(half), np.cos(half), 0],
                                     [-np.sin(half), np.cos(half), 0]])  # fmt: skip
    rotations = Rotation.random(n_molecules, random_state=seed)
    positions = np.concatenate([grid[m] + rotations[m].apply(template) for m in range(n_molecules)])
    return Atoms("OH2" * n_molecules, positions=positions, cell=[length] * 3, pbc=True)


def relaxed_water_box(n_molecules: int = 64, density_g_cm3: float = 0.997, seed: int = 0) -> Atoms:
    """:func:`water_box` relaxed briefly with SPC/Fw (LBFGS, fmax 0.1 eV/Å or 300 steps)."""
    atoms = water_box(n_molecules, density_g_cm3, seed)
    atoms.calc = SPCFwCalculator()
    LBFGS(atoms, logfile=None).run(fmax=RELAX_FMAX_EV_PER_A, steps=RELAX_MAX_STEPS)
    atoms.calc = None
    return wrap_molecules(atoms)


def wrap_molecules(atoms: Atoms) -> Atoms:
    """Shift whole molecules by lattice vectors so that every oxygen lies inside the cell."""
    waters = atoms.positions.reshape(-1, 3, 3)
    shift = np.floor(atoms.cell.scaled_positions(waters[:, 0])) @ np.asarray(atoms.cell)
    atoms.positions = (waters - shift[:, None]).reshape(-1, 3)
    return atoms


def water_bonds(n_molecules: int) -> np.ndarray:
    """The two O–H bonds of every molecule [2 n_molecules, 2]."""
    oxygens = 3 * np.arange(n_molecules)
    return np.stack([np.repeat(oxygens, 2), (oxygens[:, None] + [1, 2]).ravel()], axis=1)
