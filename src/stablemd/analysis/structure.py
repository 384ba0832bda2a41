"""Structural observables of frames: h(r), element-resolved RDFs, bond-length and bond-angle
distributions, and their averages over a set of reference structures.

Histograms are Gaussian-smeared: a value spreads over the bins as a normal of width ``sigma``
integrated over each bin, so ``sigma = 0`` is the plain histogram and ``sigma > 0`` is
differentiable in the positions. Frames as in :mod:`stablemd.analysis.geometry`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from stablemd.analysis.geometry import (
    as_frames,
    bond_angles,
    bond_lengths,
    cell_heights,
    pair_vectors,
    replica_numbers,
)
from stablemd.core.errors import InputError
from stablemd.md.state import MDState

#: Defaults from METHODS §1: bin width and Gaussian width (Å) of h(r) and the RDF.
DR_A = 0.02
SIGMA_A = 0.01
#: Default RDF range (Å), StABlE's water setting.
DEFAULT_RDF_R_MAX_A = 6.0
#: Reach of the Gaussian kernel, in widths; the mass beyond it (< 1e-6) is dropped.
KERNEL_REACH = 5.0

_F64 = torch.float64


def bin_centres(start: float, width: float, n_bins: int) -> torch.Tensor:
    """Centres [n_bins] of the bins [start + k·width, start + (k + 1)·width)."""
    return start + width * (torch.arange(n_bins, dtype=_F64) + 0.5)


def smeared_histogram(
    values: torch.Tensor, start: float, width: float, n_bins: int, sigma: float
) -> torch.Tensor:
    """Counts [..., n_bins] of ``values`` [..., M] in bins [start + k·width, start + (k+1)·width).

    Each value adds the integral over each bin of a normal centred on it with standard deviation
    ``sigma`` (same unit as the values); ``sigma = 0`` counts it in its own bin. Non-finite
    values and mass outside the range are dropped. Only the few bins within
    ``KERNEL_REACH``·sigma are touched, so memory grows with the number of values, not bins.
    """
    reach = math.ceil(KERNEL_REACH * sigma / width) if sigma > 0 else 0
    x = (values - start) / width
    finite = torch.isfinite(x)
    x_safe = torch.where(finite, x, torch.full_like(x, -reach - 2.0)).clamp(
        -reach - 2.0, n_bins + reach + 1.0
    )
    bins = torch.floor(x_safe.detach()).long().unsqueeze(-1) + torch.arange(-reach, reach + 1)
    if sigma > 0:
        scale = math.sqrt(2.0) * sigma / width
        lower = (bins - x_safe.unsqueeze(-1)) / scale
        weights = 0.5 * (torch.erf(lower + 1.0 / scale) - torch.erf(lower))
    else:
        weights = torch.ones(bins.shape, dtype=values.dtype)
    keep = (bins >= 0) & (bins < n_bins) & finite.unsqueeze(-1)
    weights = torch.where(keep, weights, torch.zeros_like(weights))
    out = values.new_zeros((*values.shape[:-1], n_bins))
    flat = (*values.shape[:-1], -1)
    return out.scatter_add(-1, bins.clamp(0, n_bins - 1).reshape(flat), weights.reshape(flat))


def _n_bins(r_max: float, dr: float) -> int:
    if r_max <= 0 or dr <= 0:
        raise InputError(f"r_max and dr must be positive, got r_max={r_max}, dr={dr}")
    return max(1, round(r_max / dr))


def distance_histogram_h_r(
    positions, r_max: float, dr: float = DR_A, sigma: float = SIGMA_A, cell=None, pbc=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """h(r), the distribution of all interatomic distances, per frame.

    ``positions`` [F, N, 3] Å (or an :class:`MDState`, one frame per replica); ``cell``/``pbc``
    for minimum-image distances. Returns bin centres r [n_bins] Å and h [F, n_bins] 1/Å,
    h(r) = 1/(N(N−1)) Σ_i Σ_{j≠i} δ(r − r_ij) smeared, so Σ h·dr is the fraction of pairs closer
    than ``r_max`` (1 for a molecule smaller than r_max). Differentiable for ``sigma > 0``.
    """
    positions, cell, pbc = as_frames(positions, cell, pbc)
    n_atoms, n_bins = positions.shape[1], _n_bins(r_max, dr)
    if n_atoms < 2:
        raise InputError(f"h(r) needs at least two atoms, got {n_atoms}")
    i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
    distances = pair_vectors(positions, i, j, cell, pbc).norm(dim=-1)
    counts = smeared_histogram(distances, 0.0, dr, n_bins, sigma)
    return bin_centres(0.0, dr, n_bins), counts / (len(i) * dr)


def element_pairs(numbers) -> list[tuple[int, int]]:
    """Unordered element pairs (Z_a ≤ Z_b) present in ``numbers``, sorted."""
    elements = sorted({int(z) for z in torch.as_tensor(numbers).tolist()})
    return list(itertools.combinations_with_replacement(elements, 2))


def radial_distribution(
    positions,
    numbers=None,
    cell=None,
    pbc=None,
    r_max: float = DEFAULT_RDF_R_MAX_A,
    dr: float = DR_A,
    sigma: float = SIGMA_A,
) -> tuple[torch.Tensor, dict[tuple[int, int], torch.Tensor]]:
    """Element-resolved RDFs g_ab(r) of periodic frames, minimum image.

    ``positions`` [F, N, 3] Å (or an :class:`MDState`), ``numbers`` [N], ``cell`` [3, 3] or
    [F, 3, 3] Å, periodic in all three directions. Returns bin centres r [n_bins] Å and
    {(Z_a, Z_b): g [F, n_bins]} with Z_a ≤ Z_b, normalised as ASE's ``get_rdf`` and LAMMPS:
    g_ab(r) = V n_ab(r) / (N_a N_b · shell volume), n_ab the (a-centred, b-neighbour) pair count,
    so g → 1 at large r for an ideal gas (→ (N_a − 1)/N_a for a = b). ``r_max`` must not exceed
    half the smallest cell height.
    """
    if isinstance(positions, MDState):
        numbers = replica_numbers(positions)
    positions, cell, pbc = as_frames(positions, cell, pbc)
    if cell is None or not bool(pbc.all()):
        raise InputError("the RDF needs a cell periodic in all three directions")
    half_height = float(cell_heights(cell).min()) / 2
    if r_max > half_height + 1e-9:
        raise InputError(f"RDF r_max {r_max} Å exceeds half the cell height {half_height:.3f} Å")
    numbers = torch.as_tensor(numbers).long()
    n_bins = _n_bins(r_max, dr)
    edges = dr * torch.arange(n_bins + 1, dtype=_F64)
    shells = 4.0 / 3.0 * math.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    volume = torch.linalg.det(cell).abs()[:, None]
    rdfs = {}
    for a, b in element_pairs(numbers):
        ia, ib = torch.nonzero(numbers == a)[:, 0], torch.nonzero(numbers == b)[:, 0]
        if a == b:
            k, m = torch.triu_indices(len(ia), len(ia), offset=1)
            i, j, ordered = ia[k], ia[m], 2.0  # each unordered pair is two (centre, neighbour)
        else:
            i, j, ordered = ia.repeat_interleave(len(ib)), ib.repeat(len(ia)), 1.0
        distances = pair_vectors(positions, i, j, cell, pbc).norm(dim=-1)
        counts = ordered * smeared_histogram(distances, 0.0, dr, n_bins, sigma)
        rdfs[(a, b)] = counts * volume / (len(ia) * len(ib) * shells)
    return bin_centres(0.0, dr, n_bins), rdfs


def angular_distribution(
    positions, triplets, dtheta: float = 1.0, sigma: float = 0.5, cell=None, pbc=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distribution of the bond angles (i, j, k) of ``triplets`` [n_angles, 3] (e.g. every angle
    of a bond list, :func:`~stablemd.analysis.geometry.angle_triplets`): centres θ [n_bins]
    (degrees) and density [F, n_bins] 1/degree (integrates to 1 over 0–180°; ``dtheta`` and
    ``sigma`` in degrees)."""
    angles = bond_angles(positions, triplets, cell, pbc)
    n_bins = _n_bins(180.0, dtheta)
    counts = smeared_histogram(angles, 0.0, dtheta, n_bins, sigma)
    return bin_centres(0.0, dtheta, n_bins), counts / (angles.shape[-1] * dtheta)


def bond_length_distribution(
    positions,
    bonds,
    r_min: float = 0.0,
    r_max: float = 3.0,
    dr: float = DR_A,
    sigma: float = SIGMA_A,
    cell=None,
    pbc=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distribution of bond lengths: centres r [n_bins] Å and density [F, n_bins] 1/Å over
    [r_min, r_max) (integrates to the fraction of bonds in range)."""
    lengths = bond_lengths(positions, bonds, cell, pbc)
    n_bins = _n_bins(r_max - r_min, dr)
    counts = smeared_histogram(lengths, r_min, dr, n_bins, sigma)
    return bin_centres(r_min, dr, n_bins), counts / (lengths.shape[-1] * dr)


@dataclass
class ReferenceObservables:
    """Frame-averaged observables of a set of structures (e.g. a training set).

    ``r`` [n_bins] Å and ``h_r`` [n_bins] 1/Å; for periodic frames ``rdf_r`` and ``rdf``
    {(Z_a, Z_b): g [n_bins]}; with bonds, ``bond_lengths`` [n_bonds] Å (mean per bond).
    """

    r: torch.Tensor
    h_r: torch.Tensor
    rdf_r: torch.Tensor | None = None
    rdf: dict[tuple[int, int], torch.Tensor] | None = None
    bond_lengths: torch.Tensor | None = None


def stack_frames(frames: Sequence[Atoms]) -> tuple[torch.Tensor, ...]:
    """positions [F, N, 3], numbers [N], cell [F, 3, 3], pbc [F, 3] of same-structure frames."""
    if len(frames) == 0:
        raise InputError("no frames given")
    numbers = frames[0].numbers
    for k, atoms in enumerate(frames):
        if not np.array_equal(atoms.numbers, numbers):
            raise InputError(f"frame {k}: atoms differ from frame 0 (expected one structure)")
    return (
        torch.as_tensor(np.stack([a.positions for a in frames]), dtype=_F64),
        torch.as_tensor(numbers, dtype=torch.long),
        torch.as_tensor(np.stack([np.asarray(a.cell) for a in frames]), dtype=_F64),
        torch.as_tensor(np.stack([a.pbc for a in frames])),
    )


def rdf_range(cell, dr: float = DR_A) -> float:
    """The RDF range (Å) for a box: 6 Å or, in a smaller box, the largest multiple of ``dr``
    within half the smallest cell height of ``cell`` [3, 3] or [F, 3, 3]."""
    half_height = float(cell_heights(torch.as_tensor(cell, dtype=_F64)).min()) / 2
    return min(DEFAULT_RDF_R_MAX_A, dr * math.floor(half_height / dr + 1e-9))


def reference_observables(
    frames: Sequence[Atoms],
    bonds=None,
    r_max: float = 10.0,
    rdf_r_max: float | None = None,
    dr: float = DR_A,
    sigma: float = SIGMA_A,
    chunk: int = 64,
) -> ReferenceObservables:
    """h(r), RDFs (periodic frames only) and mean bond lengths averaged over ``frames``.

    ``rdf_r_max`` defaults to :func:`rdf_range` of the frames' cells. Frames must share one
    atom order; they are processed ``chunk`` at a time to bound memory.
    """
    positions, numbers, cell, pbc = stack_frames(frames)
    periodic = bool(pbc.any())
    if periodic and rdf_r_max is None:
        rdf_r_max = rdf_range(cell, dr)
    box = (cell, pbc) if periodic else (None, None)
    h_sum, rdf_sum, rdf_r = 0.0, {}, None
    for start in range(0, len(frames), chunk):
        part = slice(start, start + chunk)
        part_box = (box[0][part], box[1][part]) if periodic else box
        r, h = distance_histogram_h_r(positions[part], r_max, dr, sigma, *part_box)
        h_sum = h_sum + h.sum(0)
        if periodic:
            rdf_r, g = radial_distribution(
                positions[part], numbers, *part_box, r_max=rdf_r_max, dr=dr, sigma=sigma
            )
            for pair, values in g.items():
                rdf_sum[pair] = rdf_sum.get(pair, 0.0) + values.sum(0)
    n = len(frames)
    return ReferenceObservables(
        r=r,
        h_r=h_sum / n,
        rdf_r=rdf_r,
        rdf={pair: total / n for pair, total in rdf_sum.items()} if periodic else None,
        bond_lengths=None if bonds is None else bond_lengths(positions, bonds, *box).mean(0),
    )
