"""Temperature reweighting of samples drawn at T₁ to averages at T₂ (METHODS §1).

w_i ∝ exp(−U_i (1/k_BT₂ − 1/k_BT₁)), normalised to Σ w_i = 1 by a log-sum-exp; the effective
sample size N_eff = exp(−Σ w_i ln w_i) is N for uniform weights and → 1 when one sample
dominates. Energies in eV, temperatures in K.
"""

from __future__ import annotations

import torch

from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K


def reweighting_weights(energies, temperature_K: float, target_temperature_K: float):
    """Normalised weights [N] that turn samples at ``temperature_K`` (potential ``energies``
    [N] eV) into samples at ``target_temperature_K``; differentiable in the energies."""
    if temperature_K <= 0 or target_temperature_K <= 0:
        raise InputError(
            f"temperatures must be positive, got {temperature_K} K and {target_temperature_K} K"
        )
    energies = torch.as_tensor(energies, dtype=torch.float64)
    beta_shift = 1.0 / (KB_EV_PER_K * target_temperature_K) - 1.0 / (KB_EV_PER_K * temperature_K)
    return torch.softmax(-energies * beta_shift, dim=0)


def effective_sample_size(weights) -> torch.Tensor:
    """N_eff = exp(−Σ w_i ln w_i) of normalised ``weights`` [N] (0 ln 0 = 0)."""
    weights = torch.as_tensor(weights, dtype=torch.float64)
    return torch.exp(-torch.special.xlogy(weights, weights).sum(0))


def weighted_average(values, weights) -> torch.Tensor:
    """Σ_i w_i g_i of per-sample ``values`` [N, ...] (e.g. h(r) per frame) with ``weights`` [N]."""
    values = torch.as_tensor(values, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if values.shape[0] != weights.shape[0]:
        raise InputError(f"{values.shape[0]} samples but {weights.shape[0]} weights")
    return torch.tensordot(weights, values, dims=([0], [0]))


def reweight(values, energies, temperature_K: float, target_temperature_K: float):
    """Average of ``values`` [N, ...] at ``target_temperature_K`` and its N_eff."""
    weights = reweighting_weights(energies, temperature_K, target_temperature_K)
    return weighted_average(values, weights), effective_sample_size(weights)
