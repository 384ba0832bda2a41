"""The batched MD state: R replicas (systems) of one or more structures, in float64.

Units: positions Å, velocities Å/fs, masses amu, forces eV/Å, energies eV, time fs.
Kinetic energy in eV is ½ m v² × ``AMU_A2_PER_FS2_IN_EV``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from ase import units as ase_units

from stablemd.batch import Batch, SystemLayout

#: 1 amu·Å²/fs² expressed in eV (≈ 103.6427).
AMU_A2_PER_FS2_IN_EV = 1.0 / ase_units.fs**2


@dataclass
class MDState(SystemLayout):
    """Positions, velocities and forces of every atom of every replica, plus bookkeeping.

    ``active`` [n_systems] marks replicas still integrated; a frozen replica keeps its state.
    ``thermostat`` holds per-replica thermostat variables (e.g. Nosé–Hoover chain positions and
    momenta, the energy a thermostat exchanged with the bath) keyed by name.
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    masses: torch.Tensor
    numbers: torch.Tensor
    system_index: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    forces: torch.Tensor | None = None
    potential_energy: torch.Tensor | None = None
    active: torch.Tensor | None = None
    step: int = 0
    time_fs: float = 0.0
    thermostat: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        if self.active is None:
            self.active = torch.ones(self.n_systems, dtype=torch.bool)

    @property
    def active_atoms(self) -> torch.Tensor:
        """Per-atom mask [n_atoms] of atoms in active replicas."""
        return self.active[self.system_index]

    def kinetic_energy(self) -> torch.Tensor:
        """Kinetic energy per replica [n_systems], eV."""
        per_atom = 0.5 * self.masses * self.velocities.pow(2).sum(dim=1)
        return self.sum_per_system(per_atom) * AMU_A2_PER_FS2_IN_EV

    def batch(self, dtype: torch.dtype = torch.float64, only_active: bool = False) -> Batch:
        """The positions as a :class:`Batch` for a potential (optionally active replicas only)."""
        batch = Batch(self.positions, self.numbers, self.system_index, self.cell, self.pbc)
        if only_active and not bool(self.active.all()):
            batch, _ = batch.select_systems(self.active)
        return batch.to(dtype)

    def clone(self) -> MDState:
        """A deep copy (snapshots for rewinding)."""

        def copy(value):
            if isinstance(value, torch.Tensor):
                return value.clone()
            if isinstance(value, dict):
                return {k: v.clone() for k, v in value.items()}
            return value

        return replace(self, **{f.name: copy(getattr(self, f.name)) for f in fields(self)})
