"""The energy-and-force losses."""

from __future__ import annotations

import torch

from stablemd.core.batch import Batch


def energy_force_loss(
    batch: Batch,
    energy: torch.Tensor,
    forces: torch.Tensor,
    energy_weight: float,
    forces_weight: float,
) -> torch.Tensor:
    """w_E · mean((ΔE / n_atoms)²) + w_F · mean(ΔF²), energies eV, forces eV/Å."""
    per_atom = (energy - batch.energy) / batch.atoms_per_system.to(energy.dtype)
    return (
        energy_weight * per_atom.pow(2).mean()
        + forces_weight * (forces - batch.forces).pow(2).mean()
    )


def training_properties(forces_weight: float, direct_forces_weight: float) -> list[str]:
    """What :func:`~stablemd.models.potential.predict` must give for :func:`training_loss`:
    ``forces`` (−∂E/∂r, a derivative with respect to positions) only when they are weighted."""
    return (["forces"] if forces_weight > 0 else []) + (
        ["direct_forces"] if direct_forces_weight > 0 else []
    )


def training_loss(
    batch: Batch,
    out: dict[str, torch.Tensor],
    energy_weight: float,
    forces_weight: float,
    direct_forces_weight: float,
) -> torch.Tensor:
    """w_E · mean((ΔE / n_atoms)²) + w_F · mean(ΔF²) + w_D · mean(ΔF_direct²), eV and eV/Å;
    a term of weight 0 is left out (its prediction need not exist)."""
    energy = out["energy"]
    per_atom = (energy - batch.energy) / batch.atoms_per_system.to(energy.dtype)
    loss = energy_weight * per_atom.pow(2).mean()
    if forces_weight > 0:
        loss = loss + forces_weight * (out["forces"] - batch.forces).pow(2).mean()
    if direct_forces_weight > 0:
        loss = loss + direct_forces_weight * (out["direct_forces"] - batch.forces).pow(2).mean()
    return loss
