"""Starting states: replicas built from ASE structures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from stablemd.batch import Batch
from stablemd.md.state import MDState
from stablemd.units import FS_IN_ASE_TIME


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
