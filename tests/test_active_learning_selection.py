"""Batch selection: max-det picks the batch of largest posterior determinant, max-dist the
farthest points, random a seeded sample."""

from __future__ import annotations

import itertools

import pytest
import torch

from stablemd.core.errors import InputError
from stablemd.explore.active_learning.selection import (
    select,
    select_max_det,
    select_max_dist,
    select_random,
)
from stablemd.explore.uncertainty.posterior import FeatureGram, Posterior


def posterior_of(training: torch.Tensor, noise: float = 0.1) -> Posterior:
    sums = FeatureGram(training.shape[1])
    sums.add(training)
    return Posterior.fit(sums, noise)


def log_det(candidates, posterior, batch):
    """log det(Σ_B + σ_n² I) of the batch B, from the posterior covariance."""
    phi = candidates[list(batch)].double()
    covariance = phi @ posterior.precision @ phi.T / posterior.scale
    return float(torch.logdet(covariance + posterior.noise**2 * torch.eye(len(batch))))


def test_max_det_picks_the_analytically_best_batch():
    """Training along x only; candidates: two copies of the most uncertain direction (y), a
    less uncertain one (z, shorter) and one along the known x. The top-variance batch of two
    would take both copies of y; the batch of largest determinant takes y and z, and so does
    greedy max-det, as exhaustive search over all pairs and triples confirms."""
    training = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.0, 0.0]], dtype=torch.float64)
    posterior = posterior_of(training)
    candidates = torch.tensor(
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.7]], dtype=torch.float64
    )
    for size in (2, 3):
        chosen = select_max_det(candidates, posterior, size)
        best = max(
            itertools.combinations(range(4), size),
            key=lambda batch: log_det(candidates, posterior, batch),
        )
        assert sorted(chosen.indices) == sorted(best)
    assert select_max_det(candidates, posterior, 2).indices == [0, 3]
    scores = select_max_det(candidates, posterior, 4).scores
    assert scores == sorted(scores, reverse=True)  # conditional variances only shrink


def test_max_det_first_pick_is_the_largest_posterior_std_and_matches_it():
    generator = torch.Generator().manual_seed(0)
    training = torch.randn(20, 6, generator=generator, dtype=torch.float64)
    candidates = torch.randn(15, 6, generator=generator, dtype=torch.float64) * 2
    posterior = posterior_of(training)
    chosen = select_max_det(candidates, posterior, 1)
    std = posterior.std(candidates)
    assert chosen.indices == [int(torch.argmax(std))]
    assert chosen.scores[0] == pytest.approx(float(std.max()), rel=1e-10)


def test_max_det_after_a_pick_scores_the_posterior_given_that_label():
    """The second pick's score is the posterior std of a GP refitted with the first pick added
    to the training set (the rank-one update is that refit)."""
    generator = torch.Generator().manual_seed(1)
    training = torch.randn(10, 5, generator=generator, dtype=torch.float64)
    candidates = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    posterior = posterior_of(training)
    first, second = select_max_det(candidates, posterior, 2).indices
    # refit with the first pick: the kernel scale stays that of the first posterior
    sums = FeatureGram(5)
    sums.add(torch.cat([training, candidates[[first]]]))
    d = torch.eye(5, dtype=torch.float64)
    matrix = sums.gram / posterior.scale + posterior.noise**2 * d
    precision = posterior.noise**2 * torch.linalg.inv(matrix)
    refitted = Posterior(precision, posterior.scale, posterior.noise)
    std = refitted.std(candidates)
    std[first] = -1
    assert second == int(torch.argmax(std))
    assert select_max_det(candidates, posterior, 2).scores[1] == pytest.approx(float(std.max()))


def test_max_dist_picks_farthest_from_training_and_earlier_picks():
    training = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    candidates = torch.tensor([[1.0, 0.0], [5.0, 0.0], [5.1, 0.0], [0.0, 3.0]], dtype=torch.float64)
    chosen = select_max_dist(candidates, training, scale=1.0, size=3)
    # 5.1 first; then (0, 3) at 3 from the origin beats 5.0, which is 0.1 from 5.1
    assert chosen.indices == [2, 3, 0]
    assert chosen.scores == pytest.approx([5.1, 3.0, 1.0])


def test_random_is_seeded_and_without_replacement():
    a, b = select_random(10, 5, seed=3), select_random(10, 5, seed=3)
    assert a.indices == b.indices and len(set(a.indices)) == 5
    assert select_random(10, 5, seed=4).indices != a.indices
    assert len(select_random(3, 5, seed=0).indices) == 3


def test_unknown_method_is_refused():
    with pytest.raises(InputError, match="--selection"):
        select("lcmd", torch.zeros(2, 2), None, torch.zeros(1, 2), 1, 0)
