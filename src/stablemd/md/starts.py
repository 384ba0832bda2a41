"""Starting states: replicas built from ASE structures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from stablemd.core.batch import Batch
from stablemd.core.units import FS_IN_ASE_TIME
from stablemd.md.state import MDState
from stablemd.md.velocities import maxwell_boltzmann


def state_from_atoms(atoms_list: Sequence[Atoms]) -> MDState:
    """One replica per structure: positions Å, masses amu and the structures' own velocities
    (converted from ASE units to Å/fs; zero when none are set), float64."""
    batch = Batch.from_atoms(atoms_list, dtype=torch.float64)
    velocities = np.concatenate([a.get_velocities() for a in atoms_list]) * FS_IN_ASE_TIME
    masses = np.concatenate([a.get_masses() for a in atoms_list])
    return MDState(
        positions=batch.positions,
        velocities=torch.as_tensor(velocities, dtype=torch.float64),
        masses=torch.as_tensor(masses, dtype=torch.float64),
        numbers=batch.numbers,
        system_index=batch.system_index,
        cell=batch.cell,
        pbc=batch.pbc,
    )


def choose_starts(structures: Sequence[Atoms], replicas: int, seed: int) -> list[Atoms]:
    """``replicas`` start structures drawn from ``structures``, without replacement when there
    are enough."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(structures), size=replicas, replace=len(structures) < replicas)
    return [structures[int(i)] for i in chosen]


def initial_state(
    structures: Sequence[Atoms], replicas: int, temperature_K: float, seed: int
) -> MDState:
    """Replicas drawn from ``structures`` (:func:`choose_starts`) with Maxwell–Boltzmann
    velocities at exactly ``temperature_K``: how every batched run of the toolkit starts."""
    state = state_from_atoms(choose_starts(structures, replicas, seed))
    return maxwell_boltzmann(state, temperature_K, seed, exact=True)
