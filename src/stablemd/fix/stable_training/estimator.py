"""The Boltzmann estimator: gradients of observable losses without differentiating through MD.

For samples Γ_i of the model's own Boltzmann distribution at temperature T, an observable
g(Γ) [d] and a reference g_ref [d], the loss L = ‖E[g] − g_ref‖² has the gradient

    ∇_θ L = 2 (E[g] − g_ref)ᵀ ∂E[g]/∂θ,   ∂E[g]/∂θ = −Cov(g, ∇_θ U_θ) / k_BT

(StABlE paper, Eq. 6). The N-sample covariance estimator contracted with the loss direction is a
weighted sum of per-sample energy gradients, so the whole gradient is ONE backward pass through

    S(θ) = −(2/k_BT) Σ_i w_i U_θ(Γ_i),   w_i = (g_i − ḡ)ᵀ(ḡ − g_ref) / (N − 1)

with the weights held fixed (METHODS §1). ``per_sample_gradient`` builds the N per-sample
gradients instead, as the authors' code does; it is kept as the test reference.

Samples may be split into groups (e.g. one per MD replica): each group gives its own estimate
ḡ_k and the loss is the mean over groups of ‖ḡ_k − g_ref‖².

Localized estimator: a sample is a neighbourhood γ (a set of atoms of one frame) and U_θ(γ) the
sum of the model's per-atom energies over it (:class:`LocalSamples`). Energies eV, T in K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.fix.stable_training.local_samples import LocalSamples
from stablemd.models.potential import Potential

_F64 = torch.float64


@dataclass
class ObservableLoss:
    """L = mean over groups ‖ḡ_k − g_ref‖² (in units of g²), the group means ḡ [n_groups, d]
    and the number of samples."""

    loss: float
    means: torch.Tensor
    n_samples: int


def _groups(groups: torch.Tensor | None, n_samples: int) -> tuple[torch.Tensor, int]:
    if groups is None:
        return torch.zeros(n_samples, dtype=torch.long), 1
    groups = torch.as_tensor(groups, dtype=torch.long)
    if groups.shape != (n_samples,):
        raise InputError(f"groups: {tuple(groups.shape)} labels for {n_samples} samples")
    _, groups = torch.unique(groups, return_inverse=True)
    return groups, int(groups.max()) + 1


def _check_observables(observables: torch.Tensor, reference: torch.Tensor) -> None:
    if observables.dim() != 2 or observables.shape[1:] != reference.shape:
        raise InputError(
            f"observables {list(observables.shape)} must be [n_samples, {list(reference.shape)}]"
            f" to match the reference {list(reference.shape)}"
        )


def _group_means(observables: torch.Tensor, groups) -> tuple[torch.Tensor, ...]:
    """Group labels [N] (0 … G−1), sizes [G] and means ḡ_k [G, d] of ``observables`` [N, d]."""
    labels, n_groups = _groups(groups, observables.shape[0])
    counts = torch.bincount(labels, minlength=n_groups).to(_F64)
    if bool((counts < 2).any()):
        raise InputError("the Boltzmann estimator needs at least two samples in every group")
    means = torch.zeros(n_groups, observables.shape[1], dtype=_F64)
    return labels, counts, means.index_add(0, labels, observables) / counts[:, None]


def _as_samples(observables, reference) -> tuple[torch.Tensor, torch.Tensor]:
    observables = torch.as_tensor(observables, dtype=_F64).detach()
    reference = torch.as_tensor(reference, dtype=_F64).detach()
    _check_observables(observables, reference)
    return observables, reference


def jacobian_vector_product(
    potential: Potential,
    samples: Batch,
    observables,
    directions,
    temperature_K: float,
    local_samples: LocalSamples | None = None,
    groups=None,
    frames_per_pass: int | None = None,
) -> list[torch.Tensor]:
    """Unbiased estimate of Σ_k v_kᵀ ∂E[g]/∂θ from the samples of each group k, one backward pass.

    ``directions`` [n_groups, d] (v_k); the rest as in :func:`boltzmann_gradient`. Equals
    −(1/k_BT) Σ_i w_i ∇_θ U(Γ_i) with w_i = (g_i − ḡ_k)ᵀ v_k / (N_k − 1).
    """
    observables = torch.as_tensor(observables, dtype=_F64).detach()
    local_samples = local_samples or LocalSamples.whole_systems(samples)
    if observables.dim() != 2 or observables.shape[0] != local_samples.n_samples:
        raise InputError(
            f"observables {list(observables.shape)}: expected one row for each of the "
            f"{local_samples.n_samples} samples"
        )
    labels, counts, means = _group_means(observables, groups)
    directions = torch.as_tensor(directions, dtype=_F64).detach().reshape(means.shape)
    weights = ((observables - means[labels]) * directions[labels]).sum(-1) / (counts[labels] - 1)
    factor = -1.0 / (KB_EV_PER_K * temperature_K)
    coefficients = factor * local_samples.atom_coefficients(weights, samples.n_atoms)
    parameters = [p for p in potential.parameters() if p.requires_grad]
    gradient = [torch.zeros_like(p) for p in parameters]
    step = frames_per_pass or samples.n_systems
    for first in range(0, samples.n_systems, step):
        chunk, atoms = _frames(samples, first, first + step)
        energies = potential(chunk, once_differentiable=True)["energies"]
        surrogate = (coefficients[atoms].to(energies.dtype) * energies).sum()
        for total, part in zip(
            gradient,
            torch.autograd.grad(surrogate, parameters, allow_unused=True, materialize_grads=True),
            strict=True,
        ):
            total += part
    return gradient


def boltzmann_gradient(
    potential: Potential,
    samples: Batch,
    observables,
    reference,
    temperature_K: float,
    local_samples: LocalSamples | None = None,
    groups=None,
    frames_per_pass: int | None = None,
) -> tuple[ObservableLoss, list[torch.Tensor]]:
    """The loss and its gradient with respect to ``potential.parameters()`` (one backward pass).

    ``samples`` holds the sampled frames; ``observables`` [n_samples, d] is g of each sample
    (a frame, or a neighbourhood given by ``local_samples``); ``reference`` [d]; ``groups``
    [n_samples] labels (default: one group). ``frames_per_pass`` splits the frames into chunks
    whose backward passes add up, bounding memory; the result is the same.
    """
    observables, reference = _as_samples(observables, reference)
    _, _, means = _group_means(observables, groups)
    directions = 2.0 * (means - reference) / len(means)
    gradient = jacobian_vector_product(
        potential, samples, observables, directions, temperature_K, local_samples, groups,
        frames_per_pass,
    )  # fmt: skip
    loss = float((means - reference).pow(2).sum(-1).mean())
    return ObservableLoss(loss, means, observables.shape[0]), gradient


def _frames(batch: Batch, first: int, stop: int) -> tuple[Batch, torch.Tensor]:
    """Systems ``first`` … ``stop − 1`` of a batch, and the indices of their atoms in it."""
    if first == 0 and stop >= batch.n_systems:
        return batch, torch.arange(batch.n_atoms)
    index = torch.arange(batch.n_systems)
    return batch.select_systems((index >= first) & (index < stop))


def per_sample_gradient(
    potential: Potential,
    samples: Batch,
    observables,
    reference,
    temperature_K: float,
    local_samples: LocalSamples | None = None,
    groups=None,
    samples_per_pass: int = 40,
) -> tuple[ObservableLoss, list[torch.Tensor]]:
    """The same gradient from per-sample parameter gradients (paper Eq. 6): test reference.

    Builds ∇_θ U(Γ_i) for every sample (batched backward passes of ``samples_per_pass``
    samples, as the authors' code), then the covariance estimator per group. Costs N backward
    passes and N × n_parameters memory.
    """
    local_samples = local_samples or LocalSamples.whole_systems(samples)
    observables, reference = _as_samples(observables, reference)
    labels, _, means = _group_means(observables, groups)
    parameters = [p for p in potential.parameters() if p.requires_grad]
    energies = local_samples.energies(potential(samples)["energies"])
    n = energies.shape[0]
    rows: list[torch.Tensor] = []
    for first in range(0, n, samples_per_pass):
        basis = torch.eye(n, dtype=energies.dtype)[first : first + samples_per_pass]
        grads = torch.autograd.grad(
            energies,
            parameters,
            grad_outputs=basis,
            is_grads_batched=True,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        # unused parameters come back as one unbatched zero tensor
        grads = [g.expand(len(basis), *p.shape) for g, p in zip(grads, parameters, strict=True)]
        rows.append(torch.cat([g.reshape(len(basis), -1) for g in grads], dim=1).to(_F64))
    per_sample = torch.cat(rows)  # [N, n_parameters]
    kT = KB_EV_PER_K * temperature_K
    flat = torch.zeros(per_sample.shape[1], dtype=_F64)
    for k, mean_g in enumerate(means):
        g, grad_u = observables[labels == k], per_sample[labels == k]
        m = g.shape[0]
        jacobian = (
            m / (kT * (m - 1)) * (torch.outer(mean_g, grad_u.mean(0)) - g.T @ grad_u / m)
        )  # Eq. 6: [d, n_parameters]
        flat += 2 * (mean_g - reference) @ jacobian / len(means)
    loss = float((means - reference).pow(2).sum(-1).mean())
    return ObservableLoss(loss, means, n), _unflatten(flat, parameters)


def _unflatten(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, start = [], 0
    for p in like:
        out.append(flat[start : start + p.numel()].reshape(p.shape).to(p.dtype))
        start += p.numel()
    return out
