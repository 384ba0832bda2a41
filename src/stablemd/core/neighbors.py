"""Neighbour lists over a :class:`~stablemd.core.batch.Batch`.

Isolated molecules (no periodic direction) test every pair i < j of each system, the fastest
choice for a few dozen atoms, and keep that one-direction list for kernels that visit each pair
once; periodic systems use vesin's cell list. The list is
built on detached coordinates; the pair vectors are then formed in torch, so that they carry
gradients with respect to positions and cell (forces and stress by autograd).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import vesin

from stablemd.core.batch import Batch


@dataclass
class NeighborList:
    """Full (both-direction) pair list: ``vectors[k] = r[j] - r[i] + shift`` for pair k.

    ``centers`` [n_pairs] (i), ``neighbors`` [n_pairs] (j), ``shifts`` [n_pairs, 3] Å.
    ``half``: the same pairs taken once each, when the builder already has them.
    """

    centers: torch.Tensor
    neighbors: torch.Tensor
    shifts: torch.Tensor
    half: NeighborList | None = None

    def vectors(self, positions: torch.Tensor) -> torch.Tensor:
        """Pair vectors r_j - r_i (+ periodic shift) [n_pairs, 3] Å."""
        return positions[self.neighbors] - positions[self.centers] + self.shifts

    def one_direction(self) -> NeighborList:
        """Each unordered pair once: i < j, and of a periodic image pair (i, i, ±S) the one whose
        shift has a positive first non-zero component."""
        if self.half is not None:
            return self.half
        s = self.shifts
        first_nonzero = torch.where(
            s[:, 0] != 0, s[:, 0], torch.where(s[:, 1] != 0, s[:, 1], s[:, 2])
        )
        keep = (self.centers < self.neighbors) | (
            (self.centers == self.neighbors) & (first_nonzero > 0)
        )
        return NeighborList(self.centers[keep], self.neighbors[keep], self.shifts[keep])


@functools.lru_cache(maxsize=64)
def _upper_pairs(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs i < j of ``size`` atoms."""
    i, j = torch.triu_indices(size, size, offset=1)
    return i, j


def _molecule_pairs(batch: Batch, cutoff: float) -> NeighborList:
    """Pairs closer than ``cutoff`` inside each molecule, built once per unordered pair (each
    system's atoms are contiguous, which :class:`Batch` guarantees)."""
    n_atoms = batch.atoms_per_system.cpu()
    first_atom = torch.cumsum(n_atoms, 0) - n_atoms
    firsts, seconds = [], []
    for size in torch.unique(n_atoms).tolist():
        if size < 2:
            continue
        i, j = _upper_pairs(size)
        starts = first_atom[n_atoms == size][:, None]
        firsts.append((starts + i).reshape(-1))
        seconds.append((starts + j).reshape(-1))
    device = batch.positions.device
    first = torch.cat(firsts).to(device) if firsts else torch.zeros(0, dtype=torch.long)
    second = torch.cat(seconds).to(device) if seconds else torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        positions = batch.positions.detach()
        keep = torch.linalg.vector_norm(positions[second] - positions[first], dim=1) < cutoff
    first, second = first[keep], second[keep]
    shifts = batch.positions.new_zeros((len(first), 3))
    half = NeighborList(first, second, shifts)
    both = torch.cat([shifts, shifts])
    return NeighborList(torch.cat([first, second]), torch.cat([second, first]), both, half)


def build_neighbor_list(batch: Batch, cutoff: float) -> NeighborList:
    """Pairs closer than ``cutoff`` (Å) in every system of the batch. No pair touches an atom
    with non-finite positions (a periodic system with one gets no pairs at all): an MD replica
    that blew up between two stability checks must not stop the others, and the non-finite
    criterion freezes it at the next check."""
    if not bool(batch.pbc.any()):
        return _molecule_pairs(batch, cutoff)  # NaN distances fail the cutoff test by themselves
    device = batch.positions.device
    n_atoms = batch.atoms_per_system.cpu()
    first_atom = torch.cumsum(n_atoms, 0) - n_atoms
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    positions = batch.positions.detach().cpu().double().numpy()
    cells = batch.cell.detach().cpu().double().numpy()
    no_pairs = torch.zeros(0, dtype=torch.long)
    centers, neighbors, shifts = [no_pairs], [no_pairs], [batch.cell.new_zeros((0, 3))]
    for s in range(batch.n_systems):
        start, size = int(first_atom[s]), int(n_atoms[s])
        if not np.isfinite(positions[start : start + size]).all():
            continue
        pbc = batch.pbc[s].cpu().numpy()
        box = cells[s] if pbc.any() else np.zeros((3, 3))
        i, j, cell_shift = calculator.compute(
            positions[start : start + size], box, pbc, quantities="ijS"
        )
        centers.append(torch.as_tensor(i.astype(np.int64)) + start)
        neighbors.append(torch.as_tensor(j.astype(np.int64)) + start)
        shift = torch.as_tensor(cell_shift, dtype=batch.cell.dtype, device=device)
        shifts.append(shift @ batch.cell[s])  # differentiable with respect to the cell
    return NeighborList(
        torch.cat(centers).to(device), torch.cat(neighbors).to(device), torch.cat(shifts)
    )
