"""The Boltzmann estimator: one pass equals the per-sample form, and it is unbiased."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from md_support import rattled
from torch import nn

from stablemd.analysis.structure import distance_histogram_h_r
from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.fix.stable_training.estimator import (
    boltzmann_gradient,
    jacobian_vector_product,
    per_sample_gradient,
)
from stablemd.fix.stable_training.local_samples import (
    LocalSamples,
    molecule_samples,
    select,
    stratify,
)
from stablemd.models.potential import Potential
from stablemd.models.registry import build_potential


def _small_painn(elements=(1, 6, 8)) -> Potential:
    torch.manual_seed(0)
    model = build_potential("painn", elements=list(elements), n_features=8, n_interactions=2)
    return model.to(torch.float64)


def _random_frames(atoms, n_frames: int, noise: float = 0.1, seed: int = 0) -> Batch:
    return Batch.from_atoms(rattled(atoms, n_frames, noise, seed), dtype=torch.float64)


def _relative_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    flat_a = torch.cat([x.reshape(-1) for x in a])
    flat_b = torch.cat([x.reshape(-1) for x in b])
    return float((flat_a - flat_b).norm() / flat_b.norm())


def test_one_pass_gradient_equals_per_sample_estimator_global():
    model = _small_painn()
    samples = _random_frames(molecule("CH3CH2OH"), 12)
    positions = samples.positions.reshape(12, -1, 3)
    _, h = distance_histogram_h_r(positions, r_max=4.0, dr=0.1, sigma=0.1)
    reference = h.mean(0) * 1.3  # some other target
    groups = torch.arange(12) // 4  # three replicas of four samples
    one_pass, grad = boltzmann_gradient(model, samples, h, reference, 500.0, groups=groups)
    per_sample, grad_ref = per_sample_gradient(
        model, samples, h, reference, 500.0, groups=groups, samples_per_pass=5
    )
    assert one_pass.loss == pytest.approx(per_sample.loss, rel=1e-12)
    assert _relative_difference(grad, grad_ref) < 1e-8
    assert torch.cat([g.reshape(-1) for g in grad]).norm() > 0
    _, chunked = boltzmann_gradient(
        model, samples, h, reference, 500.0, groups=groups, frames_per_pass=5
    )
    assert _relative_difference(chunked, grad_ref) < 1e-8


def test_one_pass_gradient_equals_per_sample_estimator_localized():
    model = _small_painn()
    samples = _random_frames(molecule("CH3CH2OH"), 6, seed=1)
    # three overlapping neighbourhoods per frame (atoms 1, 2 and 4 are in two of them)
    groups = [[0, 1, 2], [1, 2, 3, 4], [4, 5, 6, 7, 8]]
    atoms = [9 * f + a for f in range(6) for g in groups for a in g]
    sample = [3 * f + k for f in range(6) for k, g in enumerate(groups) for _ in g]
    local = LocalSamples(torch.tensor(atoms), torch.tensor(sample), 18)
    observables = torch.randn(
        18, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    reference = torch.zeros(3, dtype=torch.float64)
    _, grad = boltzmann_gradient(model, samples, observables, reference, 300.0, local)
    _, grad_ref = per_sample_gradient(model, samples, observables, reference, 300.0, local)
    assert _relative_difference(grad, grad_ref) < 1e-8


def test_molecule_samples_sum_to_the_total_energy():
    model = _small_painn(elements=(1, 8))
    water_pair = molecule("H2O") + molecule("H2O")
    water_pair.positions[3:] += (2.9, 0.0, 0.0)
    samples = _random_frames(water_pair, 4, noise=0.05)
    local = molecule_samples(samples, [0, 0, 0, 1, 1, 1])
    energies = model(samples)["energies"]
    per_molecule = local.energies(energies).reshape(4, 2)
    assert torch.allclose(per_molecule.sum(-1), samples.sum_per_system(energies))
    observables = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    picked = torch.tensor([0, 3, 4, 5, 7])
    subset = select(local, picked)
    zero = torch.zeros(2, dtype=torch.float64)
    _, grad = boltzmann_gradient(model, samples, observables[picked], zero, 300.0, subset)
    _, grad_ref = per_sample_gradient(model, samples, observables[picked], zero, 300.0, subset)
    assert _relative_difference(grad, grad_ref) < 1e-8


def test_stratify_takes_evenly_from_bins():
    deviation = torch.cat([torch.zeros(50), torch.linspace(0.5, 1.0, 10)])
    chosen = stratify(deviation, n_bins=10, per_bin=3, seed=0)
    # 3 from the crowded lowest bin, every sample of the sparse upper bins (1–3 per bin)
    assert int((deviation[chosen] == 0).sum()) == 3
    assert set(torch.nonzero(deviation > 0)[:, 0].tolist()) <= set(chosen.tolist())


def test_estimator_rejects_mismatched_input():
    model = _small_painn()
    samples = _random_frames(molecule("CH3CH2OH"), 4)
    with pytest.raises(InputError, match="observables"):
        boltzmann_gradient(model, samples, torch.zeros(3, 2), torch.zeros(2), 300.0)
    with pytest.raises(InputError, match="at least two samples"):
        groups = torch.tensor([0, 1, 1, 1])
        boltzmann_gradient(model, samples, torch.randn(4, 2), torch.zeros(2), 300.0, groups=groups)


# --- unbiasedness against an exactly solvable system ---------------------------------------


class MorseDimer(Potential):
    """U(r) = D (1 − exp(−a (r − r0)))² for a two-atom system, split evenly over both atoms."""

    kind = "test-morse"

    def __init__(self, depth_eV: float, width_per_A: float, r0_A: float = 1.0):
        super().__init__(elements=[1], cutoff=10.0)
        self.depth = nn.Parameter(torch.tensor(depth_eV, dtype=torch.float64))
        self.width = nn.Parameter(torch.tensor(width_per_A, dtype=torch.float64))
        self.r0 = r0_A
        self.to(torch.float64)

    def hyperparameters(self):
        return {}

    def forward(
        self, batch, neighbors=None, direct_forces=False, features=False, once_differentiable=False
    ):
        pairs = batch.positions.reshape(-1, 2, 3)
        r = (pairs[:, 1] - pairs[:, 0]).norm(dim=-1)
        energy = morse(r, self.depth, self.width, self.r0)
        return {"energies": (energy[:, None] / 2).expand(-1, 2).reshape(-1)}

    def raw_outputs(self, *args):  # pragma: no cover - forward is overridden
        raise NotImplementedError


def morse(r, depth, width, r0):
    return depth * (1 - torch.exp(-width * (r - r0))) ** 2


GRID = torch.linspace(0.4, 3.0, 200_001, dtype=torch.float64)


def _radial_density(depth, width, temperature_K):
    """p(r) ∝ r² exp(−U(r)/k_BT) of the bond length of a dimer in 3-D, on GRID."""
    log_p = 2 * torch.log(GRID) - morse(GRID, depth, width, 1.0) / (KB_EV_PER_K * temperature_K)
    p = torch.exp(log_p - log_p.max())
    return p / torch.trapezoid(p, GRID)


def _exact_average(depth, width, temperature_K):
    """E[g] with g(r) = (r, r²), by quadrature."""
    p = _radial_density(depth, width, temperature_K)
    return torch.stack([torch.trapezoid(p * GRID**k, GRID) for k in (1, 2)])


def test_estimator_is_unbiased_for_a_morse_dimer():
    depth, width, temperature = 0.5, 2.0, 1000.0
    rng = np.random.default_rng(0)
    p = _radial_density(depth, width, temperature).numpy()
    cdf = np.concatenate([[0.0], np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(GRID.numpy()))])
    cdf /= cdf[-1]

    model = MorseDimer(depth, width)
    direction = torch.tensor([1.0, 0.1], dtype=torch.float64)  # v in vᵀ ∂E[g]/∂θ
    n_sets, per_set = 400, 25
    estimates = []
    for _ in range(n_sets):
        r = np.interp(rng.uniform(size=per_set), cdf, GRID.numpy())  # exact samples of r
        axis = rng.normal(size=(per_set, 3))
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        positions = np.stack([np.zeros((per_set, 3)), r[:, None] * axis], axis=1)
        samples = Batch(
            positions=torch.as_tensor(positions.reshape(-1, 3)),
            numbers=torch.ones(2 * per_set, dtype=torch.long),
            system_index=torch.arange(per_set).repeat_interleave(2),
            cell=torch.zeros(per_set, 3, 3, dtype=torch.float64),
            pbc=torch.zeros(per_set, 3, dtype=torch.bool),
        )
        g = torch.as_tensor(np.stack([r, r**2], axis=1))
        grad = jacobian_vector_product(model, samples, g, direction[None], temperature)
        estimates.append(torch.stack([x.detach() for x in grad]))
    estimates = torch.stack(estimates)  # [n_sets, 2] (∂/∂D, ∂/∂a)
    mean = estimates.mean(0)
    standard_error = estimates.std(0) / n_sets**0.5

    h_depth, h_width = 1e-4, 1e-4
    exact = torch.stack(
        [
            direction
            @ (
                _exact_average(depth + h_depth, width, temperature)
                - _exact_average(depth - h_depth, width, temperature)
            )
            / (2 * h_depth),
            direction
            @ (
                _exact_average(depth, width + h_width, temperature)
                - _exact_average(depth, width - h_width, temperature)
            )
            / (2 * h_width),
        ]
    )
    assert bool((standard_error < 0.1 * exact.abs()).all()), (standard_error, exact)
    assert bool(((mean - exact).abs() < 3 * standard_error).all()), (mean, exact, standard_error)
