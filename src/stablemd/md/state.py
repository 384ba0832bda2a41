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
    energy a stochastic thermostat exchanged with the bath, a barostat's work) keyed by name.
    ``stress`` [n_systems, 3, 3] eV/Å³ is that of the last force evaluation when the force term
    gives one (constant pressure), else None; ``cell`` [n_systems, 3, 3] Å changes only under
    a barostat.
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
    stress: torch.Tensor | None = None

    def __post_init__(self):
        if self.active is None:
            self.active = torch.ones(self.n_systems, dtype=torch.bool)

    @property
    def active_atoms(self) -> torch.Tensor:
        """Per-atom mask [n_atoms] of atoms in active replicas."""
        return self.active[self.system_index]

    def volume(self) -> torch.Tensor:
        """Cell volume per replica [n_systems], Å³."""
        return torch.linalg.det(self.cell).abs()

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
        """A deep copy (anchors for rewinding, checkpoints)."""

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


def where_replicas(
    state: MDState, replicas: torch.Tensor, new: torch.Tensor, old: torch.Tensor
) -> torch.Tensor:
    """``new`` for the replicas in the boolean mask ``replicas`` [n_systems], ``old`` for the
    others; per-atom tensors [n_atoms, ...] and per-replica ones [n_systems, ...] are told apart
    by their leading size."""
    mask = replicas[state.system_index] if new.shape[0] == state.n_atoms else replicas
    return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)


def take_replicas(state: MDState, source: MDState, replicas: torch.Tensor) -> MDState:
    """A copy of ``state`` whose ``replicas`` (boolean mask [n_systems]) take ``source``'s
    positions, velocities, cells, forces, energies, stresses, outputs, thermostat variables and
    active flags.

    Forces, energies and outputs missing on either side, or outputs of other names, are left
    out (None, empty), for the integrator to recompute. A thermostat variable that one side
    lacks counts as zero there (its value before the thermostat's first step)."""
    out = state.clone()
    for name in ("positions", "velocities", "cell", "active"):
        setattr(
            out, name, where_replicas(state, replicas, getattr(source, name), getattr(state, name))
        )
    computed = all(
        x is not None for x in (source.forces, state.forces, source.potential_energy,
                                state.potential_energy)
    ) and source.outputs.keys() == state.outputs.keys()  # fmt: skip
    if computed:
        out.forces = where_replicas(state, replicas, source.forces, state.forces)
        out.potential_energy = where_replicas(
            state, replicas, source.potential_energy, state.potential_energy
        )
        out.outputs = {
            key: where_replicas(state, replicas, source.outputs[key], value)
            for key, value in state.outputs.items()
        }
        if source.stress is not None and state.stress is not None:
            out.stress = where_replicas(state, replicas, source.stress, state.stress)
        else:
            out.stress = None
    else:
        out.forces, out.potential_energy, out.outputs, out.stress = None, None, {}, None
    thermostat = {}
    for key in state.thermostat.keys() | source.thermostat.keys():
        like = state.thermostat.get(key, source.thermostat.get(key))
        thermostat[key] = where_replicas(
            state, replicas, source.thermostat.get(key, torch.zeros_like(like)),
            state.thermostat.get(key, torch.zeros_like(like)),
        )  # fmt: skip
    out.thermostat = thermostat
    return out
