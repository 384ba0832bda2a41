"""The comparison baseline: an ensemble of K models of one kind trained with different seeds
(``stablemd train --seed``), its spread as the uncertainty. It costs K force calls where the
gradient features cost about one."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.models.potential import Potential, predict


def ensemble_predict(
    potentials: Sequence[Potential],
    batch: Batch,
    properties: Collection[str] = ("energy", "forces"),
) -> dict[str, torch.Tensor]:
    """The members' mean ``energy`` [n_systems] eV and ``forces`` [n_atoms, 3] eV/Å, and their
    spread, named as :meth:`~stablemd.explore.uncertainty.estimator.Uncertainty.predict`
    names it (uncalibrated; calibrate with the same functions): ``uncertainty`` [n_systems] the
    standard deviation of the energy per atom (eV/atom), ``atomic_uncertainty`` [n_atoms] the
    root mean square over x, y, z of each force component's standard deviation (eV/Å)."""
    if len(potentials) < 2:
        raise InputError(f"an ensemble needs at least 2 models, got {len(potentials)}")
    outs = []
    for potential in potentials:
        dtype = next(potential.parameters()).dtype
        outs.append(predict(potential, batch.to(dtype), ("energy", "forces", *properties)))
    energy = torch.stack([o["energy"].detach().double() for o in outs])
    forces = torch.stack([o["forces"].detach().double() for o in outs])
    per_atom = energy / batch.atoms_per_system.double()
    return {
        "energy": energy.mean(0),
        "forces": forces.mean(0),
        "uncertainty": per_atom.std(0),
        "atomic_uncertainty": forces.var(0).mean(1).sqrt(),
    }
