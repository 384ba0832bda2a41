"""Batch selection: max-det picks the batch of largest posterior determinant, max-dist the
farthest points, random a seeded sample, max-grade the structures whose atoms extrapolate most
in the model's latent space."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from md_support import rattled, single_thread  # noqa: F401 (fixture)

from stablemd.core.errors import InputError
from stablemd.explore.active_learning.selection import (
    select,
    select_max_det,
    select_max_dist,
    select_max_grade,
    select_random,
)
from stablemd.explore.uncertainty.posterior import FeatureGram, Posterior
from stablemd.models.latent_domain import MAXVOL_TOLERANCE, LatentDomain, latent_features
from stablemd.models.painn import PaiNN


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


# --- max-grade: the latent extrapolation grade of the early warning -----------------------
# A tiny PaiNN (8 features, one interaction, float64, untrained: the grade is a statement about
# the features, whatever the weights) and 30 rattled ethanols (C 0, C 1, O 2, H 3–8) as its
# training set. Squeezing an atom onto a neighbour sends features out of the domain (PaiNN's
# radial filters grow as 1/r; docs/early_warning.md).


@pytest.fixture(scope="module")
def latent_case():
    torch.manual_seed(0)
    potential = PaiNN([1, 6, 8], cutoff=4.0, n_features=8, n_interactions=1).double().eval()
    training = rattled(molecule("CH3CH2OH"), 30, scale=0.05, seed=0)
    return potential, training, latent_features(potential, training)


def squeezed(atoms: Atoms, moved: int, onto: int, distance: float) -> Atoms:
    """A copy of ``atoms`` with atom ``moved`` put ``distance`` Å from atom ``onto``, along
    their bond."""
    out = atoms.copy()
    bond = out.positions[moved] - out.positions[onto]
    out.positions[moved] = out.positions[onto] + distance * bond / np.linalg.norm(bond)
    return out


def select_by_grade(latent_case, candidates: list[Atoms], size: int):
    potential, _, (features, numbers) = latent_case
    return select_max_grade(
        *latent_features(potential, candidates), [len(a) for a in candidates],
        features, numbers, size,
    )  # fmt: skip


def largest_grade(domain: LatentDomain, potential, atoms: Atoms) -> float:
    return float(domain.grade(*latent_features(potential, [atoms])).max())


def test_max_grade_picks_the_atom_far_outside_first_and_names_it(latent_case, single_thread):  # noqa: F811
    """Three fresh ethanols like the training ones and one whose H 4 is squeezed to 0.3 Å
    from C 1: that one is picked first, for its atom 4, with the grade the early warning's
    domain fitted on the training set gives it."""
    potential, training, (features, numbers) = latent_case
    fresh = rattled(molecule("CH3CH2OH"), 3, scale=0.05, seed=11)
    planted = squeezed(training[5], moved=4, onto=1, distance=0.3)
    chosen = select_by_grade(latent_case, [fresh[0], fresh[1], planted, fresh[2]], 4)
    assert chosen.indices[0] == 2 and chosen.atoms[0] == 4
    domain = LatentDomain.fit(features, numbers)
    assert chosen.scores[0] == pytest.approx(largest_grade(domain, potential, planted))
    assert chosen.scores[0] > 2 * max(largest_grade(domain, potential, a) for a in fresh)
    assert sorted(chosen.indices) == [0, 1, 2, 3]


def test_max_grade_a_copy_of_a_training_frame_is_inside_and_picked_last(latent_case, single_thread):  # noqa: F811
    potential, training, _ = latent_case
    copy = training[5].copy()
    out_of_domain = [
        squeezed(training[5], moved=4, onto=1, distance=0.3),
        squeezed(training[5], moved=6, onto=0, distance=0.25),
        squeezed(training[5], moved=8, onto=2, distance=0.45),
    ]
    chosen = select_by_grade(latent_case, [copy, *out_of_domain], 4)
    assert chosen.indices[-1] == 0
    assert chosen.scores[-1] <= 1 + MAXVOL_TOLERANCE  # inside, even after three picks
    assert min(chosen.scores[:-1]) > 1 + MAXVOL_TOLERANCE


def test_max_grade_takes_one_of_two_copies_before_a_distinct_candidate(latent_case, single_thread):  # noqa: F811
    """Two copies of an O–H squeezed to 0.3 Å (the largest grade) and an H–C squeezed to 0.3 Å:
    once the first copy's atoms join the domain, the second copy is inside and the distinct
    candidate comes next, with the grade a domain refitted with the first pick gives it."""
    potential, training, (features, numbers) = latent_case
    copy = squeezed(training[5], moved=8, onto=2, distance=0.3)
    distinct = squeezed(training[5], moved=4, onto=1, distance=0.3)
    chosen = select_by_grade(latent_case, [copy, distinct, copy.copy()], 3)
    assert chosen.indices == [0, 1, 2]
    assert chosen.scores[2] <= 1 + MAXVOL_TOLERANCE < chosen.scores[1]
    first, first_numbers = latent_features(potential, [copy])
    refitted = LatentDomain.fit(torch.cat([features, first]), torch.cat([numbers, first_numbers]))
    assert chosen.scores[1] == pytest.approx(largest_grade(refitted, potential, distinct))


def test_max_grade_refuses_non_finite_features_naming_the_candidate():
    training = torch.eye(3, dtype=torch.float64)
    numbers = torch.ones(3, dtype=torch.long)
    candidates = torch.ones(4, 3, dtype=torch.float64)
    candidates[3, 1] = torch.nan
    with pytest.raises(InputError, match="candidate 1 has non-finite latent features"):
        select_max_grade(candidates, torch.ones(4, dtype=torch.long), [2, 2], training, numbers, 1)
    with pytest.raises(InputError, match="holds O, which no training structure holds"):
        select_max_grade(candidates[:2], torch.tensor([1, 8]), [2], training, numbers, 1)
