"""Geometry of frames: replicas as frames, periodic minimum images, bond lengths and angles.

Frames are ``positions`` [n_frames, n_atoms, 3] Å (float64); the replicas of an
:class:`~stablemd.md.state.MDState` of one structure count as frames (:func:`replica_positions`).
Functions are pure and differentiable in the positions.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from stablemd.core.errors import InputError
from stablemd.md.state import MDState

_F64 = torch.float64


def replica_positions(state: MDState) -> torch.Tensor:
    """Positions of a state whose replicas are copies of one structure, as frames [R, N, 3] Å.

    Atoms keep their order inside each replica, wherever the replicas sit in the state.
    """
    sizes = state.atoms_per_system
    if not bool((sizes == sizes[0]).all()):
        raise InputError(f"replicas differ in size ({sizes.tolist()}); expected one structure")
    order = torch.argsort(state.system_index, stable=True)
    return state.positions[order].reshape(state.n_systems, -1, 3)


def replica_numbers(state: MDState) -> torch.Tensor:
    """Atomic numbers [N] shared by every replica (see :func:`replica_positions`)."""
    order = torch.argsort(state.system_index, stable=True)
    numbers = state.numbers[order].reshape(state.n_systems, -1)
    if not bool((numbers == numbers[0]).all()):
        raise InputError("replicas differ in composition; expected copies of one structure")
    return numbers[0]


def _frame_boxes(n_frames: int, cell, pbc) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``cell`` [3, 3] or [F, 3, 3] and ``pbc`` [3] or [F, 3] expanded to every frame."""
    if cell is None:
        return None, None
    cell = torch.as_tensor(cell, dtype=_F64).expand(n_frames, 3, 3)
    pbc = torch.ones(3, dtype=torch.bool) if pbc is None else torch.as_tensor(pbc).bool()
    return cell, pbc.expand(n_frames, 3)


def as_frames(positions, cell, pbc):
    """(positions [F, N, 3], cell [F, 3, 3] | None, pbc [F, 3] | None) from frames or a state."""
    if isinstance(positions, MDState):
        return replica_positions(positions), positions.cell, positions.pbc
    positions = torch.as_tensor(positions, dtype=_F64)
    if positions.dim() != 3 or positions.shape[-1] != 3:
        raise InputError(f"positions must be [n_frames, n_atoms, 3], got {list(positions.shape)}")
    return (positions, *_frame_boxes(positions.shape[0], cell, pbc))


def minimum_image(vectors: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """Shortest periodic images of ``vectors`` [..., 3] Å.

    ``cell`` [..., 3, 3] (rows are lattice vectors) and ``pbc`` [..., 3] broadcast against the
    leading dimensions of ``vectors``; only periodic rows shift them. Fractional wrapping is
    exact for orthorhombic cells; for triclinic cells (or mixed periodicity) the 27 neighbouring
    images of the wrapped vector are searched as well.
    """
    pbc = pbc.bool()
    if not bool(pbc.any()):
        return vectors
    box = cell * pbc.unsqueeze(-1)  # the lattice: periodic rows only
    # Coordinates of the vectors' projection on the periodic rows (the inverse when all are).
    frac = (vectors.detach().unsqueeze(-2) @ torch.linalg.pinv(box.detach())).squeeze(-2)
    shift = torch.round(frac) * pbc
    wrapped = vectors - (shift.unsqueeze(-2) @ box).squeeze(-2)
    off_diagonal = box - torch.diag_embed(torch.diagonal(box, dim1=-2, dim2=-1))
    if not bool(off_diagonal.any()):
        return wrapped
    images = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=cell.dtype)
    images = images * pbc.unsqueeze(-2)  # [..., 27, 3]
    candidates = wrapped.unsqueeze(-2) + images @ box  # [..., 27, 3]
    best = candidates.detach().norm(dim=-1).argmin(dim=-1, keepdim=True)
    return torch.take_along_dim(candidates, best[..., None], dim=-2).squeeze(-2)


def pair_vectors(positions, i, j, cell=None, pbc=None) -> torch.Tensor:
    """Vectors r_j − r_i [F, P, 3] Å for index pairs ``i``, ``j`` [P] (minimum image if periodic).

    ``positions`` [F, N, 3]; ``cell`` [F, 3, 3] and ``pbc`` [F, 3] or None (no periodicity).
    """
    vectors = positions[:, j] - positions[:, i]
    if cell is None:
        return vectors
    return minimum_image(vectors, cell.unsqueeze(1), pbc.unsqueeze(1))


def cell_heights(cell: torch.Tensor) -> torch.Tensor:
    """Distances between opposite faces of each cell [..., 3] Å."""
    volume = torch.linalg.det(cell).abs()
    areas = torch.linalg.cross(cell.roll(-1, dims=-2), cell.roll(-2, dims=-2)).norm(dim=-1)
    return volume.unsqueeze(-1) / areas


def bond_lengths(positions, bonds, cell=None, pbc=None) -> torch.Tensor:
    """Lengths [F, n_bonds] Å of ``bonds`` [n_bonds, 2] (minimum image when periodic)."""
    positions, cell, pbc = as_frames(positions, cell, pbc)
    bonds = torch.as_tensor(bonds).long().reshape(-1, 2)
    return pair_vectors(positions, bonds[:, 0], bonds[:, 1], cell, pbc).norm(dim=-1)


def angle_triplets(bonds) -> torch.Tensor:
    """Bond angles (i, j, k) [n_angles, 3] from ``bonds`` [n_bonds, 2]: j the shared atom, i < k."""
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    centre = np.concatenate([bonds[:, 0], bonds[:, 1]])
    other = np.concatenate([bonds[:, 1], bonds[:, 0]])
    a, b = np.nonzero((centre[:, None] == centre[None, :]) & (other[:, None] < other[None, :]))
    triplets = np.stack([other[a], centre[a], other[b]], axis=1)
    return torch.as_tensor(triplets[np.lexsort(triplets.T[::-1])].reshape(-1, 3))


def bond_angles(positions, triplets, cell=None, pbc=None) -> torch.Tensor:
    """Angles [F, n_angles] in degrees at atom j of each triplet (i, j, k) [n_angles, 3]."""
    positions, cell, pbc = as_frames(positions, cell, pbc)
    triplets = torch.as_tensor(triplets).long().reshape(-1, 3)
    u = pair_vectors(positions, triplets[:, 1], triplets[:, 0], cell, pbc)
    v = pair_vectors(positions, triplets[:, 1], triplets[:, 2], cell, pbc)
    # atan2(|u×v|, u·v) stays accurate (and differentiable) near 0° and 180°.
    return torch.rad2deg(torch.atan2(torch.linalg.cross(u, v).norm(dim=-1), (u * v).sum(-1)))
