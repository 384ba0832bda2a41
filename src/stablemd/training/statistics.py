"""Per-element reference energies and the energy scale, fitted from training data.

E0[Z] is the least-squares solution of E_frame ≈ Σ_atoms E0[Z_atom]; the scale is the RMS of the
force components, so that the network's raw outputs are O(1) (the choice MACE makes).
:func:`recentre_energies` refits only the per-atom shift, which leaves every force unchanged.
"""

from __future__ import annotations

import torch

from stablemd.data.frames import FrameSet
from stablemd.models.potential import Potential, predict


def fit_reference_energies(frames: FrameSet) -> dict[int, float]:
    """Per-element energies (eV) that best explain the frame energies by composition alone."""
    elements = frames.elements()
    column = {z: k for k, z in enumerate(elements)}
    counts = torch.zeros(len(frames), len(elements), dtype=torch.float64)
    for row, numbers in enumerate(frames.numbers):
        for z, n in zip(*torch.unique(numbers, return_counts=True), strict=True):
            counts[row, column[int(z)]] = float(n)
    energies = frames.energy.to(torch.float64)[:, None]
    # Molecules of one composition make the system rank-deficient: lstsq returns the minimum-norm
    # solution, which still reproduces the mean energy exactly.
    solution = torch.linalg.lstsq(counts, energies, driver="gelsd").solution[:, 0]
    return {z: float(solution[column[z]]) for z in elements}


def force_rms(frames: FrameSet) -> float:
    """Root mean square of all force components (eV/Å)."""
    forces = torch.cat(frames.forces).to(torch.float64)
    return float(forces.pow(2).mean().sqrt())


def fit_energy_scaling(potential: Potential, frames: FrameSet) -> None:
    """Set the potential's E0[Z], scale and shift from ``frames``."""
    scaling = potential.energy_scaling
    with torch.no_grad():
        scaling.reference_energies.zero_()
        for z, e0 in fit_reference_energies(frames).items():
            scaling.reference_energies[z] = e0
        scaling.scale.fill_(max(force_rms(frames), 1e-3))
        scaling.shift.zero_()


def recentre_energies(potential: Potential, frames: FrameSet, batch_size: int = 64) -> float:
    """Move the potential's per-atom shift so that its mean per-atom energy error on ``frames``
    is zero (the least-squares shift of the per-atom energy loss); returns the change, eV/atom.

    A constant per atom moves no force, so dynamics and force errors are untouched.
    """
    residuals = []
    with torch.no_grad():
        for batch in frames.batches(batch_size):
            energy = predict(potential, batch, ["energy"])["energy"]
            residuals.append((batch.energy - energy) / batch.atoms_per_system)
        change = float(torch.cat(residuals).to(torch.float64).mean())
        potential.energy_scaling.shift += change
    return change
