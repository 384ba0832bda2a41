"""The dynamic-training loss: per-element force MAEs summed over the frames of a window."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def per_element_force_mae(
    predicted: torch.Tensor, reference: torch.Tensor, numbers: torch.Tensor
) -> torch.Tensor:
    """Σ_Z mean |ΔF| over the force components of the atoms of element Z, eV/Å."""
    error = (predicted - reference).abs()
    return sum(error[numbers == z].mean() for z in torch.unique(numbers).tolist())


def dynamic_loss(
    forces: Sequence[torch.Tensor],
    reference_forces: torch.Tensor,
    numbers: torch.Tensor,
    frame0_weight: float,
    energy: torch.Tensor | None = None,
    reference_energy: torch.Tensor | None = None,
    atoms_per_system: torch.Tensor | None = None,
    energy_weight: float = 0.0,
) -> torch.Tensor:
    """Σ_k w_k Σ_Z MAE_Z(F_k, F_k^ref), w_0 = ``frame0_weight``, w_k = 1 otherwise, plus for a
    window of one frame ``energy_weight`` × mean |ΔE| per atom (eV).

    ``forces``: the model's forces at each frame of the rollout [n_atoms, 3]; ``reference_forces``
    [S, n_atoms, 3]."""
    loss = sum(
        (frame0_weight if k == 0 else 1.0) * per_element_force_mae(f, reference_forces[k], numbers)
        for k, f in enumerate(forces)
    )
    if len(forces) == 1 and energy_weight > 0:
        per_atom = (energy - reference_energy) / atoms_per_system.to(energy.dtype)
        loss = loss + energy_weight * per_atom.abs().mean()
    return loss
