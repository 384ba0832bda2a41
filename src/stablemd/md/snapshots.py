"""A ring buffer of past states, so that any replica can be rewound to an earlier step."""

from __future__ import annotations

from collections import deque

import torch

from stablemd.md.checkpoint import state_from_dict, state_to_dict
from stablemd.md.state import MDState


class Snapshots:
    """The last ``capacity`` states taken every ``every`` steps (deep copies)."""

    def __init__(self, every: int, capacity: int):
        if every < 1 or capacity < 1:
            raise ValueError("snapshots need every ≥ 1 and capacity ≥ 1")
        self.every = int(every)
        self.buffer: deque[MDState] = deque(maxlen=int(capacity))

    def add(self, state: MDState) -> None:
        self.buffer.append(state.clone())

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.buffer]

    def at_step(self, step: int) -> MDState:
        for snapshot in self.buffer:
            if snapshot.step == step:
                return snapshot
        raise ValueError(f"no snapshot at step {step}; snapshots exist at steps {self.steps}")

    def state_dict(self) -> list[dict]:
        return [state_to_dict(s) for s in self.buffer]

    def load_state_dict(self, state_dict: list[dict]) -> None:
        self.buffer.clear()
        self.buffer.extend(state_from_dict(values) for values in state_dict)


def rewind(
    state: MDState,
    snapshots: Snapshots,
    steps_back: int,
    replicas: torch.Tensor | None = None,
) -> MDState:
    """``state`` with replicas restored from the snapshot taken ``steps_back`` steps earlier.

    All replicas by default: the snapshot itself (step and time included). With a boolean
    mask ``replicas`` [n_systems], only those replicas take the snapshot's positions,
    velocities, forces, energies, thermostat variables and active flags; step and time stay
    those of ``state``. Random generators are not rewound.
    """
    snapshot = snapshots.at_step(state.step - steps_back)
    if replicas is None:
        return snapshot.clone()
    return take_replicas(state, snapshot, replicas)


def take_replicas(state: MDState, source: MDState, replicas: torch.Tensor) -> MDState:
    """A copy of ``state`` whose ``replicas`` (boolean mask [n_systems]) take ``source``'s
    positions, velocities, forces, energies, thermostat variables and active flags. Forces or
    energies missing on either side are left out (None), for the integrator to recompute."""
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
    out.thermostat = {
        key: pick(source.thermostat[key], value, replicas) if key in source.thermostat else value
        for key, value in state.thermostat.items()
    }
    return out
