"""Energy and force errors of a potential on labelled frames.

Forces are scored as the model gives them: ``conservative`` (−∂E/∂r, the keys ``forces_…``),
``direct`` (the direct-force head, the keys ``direct_forces_…``) or ``both``. By default a
model is scored on −∂E/∂r, and on its direct head too when that head was trained (its file
records the training options, :func:`scored_forces`).
"""

from __future__ import annotations

import torch
from ase.data import chemical_symbols

from stablemd.data.frames import FrameSet
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import trained_forces

#: The metric keys of each kind of forces: (overall, per element).
FORCE_KEYS = {
    "conservative": ("forces_eV_per_A", "forces_per_element_eV_per_A"),
    "direct": ("direct_forces_eV_per_A", "direct_forces_per_element_eV_per_A"),
}


def _mae_rmse(errors: torch.Tensor) -> dict[str, float]:
    errors = errors.to(torch.float64)
    return {"mae": float(errors.abs().mean()), "rmse": float(errors.pow(2).mean().sqrt())}


def _kinds(forces: str) -> list[str]:
    if forces not in ("conservative", "direct", "both"):
        raise ValueError(f"forces must be conservative, direct or both, not {forces!r}")
    return ["conservative", "direct"] if forces == "both" else [forces]


def scored_forces(potential: Potential) -> str:
    """``both`` for a model whose file records a trained direct-force head (``--forces direct``
    or ``both``, or a direct-forces weight > 0), else ``conservative``."""
    return "conservative" if trained_forces(potential) == "conservative" else "both"


def predict_frames(
    potential: Potential, frames: FrameSet, batch_size: int = 32, forces: str = "conservative"
) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """Predicted ``energy`` [n_frames] (eV) and, per frame ([n_atoms, 3] eV/Å each), the
    ``forces`` (−∂E/∂r) and/or ``direct_forces`` that ``forces`` names. Only −∂E/∂r takes a
    derivative with respect to positions."""
    kinds = _kinds(forces)
    properties = ["forces"] * ("conservative" in kinds) + ["direct_forces"] * ("direct" in kinds)
    energies, per_frame = [], {name: [] for name in properties}
    for batch in frames.batches(batch_size):
        out = predict(potential, batch.to(next(potential.parameters()).dtype), properties)
        energies.append(out["energy"].detach())
        sizes = batch.atoms_per_system.tolist()
        for name in properties:
            per_frame[name].extend(out[name].detach().split(sizes))
    return {"energy": torch.cat(energies), **per_frame}


def error_metrics(
    potential: Potential, frames: FrameSet, batch_size: int = 32, forces: str | None = None
) -> dict:
    """Energy MAE/RMSE per structure and per atom (eV), force MAE/RMSE (eV/Å), per element too.

    ``forces``: which forces to score (``conservative``, ``direct``, ``both``; default
    :func:`scored_forces`): −∂E/∂r under ``forces_eV_per_A`` and
    ``forces_per_element_eV_per_A``, the direct head under ``direct_forces_eV_per_A`` and
    ``direct_forces_per_element_eV_per_A``."""
    forces = scored_forces(potential) if forces is None else forces
    predicted = predict_frames(potential, frames, batch_size, forces)
    energy_error = predicted["energy"].double() - frames.energy.double()
    numbers = torch.cat(frames.numbers)
    reference = torch.cat(frames.forces).double()
    metrics = {
        "n_frames": len(frames),
        "energy_per_structure_eV": _mae_rmse(energy_error),
        "energy_per_atom_eV": _mae_rmse(energy_error / frames.n_atoms.double()),
    }
    for kind in _kinds(forces):
        name = "forces" if kind == "conservative" else "direct_forces"
        force_error = torch.cat(predicted[name]).double() - reference
        overall, per_element = FORCE_KEYS[kind]
        metrics[overall] = _mae_rmse(force_error)
        metrics[per_element] = {
            chemical_symbols[z]: _mae_rmse(force_error[numbers == z])
            for z in sorted(set(numbers.tolist()))
        }
    return metrics
