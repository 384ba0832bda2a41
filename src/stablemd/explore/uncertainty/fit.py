"""Fitting a potential's uncertainty: the posteriors on its training frames, the calibration on
its validation frames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from ase import Atoms

from stablemd.core.batch import Batch
from stablemd.data.frames import FrameSet
from stablemd.explore.uncertainty.calibration import calibration_factor
from stablemd.explore.uncertainty.estimator import Uncertainty, mean_per_system
from stablemd.explore.uncertainty.features import GradientFeatures
from stablemd.explore.uncertainty.posterior import NOISE, FeatureGram, Posterior
from stablemd.models.potential import Potential, predict


@dataclass
class UncertaintyErrors:
    """Raw σ or calibrated u beside the actual errors of frames, float64: per atom
    (``atomic`` [n_atoms] against ‖ΔF_i‖/√3, eV/Å) and per structure (``total`` [n_frames]
    against |ΔE|/N, eV/atom)."""

    atomic: torch.Tensor
    force_errors: torch.Tensor
    total: torch.Tensor
    energy_errors: torch.Tensor


def _feature_batches(potential: Potential, features: GradientFeatures, frames, batch_size: int):
    """(batch, per-atom features, predictions with forces) of every batch of ``frames``."""
    dtype = next(potential.parameters()).dtype
    for batch in frames.batches(batch_size):
        batch = batch.to(dtype)
        with features.tape() as tape:
            out = predict(potential, batch, ("energy", "forces"), tape=tape)
        yield batch, features(tape).detach(), out


def structure_features(
    potential: Potential,
    features: GradientFeatures,
    structures: Sequence[Atoms],
    batch_size: int = 16,
) -> torch.Tensor:
    """Structure features [n, dimension] (the mean over atoms of the gradient features) of
    unlabelled ``structures``, float64: what batch selection compares."""
    dtype = next(potential.parameters()).dtype
    rows = []
    for start in range(0, len(structures), batch_size):
        batch = Batch.from_atoms(structures[start : start + batch_size], dtype=dtype)
        with features.tape() as tape:
            predict(potential, batch, ("energy", "forces"), tape=tape)
        rows.append(mean_per_system(batch, features(tape).detach()).to(torch.float64))
    if not rows:
        return torch.zeros(0, features.dimension, dtype=torch.float64)
    return torch.cat(rows)


def fit_posteriors(
    potential: Potential,
    features: GradientFeatures,
    frames: FrameSet,
    batch_size: int = 16,
    noise: float = NOISE,
) -> tuple[Posterior, Posterior]:
    """The atomic and structure posteriors on the features of ``frames`` (the training set)."""
    atoms, structures = FeatureGram(features.dimension), FeatureGram(features.dimension)
    for batch, phi, _ in _feature_batches(potential, features, frames, batch_size):
        atoms.add(phi)
        structures.add(mean_per_system(batch, phi))
    return Posterior.fit(atoms, noise), Posterior.fit(structures, noise)


def uncertainty_errors(
    potential: Potential,
    frames: FrameSet,
    atomic: Posterior,
    structure: Posterior,
    features: GradientFeatures,
    batch_size: int = 16,
    factors: tuple[float, float] = (1.0, 1.0),
) -> UncertaintyErrors:
    """σ·factor (atomic, structure) and the actual errors on labelled ``frames``."""
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("a", "fe", "t", "ee")}
    for batch, phi, out in _feature_batches(potential, features, frames, batch_size):
        parts["a"].append(factors[0] * atomic.std(phi))
        parts["t"].append(factors[1] * structure.std(mean_per_system(batch, phi)))
        force_error = (out["forces"].detach() - batch.forces).to(torch.float64)
        parts["fe"].append(force_error.pow(2).mean(dim=1).sqrt())
        energy_error = (out["energy"].detach() - batch.energy).to(torch.float64).abs()
        parts["ee"].append(energy_error / batch.atoms_per_system.to(torch.float64))
    return UncertaintyErrors(*(torch.cat(parts[k]) for k in ("a", "fe", "t", "ee")))


def fit_uncertainty(
    potential: Potential,
    train: FrameSet,
    validation: FrameSet,
    kind: str = "sketched",
    projections: int = 512,
    seed: int = 0,
    calibration: str = "conformal",
    alpha: float = 0.05,
    batch_size: int = 16,
) -> Uncertainty:
    """The uncertainty of ``potential``: posteriors on ``train``, calibration on ``validation``
    (see :mod:`~stablemd.explore.uncertainty.calibration`)."""
    features = GradientFeatures(potential.gradient_feature_layers(), kind, projections, seed)
    atomic, structure = fit_posteriors(potential, features, train, batch_size)
    raw = uncertainty_errors(potential, validation, atomic, structure, features, batch_size)
    return Uncertainty(
        features, atomic, structure,
        calibration_factor(raw.force_errors, raw.atomic, calibration, alpha, "validation atoms"),
        calibration_factor(raw.energy_errors, raw.total, calibration, alpha, "validation frames"),
        calibration, alpha,
    )  # fmt: skip
