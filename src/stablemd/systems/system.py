"""The :class:`System` record and the bond topology derived from a structure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols
from ase.geometry import find_mic
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from stablemd.core.errors import InputError
from stablemd.systems.topology import (
    broken_bond,
    check_no_clash,
    check_same_topology,
    find_bonds,
    match_atom_order,
)

#: Default MD time step (fs) of a system derived from data: short enough for hydrogens.
DERIVED_TIMESTEP_FS = 0.5
#: Single-point results with one row per atom.
PER_ATOM_RESULTS = ("forces", "energies", "charges", "magmoms", "stresses")


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

    @classmethod
    def from_frames(
        cls,
        name: str,
        frames: Sequence[Atoms],
        source: str,
        default_oracle: str = "xtb",
        timestep_fs: float = DERIVED_TIMESTEP_FS,
    ) -> System:
        """The system of ``frames`` (of ``source``, named in errors): elements, order, cell and
        periodicity of frame 0, its bonds (refused when a frame clashes or bonds otherwise, see
        :func:`~stablemd.systems.topology.check_same_topology`), the molecules as connected
        components and reference bond lengths averaged over all frames."""
        if not frames:
            raise InputError(f"{source}: no frames to derive a system from")
        check_numbers(frames, frames[0].numbers, source, "frame 0")
        bonds = find_bonds(frames[0])
        check_same_topology(frames, bonds, source)  # clashes in frame 0 too
        if len({tuple(a.pbc) for a in frames}) > 1:
            raise InputError(f"{source}: frames differ in periodicity (pbc)")
        system = cls.from_atoms(name, frames[0].copy(), default_oracle, timestep_fs, bonds)
        system.atoms.calc = None
        system.reference_bond_lengths = np.mean([bond_lengths(a, bonds) for a in frames], axis=0)
        return system

    def align(self, frames: Sequence[Atoms], source: str) -> tuple[list[Atoms], np.ndarray | None]:
        """``frames`` in this system's atom order, and the order used (``frame[order]``; None:
        they already were). Frames in another order are matched by their bond graph (that of
        frame 0, which every frame must share); anything else, and clashing atoms in frames
        whose bonds must be matched, is refused naming ``source``, the frame and the atoms.
        Frames in the system's order keep its bonds: two atoms squeezed together there are a
        start whose MD will fail, not a topology to refuse."""
        frames = list(frames)
        if not frames:
            raise InputError(f"{source}: no frames")
        first = frames[0]
        if len(first) != len(self.atoms):
            raise InputError(
                f"{source}: frame 0 has {len(first)} atoms ({first.get_chemical_formula()}); "
                f"the {self.name} system has {len(self.atoms)} "
                f"({self.atoms.get_chemical_formula()})"
            )
        same_elements = bool((first.numbers == self.atoms.numbers).all())
        if same_elements and broken_bond(first, self.bonds) is None:
            # the system's topology applies: a squeezed start is a valid (if doomed) start
            check_numbers(frames, self.atoms.numbers, source, f"the {self.name} system")
            return frames, None
        # Equal elements atom by atom do not make the same order: hydrogens listed otherwise
        # would put a bond between atoms far apart, so such frames are matched by graph too.
        for index, atoms in enumerate(frames):
            check_no_clash(atoms, f"{source}: frame {index}")
        if sorted(first.numbers) != sorted(self.atoms.numbers):
            raise InputError(
                f"{source}: frame 0 is {first.get_chemical_formula()}, the {self.name} system "
                f"{self.atoms.get_chemical_formula()}"
            )
        check_numbers(frames, first.numbers, source, "frame 0")
        bonds = find_bonds(first)
        order = match_atom_order(self.atoms, self.bonds, first, bonds)
        if order is None:
            raise InputError(
                f"{source}: frame 0 lists the atoms of {self.atoms.get_chemical_formula()}"
                f"{' with other bonds' if same_elements else ' in another order'} than the "
                f"{self.name} system, and its bond graph ({len(bonds)} bonds) matches the "
                f"system's ({len(self.bonds)} bonds) in no order: not the same molecules"
            )
        return [permute_atoms(atoms, order) for atoms in frames], order

    def in_frame_order(self, order: np.ndarray) -> System:
        """This system with its atoms in the order of frames that :meth:`align` matched with
        ``order`` (system atom ``k`` is frame atom ``order[k]``)."""
        inverse = np.argsort(order)
        bonds = np.sort(np.asarray(order)[self.bonds], axis=1)
        by_pair = np.lexsort((bonds[:, 1], bonds[:, 0]))
        return System(
            name=self.name,
            atoms=self.atoms[inverse],
            bonds=bonds[by_pair],
            reference_bond_lengths=self.reference_bond_lengths[by_pair],
            molecule_index=self.molecule_index[inverse],
            default_oracle=self.default_oracle,
            timestep_fs=self.timestep_fs,
            dihedrals={k: tuple(int(order[i]) for i in q) for k, q in self.dihedrals.items()},
        )

    def record(self) -> dict:
        """The system as plain lists (a model file records the system of its training frames)."""
        return {
            "name": self.name,
            "numbers": self.atoms.numbers.tolist(),
            "positions": self.atoms.positions.tolist(),
            "cell": np.asarray(self.atoms.cell).tolist(),
            "pbc": self.atoms.pbc.tolist(),
            "bonds": self.bonds.tolist(),
            "reference_bond_lengths": self.reference_bond_lengths.tolist(),
            "default_oracle": self.default_oracle,
            "timestep_fs": self.timestep_fs,
            "dihedrals": {name: list(quad) for name, quad in self.dihedrals.items()},
        }

    @classmethod
    def from_record(cls, record: dict) -> System:
        """The system of :meth:`record`."""
        atoms = Atoms(
            numbers=record["numbers"], positions=record["positions"], cell=record["cell"],
            pbc=record["pbc"],
        )  # fmt: skip
        dihedrals = {k: tuple(int(i) for i in q) for k, q in record.get("dihedrals", {}).items()}
        system = cls.from_atoms(
            record["name"], atoms, record["default_oracle"], record["timestep_fs"],
            np.asarray(record["bonds"], dtype=int).reshape(-1, 2), dihedrals,
        )  # fmt: skip
        system.reference_bond_lengths = np.asarray(record["reference_bond_lengths"], dtype=float)
        return system


def check_numbers(frames: Sequence[Atoms], expected: np.ndarray, source: str, what: str) -> None:
    """Refuse the first frame of ``source`` whose elements are not ``expected`` atom by atom
    (those of ``what``: a system, frame 0), naming the frame and the atom."""
    for index, atoms in enumerate(frames):
        if len(atoms) != len(expected):
            raise InputError(
                f"{source}: frame {index} has {len(atoms)} atoms ({atoms.get_chemical_formula()}); "
                f"{what} has {len(expected)}"
            )
        differ = np.flatnonzero(atoms.numbers != expected)
        if differ.size:
            k = int(differ[0])
            raise InputError(
                f"{source}: frame {index}, atom {k} is {atoms.get_chemical_symbols()[k]} where "
                f"{what} has {chemical_symbols[int(expected[k])]} (every frame must list its "
                "atoms in one order)"
            )


def permute_atoms(atoms: Atoms, order: np.ndarray) -> Atoms:
    """``atoms[order]`` with its single-point labels (energy, forces, ...) carried along."""
    permuted = atoms[order]
    results = getattr(atoms.calc, "results", None)
    if results:
        per_atom = {k: np.asarray(v)[order] for k, v in results.items() if k in PER_ATOM_RESULTS}
        other = {k: v for k, v in results.items() if k not in PER_ATOM_RESULTS}
        permuted.calc = SinglePointCalculator(permuted, **other, **per_atom)
    return permuted


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
