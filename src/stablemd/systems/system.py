"""The :class:`System` record and the bond topology derived from a structure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from ase.neighborlist import natural_cutoffs, neighbor_list
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from stablemd.core.errors import InputError

#: Scale on the sum of covalent radii below which two atoms count as bonded.
BOND_SCALE = 1.2


@dataclass
class System:
    """A reference structure and what the stability criteria need to know about it.

    ``atoms``: relaxed structure (Å). ``bonds`` [n_bonds, 2] atom indices (i < j).
    ``reference_bond_lengths`` [n_bonds] Å in ``atoms`` (minimum image when periodic).
    ``molecule_index`` [n_atoms]: connected component of the bond graph of each atom.
    ``default_oracle``: name for :func:`stablemd.oracles.get_oracle`.
    ``timestep_fs``: default MD time step. ``dihedrals``: named torsions as atom quadruples
    (e.g. alanine dipeptide's ``phi`` and ``psi``).
    """

    name: str
    atoms: Atoms
    bonds: np.ndarray
    reference_bond_lengths: np.ndarray
    molecule_index: np.ndarray
    default_oracle: str
    timestep_fs: float
    dihedrals: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)

    @classmethod
    def from_atoms(
        cls,
        name: str,
        atoms: Atoms,
        default_oracle: str,
        timestep_fs: float,
        bonds: np.ndarray | None = None,
        dihedrals: dict[str, tuple[int, int, int, int]] | None = None,
    ) -> System:
        """Derive bonds (unless given), their lengths and the molecules from ``atoms``."""
        bonds = find_bonds(atoms) if bonds is None else np.asarray(bonds, dtype=int)
        return cls(
            name=name,
            atoms=atoms,
            bonds=bonds,
            reference_bond_lengths=bond_lengths(atoms, bonds),
            molecule_index=molecule_index(len(atoms), bonds),
            default_oracle=default_oracle,
            timestep_fs=timestep_fs,
            dihedrals=dict(dihedrals or {}),
        )

    @property
    def periodic(self) -> bool:
        return bool(self.atoms.pbc.any())

    def check_frames(self, frames: Sequence[Atoms], source: str) -> None:
        """Raise :class:`InputError` naming ``source``, the frame and the atom, unless every
        frame has this system's elements in this system's atom order."""
        expected = self.atoms.numbers
        for index, atoms in enumerate(frames):
            if len(atoms) != len(expected):
                raise InputError(
                    f"{source}: frame {index} has {len(atoms)} atoms "
                    f"({atoms.get_chemical_formula()}); the {self.name} system has "
                    f"{len(expected)} ({self.atoms.get_chemical_formula()})"
                )
            differ = np.flatnonzero(atoms.numbers != expected)
            if differ.size:
                k = int(differ[0])
                raise InputError(
                    f"{source}: frame {index}, atom {k} is {atoms.get_chemical_symbols()[k]} "
                    f"where the {self.name} system has {self.atoms.get_chemical_symbols()[k]} "
                    "(atoms must come in the system's order)"
                )


def find_bonds(atoms: Atoms, scale: float = BOND_SCALE) -> np.ndarray:
    """Pairs (i < j) closer than ``scale`` × the sum of their covalent radii [n_bonds, 2]."""
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=scale))
    keep = i < j
    return np.unique(np.stack([i[keep], j[keep]], axis=1), axis=0).reshape(-1, 2)


def bond_lengths(atoms: Atoms, bonds: np.ndarray) -> np.ndarray:
    """Lengths (Å, minimum image) of ``bonds`` in ``atoms`` [n_bonds]."""
    vectors = atoms.positions[bonds[:, 1]] - atoms.positions[bonds[:, 0]]
    if atoms.pbc.any():
        vectors = find_mic(vectors, atoms.cell, atoms.pbc)[0]
    return np.linalg.norm(vectors, axis=1)


def molecule_index(n_atoms: int, bonds: np.ndarray) -> np.ndarray:
    """Index of the molecule (connected component of the bond graph) of each atom [n_atoms]."""
    graph = coo_matrix((np.ones(len(bonds)), (bonds[:, 0], bonds[:, 1])), (n_atoms, n_atoms))
    return connected_components(graph, directed=False)[1]
