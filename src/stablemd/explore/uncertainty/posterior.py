"""The Gaussian-process posterior on gradient features: σ²(φ) = σ_n² φᵀ(ΦᵀΦ + σ_n² I)⁻¹φ.

This is the posterior variance of a GP with the linear kernel k(x, x') = φ(x)ᵀφ(x') and noise
variance σ_n², written in feature space (its d × d matrix instead of the n × n kernel matrix of
the training points; the two agree by the push-through identity). The kernel is first scaled so
that its diagonal has mean 1 over the training points, so σ_n = 0.01 (the authors' default) is
relative to a typical feature. The training features are only summed into ΦᵀΦ, so any number
of training atoms fits in memory. Hand-written (a dozen lines) rather than taken from bmdal-reg,
which would pull some twenty packages into the environment and whose feature maps wrap its own
networks, not a model's hooked layers with a differentiable path for bias forces.
"""

from __future__ import annotations

import torch

from stablemd.core.errors import InputError

#: The authors' noise standard deviation, relative to the scaled kernel.
NOISE = 0.01


class FeatureGram:
    """Running sums of the training features: ΦᵀΦ [d, d] and Σ‖φ‖², float64."""

    def __init__(self, dimension: int):
        self.gram = torch.zeros(dimension, dimension, dtype=torch.float64)
        self.squared_norms = 0.0
        self.count = 0

    def add(self, features: torch.Tensor) -> None:
        features = features.detach().to(torch.float64)
        self.gram += features.T @ features
        self.squared_norms += float(features.pow(2).sum())
        self.count += features.shape[0]


class Posterior:
    """σ(φ) of the scaled-kernel GP: ``precision`` is σ_n²(ΦᵀΦ/s + σ_n² I)⁻¹ [d, d] and
    ``scale`` s the mean squared norm of the training features."""

    def __init__(self, precision: torch.Tensor, scale: float, noise: float = NOISE):
        self.precision, self.scale, self.noise = precision, float(scale), float(noise)

    @classmethod
    def fit(cls, sums: FeatureGram, noise: float = NOISE) -> Posterior:
        if sums.count == 0 or not sums.squared_norms > 0:
            raise InputError("uncertainty: the training frames give no features to fit on")
        scale = sums.squared_norms / sums.count
        dimension = sums.gram.shape[0]
        matrix = sums.gram / scale + noise**2 * torch.eye(dimension, dtype=torch.float64)
        precision = noise**2 * torch.cholesky_inverse(torch.linalg.cholesky(matrix))
        return cls(0.5 * (precision + precision.T), scale, noise)

    def std(self, features: torch.Tensor) -> torch.Tensor:
        """σ [n] of features [n, d] (differentiable, float64)."""
        phi = features.to(torch.float64)
        variance = torch.einsum("nd,de,ne->n", phi, self.precision, phi) / self.scale
        return variance.clamp_min(0.0).sqrt()

    def state_dict(self) -> dict:
        return {"precision": self.precision, "scale": self.scale, "noise": self.noise}

    @classmethod
    def from_state_dict(cls, values: dict) -> Posterior:
        return cls(values["precision"], values["scale"], values["noise"])
