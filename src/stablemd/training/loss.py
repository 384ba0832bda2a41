"""The energy-and-force loss."""

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
