"""Batch selection among candidate structures: max-det (default), max-dist, random and
max-grade.

The first three work on structure features φ (the mean over atoms of the gradient features of
:mod:`~stablemd.explore.uncertainty.features`), the same features the uncertainty uses;
max-grade on the per-atom latent features of the early warning
(:mod:`~stablemd.models.latent_domain`).

- ``max-det``: greedy maximisation of det(Σ_B + σ_n² I), Σ the GP posterior covariance of the
  candidates given the training set, Σ_ij = φ_iᵀ P φ_j / s with the structure posterior's
  precision P and kernel scale s (:class:`~stablemd.explore.uncertainty.posterior.Posterior`).
  Each pick is the candidate of largest conditional variance; labelling it (noise σ_n²) updates
  the covariance by rank one, Σ ← Σ − Σ_:k Σ_k: / (Σ_kk + σ_n²), so a near-copy of a chosen
  structure has almost no variance left and is not chosen again.
- ``max-dist``: greedy farthest point: each pick is the candidate farthest (Euclidean, in the
  features scaled by 1/√s) from its nearest training structure or earlier pick.
- ``random``: uniformly without replacement, seeded.
- ``max-grade``: greedy largest atomic extrapolation grade γ_i = max_j |(b_i A⁻¹)_j| against a
  latent domain fitted per element on the training atoms' features. Each pick is the candidate
  whose most extrapolating atom has the largest γ; its atoms then join the training atoms of
  their elements, those elements' domains are refitted and every candidate regraded, so a
  near-copy of a pick falls inside (γ ≤ 1) and is not chosen again before other
  extrapolating candidates.

Hand-written (a few lines of linear algebra on the posterior the uncertainty already holds)
rather than taken from bmdal-reg: its selection methods expect its own feature maps and
kernels, and would pull some twenty packages into the environment for these loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase.data import chemical_symbols

from stablemd.core.errors import InputError
from stablemd.explore.uncertainty.posterior import Posterior
from stablemd.models.latent_domain import fit_element

SELECTIONS = ("max-det", "max-dist", "random", "max-grade")


@dataclass
class Selection:
    """Indices of the chosen candidates in the order picked, and the score of each pick:
    its conditional posterior standard deviation (max-det, in units of the scaled kernel), its
    distance to the nearest earlier structure (max-dist), its largest atomic extrapolation
    grade (max-grade) or None (random); for max-grade, ``atoms`` holds the index within its
    candidate of the atom that had that grade (None for the others)."""

    indices: list[int]
    scores: list[float | None]
    atoms: list[int] | None = None


def select_max_det(candidates: torch.Tensor, posterior: Posterior, size: int) -> Selection:
    """Greedy max-det of ``size`` among candidate features [n, d] (see the module docstring)."""
    phi = candidates.detach().to(torch.float64)
    covariance = phi @ posterior.precision @ phi.T / posterior.scale
    noise = posterior.noise**2
    indices, scores = [], []
    for _ in range(min(size, len(phi))):
        variance = covariance.diagonal().clone()
        variance[indices] = -torch.inf
        k = int(torch.argmax(variance))
        indices.append(k)
        scores.append(float(variance[k].clamp_min(0).sqrt()))
        column = covariance[:, k].clone()
        covariance = covariance - torch.outer(column, column) / (column[k] + noise)
    return Selection(indices, scores)


def select_max_dist(
    candidates: torch.Tensor, training: torch.Tensor, scale: float, size: int
) -> Selection:
    """Greedy farthest-point selection of ``size`` candidates [n, d] from the ``training``
    features [m, d], both divided by √``scale``."""
    phi = candidates.detach().to(torch.float64) / scale**0.5
    known = training.detach().to(torch.float64) / scale**0.5
    nearest = (
        torch.cdist(phi, known).min(dim=1).values
        if len(known)
        else torch.full((len(phi),), torch.inf, dtype=torch.float64)
    )
    indices, scores = [], []
    for _ in range(min(size, len(phi))):
        distance = nearest.clone()
        distance[indices] = -torch.inf
        k = int(torch.argmax(distance))
        indices.append(k)
        scores.append(float(distance[k]))
        nearest = torch.minimum(nearest, (phi - phi[k]).norm(dim=1))
    return Selection(indices, scores)


def select_random(n_candidates: int, size: int, seed: int) -> Selection:
    """``size`` of ``n_candidates`` uniformly at random without replacement."""
    chosen = np.random.default_rng(seed).permutation(n_candidates)[:size]
    return Selection([int(i) for i in chosen], [None] * len(chosen))


def select_max_grade(
    candidates: torch.Tensor,
    numbers: torch.Tensor,
    sizes: Sequence[int],
    training: torch.Tensor,
    training_numbers: torch.Tensor,
    size: int,
) -> Selection:
    """Greedy max-grade of ``size`` candidate structures (see the module docstring).

    ``candidates`` [n_atoms, F]: the latent features of every candidate's atoms, candidate 0's
    ``sizes[0]`` atoms first, then candidate 1's, and so on, with their atomic ``numbers``;
    ``training`` [m, F] and ``training_numbers``: those of the training atoms. Each element's
    domain is refitted from its training atoms and the atoms of the earlier picks (an SVD, a
    pivoted QR and a MaxVol of that element's rows), so the grades are exactly those of a
    domain fitted on the training set with the earlier picks added.
    """
    candidates = candidates.detach().to(torch.float64)
    sizes = torch.as_tensor(list(sizes), dtype=torch.long)
    if int(sizes.sum()) != len(candidates) or len(numbers) != len(candidates):
        raise ValueError("candidate features, numbers and sizes do not match")
    owner = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    column = torch.arange(len(candidates)) - (torch.cumsum(sizes, 0) - sizes)[owner]
    broken = ~torch.isfinite(candidates).all(dim=1)
    if bool(broken.any()):
        k = int(owner[broken][0])
        raise InputError(f"candidate {k} has non-finite latent features")
    if not bool(torch.isfinite(training).all()):
        raise InputError("the training structures' latent features contain non-finite numbers")
    known = {
        z: training[training_numbers == z].detach().to(torch.float64)
        for z in torch.unique(training_numbers).tolist()
    }
    for z in torch.unique(numbers).tolist():
        if z not in known:
            raise InputError(
                f"a candidate holds {chemical_symbols[z]}, which no training structure holds"
            )
    grade = torch.empty(len(candidates), dtype=torch.float64)

    def regrade(elements: list[int]) -> None:
        for z in elements:
            mask = numbers == z
            grade[mask] = fit_element(known[z]).grade(candidates[mask])

    regrade(torch.unique(numbers).tolist())
    indices, scores, atoms = [], [], []
    for _ in range(min(size, len(sizes))):
        table = torch.full((len(sizes), int(sizes.max())), -torch.inf, dtype=torch.float64)
        table[owner, column] = grade
        table[indices] = -torch.inf
        k = int(torch.argmax(table.amax(dim=1)))
        atom = int(torch.argmax(table[k]))
        indices.append(k)
        scores.append(float(table[k, atom]))
        atoms.append(atom)
        picked = owner == k
        elements = torch.unique(numbers[picked]).tolist()
        for z in elements:
            known[z] = torch.cat([known[z], candidates[picked & (numbers == z)]])
        regrade(elements)
    return Selection(indices, scores, atoms)


def select(
    method: str,
    candidates: torch.Tensor,
    posterior: Posterior,
    training: torch.Tensor,
    size: int,
    seed: int,
) -> Selection:
    """``size`` candidates by ``method``, one of :data:`SELECTIONS` that work on structure
    features (max-grade needs the atoms' latent features: :func:`select_max_grade`)."""
    if method == "max-grade":
        raise ValueError("max-grade selects on the atoms' latent features: select_max_grade")
    if method not in SELECTIONS:
        raise InputError(f"--selection: unknown method {method!r}; choose from {SELECTIONS}")
    if method == "max-det":
        return select_max_det(candidates, posterior, size)
    if method == "max-dist":
        return select_max_dist(candidates, training, posterior.scale, size)
    return select_random(len(candidates), size, seed)
