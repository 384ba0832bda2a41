"""The batch of systems that every potential and the MD engine work on.

A batch concatenates the atoms of several systems (molecules, periodic boxes or MD replicas):
``positions`` [n_atoms, 3] Å, ``numbers`` [n_atoms], ``system_index`` [n_atoms] (which system an
atom belongs to), ``cell`` [n_systems, 3, 3] Å (rows are lattice vectors, zero when not
periodic) and ``pbc`` [n_systems, 3]. Optional labels: ``energy`` [n_systems] eV,
``forces`` [n_atoms, 3] eV/Å and ``stress`` [n_systems, 3, 3] eV/Å³.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from ase import Atoms


class SystemLayout:
    """Sizes, per-system sums and maxima of anything with ``positions``, ``system_index`` and
    ``cell``."""

    positions: torch.Tensor
    system_index: torch.Tensor
    cell: torch.Tensor

    @property
    def n_systems(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def atoms_per_system(self) -> torch.Tensor:
        """Number of atoms of each system [n_systems]."""
        return torch.bincount(self.system_index, minlength=self.n_systems)

    def sum_per_system(self, per_atom: torch.Tensor) -> torch.Tensor:
        """Sum a per-atom quantity [n_atoms, ...] into a per-system one [n_systems, ...]."""
        out = per_atom.new_zeros((self.n_systems, *per_atom.shape[1:]))
        return out.index_add(0, self.system_index, per_atom)

    def max_per_system(
        self, per_atom: torch.Tensor, atoms: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The largest value of a per-atom quantity in each system [n_systems]: of ``per_atom``
        [n_atoms], or with ``atoms`` (an index or mask of the atoms) of those atoms' values
        [n_selected]; −inf for a system without any of them."""
        index = self.system_index if atoms is None else self.system_index[atoms]
        out = per_atom.new_full((self.n_systems,), -torch.inf)
        return out.scatter_reduce(0, index, per_atom, reduce="amax")


@dataclass
class Batch(SystemLayout):
    positions: torch.Tensor
    numbers: torch.Tensor
    system_index: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None

    def select_systems(self, keep: torch.Tensor) -> tuple[Batch, torch.Tensor]:
        """The systems where ``keep`` [n_systems] is True, renumbered in order, with their
        labels; and the indices of their atoms in this batch."""
        kept = torch.nonzero(keep)[:, 0]
        atoms = torch.nonzero(keep[self.system_index])[:, 0]
        renumber = torch.full((self.n_systems,), -1, dtype=torch.long)
        renumber[kept] = torch.arange(len(kept))

        def per_system(t):
            return None if t is None else t[kept]

        selected = Batch(
            positions=self.positions[atoms],
            numbers=self.numbers[atoms],
            system_index=renumber[self.system_index[atoms]],
            cell=self.cell[kept],
            pbc=self.pbc[kept],
            energy=per_system(self.energy),
            forces=None if self.forces is None else self.forces[atoms],
            stress=per_system(self.stress),
        )
        return selected, atoms

    def to(self, dtype: torch.dtype | None = None, device: str | torch.device | None = None):
        """Copy with float tensors cast to ``dtype`` and all tensors moved to ``device``."""

        def cast(t):
            if t is None:
                return None
            if t.is_floating_point() and dtype is not None:
                return t.to(dtype=dtype, device=device)
            return t.to(device=device) if device is not None else t

        return replace(self, **{f.name: cast(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def from_atoms(
        cls,
        atoms_list: Sequence[Atoms],
        dtype: torch.dtype = torch.float32,
        with_labels: bool = False,
    ) -> Batch:
        """Build a batch from ASE ``Atoms``; labels are read from attached results if asked."""
        if len(atoms_list) == 0:
            raise ValueError("cannot build a batch from zero structures")
        positions = np.concatenate([a.get_positions() for a in atoms_list])
        numbers = np.concatenate([a.get_atomic_numbers() for a in atoms_list])
        system_index = np.repeat(np.arange(len(atoms_list)), [len(a) for a in atoms_list])
        cell = np.stack([np.asarray(a.get_cell()) for a in atoms_list])
        pbc = np.stack([a.get_pbc() for a in atoms_list])
        batch = cls(
            positions=torch.as_tensor(positions, dtype=dtype),
            numbers=torch.as_tensor(numbers, dtype=torch.long),
            system_index=torch.as_tensor(system_index, dtype=torch.long),
            cell=torch.as_tensor(cell, dtype=dtype),
            pbc=torch.as_tensor(pbc, dtype=torch.bool),
        )
        if with_labels:
            batch.energy = torch.as_tensor(
                [a.calc.results["energy"] for a in atoms_list], dtype=dtype
            )
            batch.forces = torch.as_tensor(
                np.concatenate([a.calc.results["forces"] for a in atoms_list]), dtype=dtype
            )
        return batch

    def to_atoms(self) -> list[Atoms]:
        """Split back into ASE ``Atoms`` (positions only, no labels)."""
        out = []
        pos = self.positions.detach().cpu().double().numpy()
        for s in range(self.n_systems):
            mask = (self.system_index == s).cpu().numpy()
            out.append(
                Atoms(
                    numbers=self.numbers[mask].cpu().numpy(),
                    positions=pos[mask],
                    cell=self.cell[s].detach().cpu().double().numpy(),
                    pbc=self.pbc[s].cpu().numpy(),
                )
            )
        return out
