"""Neighbour lists over a :class:`~stablemd.batch.Batch`.

Isolated molecules (no periodic direction) use a dense all-pairs list built per system, which is
the fastest choice for a few dozen atoms; periodic systems use vesin's cell list. The list is
built on detached coordinates; the pair vectors are then formed in torch, so that they carry
gradients with respect to positions and cell (forces and stress by autograd).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import vesin

from stablemd.batch import Batch


@dataclass
class NeighborList:
    """Full (both-direction) pair list: ``vectors[k] = r[j] - r[i] + shift`` for pair k.

    ``centers`` [n_pairs] (i), ``neighbors`` [n_pairs] (j), ``shifts`` [n_pairs, 3] Å.
    """

    centers: torch.Tensor
    neighbors: torch.Tensor
    shifts: torch.Tensor

    def vectors(self, positions: torch.Tensor) -> torch.Tensor:
        """Pair vectors r_j - r_i (+ periodic shift) [n_pairs, 3] Å."""
        return positions[self.neighbors] - positions[self.centers] + self.shifts

    def one_direction(self) -> NeighborList:
        """Each unordered pair once: i < j, and of a periodic image pair (i, i, ±S) the one whose
        shift has a positive first non-zero component."""
        s = self.shifts
        first_nonzero = torch.where(
            s[:, 0] != 0, s[:, 0], torch.where(s[:, 1] != 0, s[:, 1], s[:, 2])
        )
        keep = (self.centers < self.neighbors) | (
            (self.centers == self.neighbors) & (first_nonzero > 0)
        )
        return NeighborList(self.centers[keep], self.neighbors[keep], self.shifts[keep])


def _dense_pairs(n_atoms: torch.Tensor, first_atom: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All ordered pairs i != j inside each system, grouped by system size for speed."""
    centers, neighbors = [], []
    for size in torch.unique(n_atoms).tolist():
        if size < 2:
            continue
        idx = torch.arange(size)
        ii, jj = torch.meshgrid(idx, idx, indexing="ij")
        keep = ii != jj
        ii, jj = ii[keep], jj[keep]
        starts = first_atom[n_atoms == size]
        centers.append((starts[:, None] + ii[None, :]).reshape(-1))
        neighbors.append((starts[:, None] + jj[None, :]).reshape(-1))
    if not centers:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    return torch.cat(centers), torch.cat(neighbors)


def build_neighbor_list(batch: Batch, cutoff: float) -> NeighborList:
    """Pairs closer than ``cutoff`` (Å) in every system of the batch."""
    device = batch.positions.device
    n_atoms = batch.atoms_per_system.cpu()
    first_atom = torch.cumsum(n_atoms, 0) - n_atoms
    periodic = batch.pbc.any(dim=1).cpu()
    if not bool(periodic.any()):
        # Molecules need the atoms of each system to be contiguous, which Batch guarantees.
        centers, neighbors = _dense_pairs(n_atoms, first_atom)
        centers, neighbors = centers.to(device), neighbors.to(device)
        with torch.no_grad():
            d = (batch.positions[neighbors] - batch.positions[centers]).norm(dim=1)
        keep = d < cutoff
        centers, neighbors = centers[keep], neighbors[keep]
        shifts = batch.positions.new_zeros((len(centers), 3))
        return NeighborList(centers, neighbors, shifts)

    centers, neighbors, shifts = [], [], []
    calculator = vesin.NeighborList(cutoff=cutoff, full_list=True)
    positions = batch.positions.detach().cpu().double().numpy()
    cells = batch.cell.detach().cpu().double().numpy()
    for s in range(batch.n_systems):
        start, size = int(first_atom[s]), int(n_atoms[s])
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
