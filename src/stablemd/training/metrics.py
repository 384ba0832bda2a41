"""Energy and force errors of a potential on labelled frames."""

from __future__ import annotations

import torch
from ase.data import chemical_symbols

from stablemd.data.frames import FrameSet
from stablemd.models.potential import Potential, predict


def _mae_rmse(errors: torch.Tensor) -> dict[str, float]:
    errors = errors.to(torch.float64)
    return {"mae": float(errors.abs().mean()), "rmse": float(errors.pow(2).mean().sqrt())}


def predict_frames(
    potential: Potential, frames: FrameSet, batch_size: int = 32
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Predicted energies [n_frames] (eV) and forces per frame ([n_atoms, 3] eV/Å each)."""
    energies, forces = [], []
    for batch in frames.batches(batch_size):
        out = predict(potential, batch.to(next(potential.parameters()).dtype))
        energies.append(out["energy"].detach())
        sizes = batch.atoms_per_system.tolist()
        forces.extend(out["forces"].detach().split(sizes))
    return torch.cat(energies), forces


def error_metrics(potential: Potential, frames: FrameSet, batch_size: int = 32) -> dict:
    """Energy MAE/RMSE per structure and per atom (eV), force MAE/RMSE (eV/Å), per element too."""
    energy, forces = predict_frames(potential, frames, batch_size)
    energy_error = energy.double() - frames.energy.double()
    force_error = torch.cat(forces).double() - torch.cat(frames.forces).double()
    numbers = torch.cat(frames.numbers)
    per_element = {
        chemical_symbols[z]: _mae_rmse(force_error[numbers == z])
        for z in sorted(set(numbers.tolist()))
    }
    return {
        "n_frames": len(frames),
        "energy_per_structure_eV": _mae_rmse(energy_error),
        "energy_per_atom_eV": _mae_rmse(energy_error / frames.n_atoms.double()),
        "forces_eV_per_A": _mae_rmse(force_error),
        "forces_per_element_eV_per_A": per_element,
    }
