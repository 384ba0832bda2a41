"""The batched MD state: R replicas (systems) of one or more structures, in float64.

Units: positions Å, velocities Å/fs, masses amu, forces eV/Å, energies eV, time fs.
Kinetic energy in eV is ½ m v² × ``AMU_A2_PER_FS2_IN_EV``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch
from ase import units as ase_units

from stablemd.core.batch import Batch, SystemLayout

#: 1 amu·Å²/fs² expressed in eV (≈ 103.6427).
AMU_A2_PER_FS2_IN_EV = 1.0 / ase_units.fs**2


@dataclass
class MDState(SystemLayout):
    """Positions, velocities and forces of every atom of every replica, plus bookkeeping.

    ``forces`` and ``potential_energy`` are those of the last force evaluation; ``outputs``
    holds the extra per-atom outputs [n_atoms, ...] that the force term returned with them
    (features, direct forces, the forces of each level of a multiple-time-step scheme), so
    monitors read them without another model call. ``active`` [n_systems] marks replicas
    still integrated; a frozen replica keeps its state. ``thermostat`` holds per-replica
    thermostat variables [n_systems, ...] (e.g. Nosé–Hoover chain positions and momenta, the
    energy a stochastic thermostat exchanged with the bath) keyed by name.
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
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
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


def state_to_dict(state: MDState) -> dict:
    """The fields of ``state`` as a plain dictionary (tensors, numbers, dict of tensors), as
    checkpoints store it."""
    return {f.name: getattr(state, f.name) for f in fields(state)}


def state_from_dict(values: dict) -> MDState:
    """The inverse of :func:`state_to_dict`."""
    return MDState(**values)


def take_replicas(state: MDState, source: MDState, replicas: torch.Tensor) -> MDState:
    """A copy of ``state`` whose ``replicas`` (boolean mask [n_systems]) take ``source``'s
    positions, velocities, forces, energies, outputs, thermostat variables and active flags.
    Forces or energies missing on either side are left out (None), for the integrator to
    recompute."""
    atoms = replicas[state.system_index]

    def pick(new: torch.Tensor | None, old: torch.Tensor | None, mask: torch.Tensor):
        if new is None or old is None:  # not computed yet on one side: recomputed later
            return None
        return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)

    out = state.clone()
    for name in ("positions", "velocities", "forces"):
        setattr(out, name, pick(getattr(source, name), getattr(state, name), atoms))
    out.potential_energy = pick(source.potential_energy, state.potential_energy, replicas)
    out.active = pick(source.active, state.active, replicas)
    out.outputs = {
        key: pick(source.outputs.get(key), value, atoms) for key, value in state.outputs.items()
    }
    out.outputs = {key: value for key, value in out.outputs.items() if value is not None}
    out.thermostat = {
        key: pick(source.thermostat[key], value, replicas) if key in source.thermostat else value
        for key, value in state.thermostat.items()
    }
    return out
