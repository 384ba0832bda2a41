"""Batch selection among candidate structures: max-det (default), max-dist and random.

All three work on structure features φ (the mean over atoms of the gradient features of
:mod:`~stablemd.explore.uncertainty.features`), the same features the uncertainty uses.

- ``max-det``: greedy maximisation of det(Σ_B + σ_n² I), Σ the GP posterior covariance of the
  candidates given the training set, Σ_ij = φ_iᵀ P φ_j / s with the structure posterior's
  precision P and kernel scale s (:class:`~stablemd.explore.uncertainty.posterior.Posterior`).
  Each pick is the candidate of largest conditional variance; labelling it (noise σ_n²) updates
  the covariance by rank one, Σ ← Σ − Σ_:k Σ_k: / (Σ_kk + σ_n²), so a near-copy of a chosen
  structure has almost no variance left and is not chosen again.
- ``max-dist``: greedy farthest point: each pick is the candidate farthest (Euclidean, in the
  features scaled by 1/√s) from its nearest training structure or earlier pick.
- ``random``: uniformly without replacement, seeded.

Hand-written (a few lines of linear algebra on the posterior the uncertainty already holds)
rather than taken from bmdal-reg: its selection methods expect its own feature maps and
kernels, and would pull some twenty packages into the environment for these loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from stablemd.core.errors import InputError
from stablemd.explore.uncertainty.posterior import Posterior

SELECTIONS = ("max-det", "max-dist", "random")


@dataclass
class Selection:
    """Indices of the chosen candidates in the order picked, and the score of each pick:
    its conditional posterior standard deviation (max-det, in units of the scaled kernel), its
    distance to the nearest earlier structure (max-dist) or None (random)."""

    indices: list[int]
    scores: list[float | None]


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


def select(
    method: str,
    candidates: torch.Tensor,
    posterior: Posterior,
    training: torch.Tensor,
    size: int,
    seed: int,
) -> Selection:
    """``size`` candidates by ``method`` (one of :data:`SELECTIONS`)."""
    if method not in SELECTIONS:
        raise InputError(f"--selection: unknown method {method!r}; choose from {SELECTIONS}")
    if method == "max-det":
        return select_max_det(candidates, posterior, size)
    if method == "max-dist":
        return select_max_dist(candidates, training, posterior.scale, size)
    return select_random(len(candidates), size, seed)
