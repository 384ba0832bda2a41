"""Calibration of an uncertainty u = c·σ on held-out errors (the validation split).

- ``conformal`` (default): c is the ⌈(n+1)(1−α)⌉/n quantile of |err|/σ, so that on data
  exchangeable with the calibration set |err| ≤ u with probability at least 1 − α (α = 0.05):
  u is the half-width of a 95 % interval.
- ``gaussian``: the maximum-likelihood scale of a zero-mean Gaussian, c = sqrt(mean(err²/σ²)):
  u is a standard deviation, its 95 % interval ±1.96 u.
- ``log-ratio``: c = exp(mean(log |err| − log σ)), the geometric mean of the ratios: u matches
  the typical error, its interval read as ±1.96 u like the Gaussian one.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from stablemd.core.errors import InputError

CALIBRATIONS = ("conformal", "gaussian", "log-ratio")
#: Ratios below this are taken as this (σ = 0 or err = 0 would make log and division undefined).
TINY = 1e-300


def calibration_factor(
    errors: torch.Tensor,
    std: torch.Tensor,
    method: str = "conformal",
    alpha: float = 0.05,
    what: str = "validation errors",
) -> float:
    """The factor c of u = c·σ fitted on absolute ``errors`` and raw ``std`` σ (same shape).
    Conformal calibration refuses fewer than 1/α − 1 of them (``what``, named in the error):
    its quantile would lie beyond the largest ratio, an interval no finite c gives."""
    if method not in CALIBRATIONS:
        raise InputError(f"calibration: unknown method {method!r}; choose from {CALIBRATIONS}")
    if not 0 < alpha < 1:
        raise InputError(f"calibration: alpha must lie in (0, 1), got {alpha}")
    errors = errors.detach().to(torch.float64).abs().flatten()
    std = std.detach().to(torch.float64).flatten()
    if errors.numel() == 0:
        raise InputError("calibration: no validation errors to calibrate on")
    if not (torch.isfinite(errors).all() and torch.isfinite(std).all()):
        raise InputError("calibration: the validation errors or uncertainties are not finite")
    ratios = errors / std.clamp_min(TINY)
    if method == "conformal":
        n = ratios.numel()
        rank = math.ceil((n + 1) * (1 - alpha))  # the k-th smallest ratio
        if rank > n:
            needed = math.ceil(1 / alpha - 1 - 1e-9)
            raise InputError(
                f"calibration conformal at alpha {alpha:g}: its {100 * (1 - alpha):g} % "
                f"interval needs at least {needed} {what}, got {n}; give more (train --n-val), "
                "a larger --alpha, or --calibration gaussian"
            )
        return float(torch.sort(ratios).values[rank - 1])
    if method == "gaussian":
        return float(ratios.pow(2).mean().sqrt())
    return float(torch.exp(torch.log(ratios.clamp_min(TINY)).mean()))


def interval_factor(method: str, alpha: float = 0.05) -> float:
    """k such that ±k·u is the method's (1 − α) interval: 1 for conformal (u is already the
    half-width), the Gaussian quantile z₁₋α/₂ (1.96 at α = 0.05) for the others."""
    return 1.0 if method == "conformal" else NormalDist().inv_cdf(1 - alpha / 2)
