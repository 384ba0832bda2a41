"""The small steps every integrator is composed of: kick, drift, force evaluation.

Each takes a state and returns a new one (the old one is not modified); frozen replicas
(``state.active`` False) keep every value. Time steps in fs, forces eV/Å, velocities Å/fs.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from stablemd.md.forces import ForceResult, ForceTerm
from stablemd.md.state import AMU_A2_PER_FS2_IN_EV, MDState, where_replicas


def keep_frozen(state: MDState, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` where a replica is active, ``old`` where it is frozen; per atom [n_atoms, ...]
    or per replica [n_systems, ...], told apart by the leading size."""
    return new if bool(state.active.all()) else where_replicas(state, state.active, new, old)


def kick(state: MDState, forces: torch.Tensor, dt: float) -> MDState:
    """Velocities after ``dt`` fs of acceleration by ``forces`` [n_atoms, 3] eV/Å."""
    inverse_mass = 1.0 / (state.masses * AMU_A2_PER_FS2_IN_EV)
    velocities = state.velocities + dt * forces * inverse_mass[:, None]
    return replace(state, velocities=keep_frozen(state, velocities, state.velocities))


def drift(state: MDState, dt: float) -> MDState:
    """Positions after ``dt`` fs at the current velocities."""
    positions = state.positions + dt * state.velocities
    return replace(state, positions=keep_frozen(state, positions, state.positions))


def store_forces(state: MDState, result: ForceResult) -> MDState:
    """``state`` holding ``result`` as its forces, potential energy, stress and outputs."""
    if state.forces is None or state.potential_energy is None:
        return replace(
            state, forces=result.forces, potential_energy=result.energy, outputs=result.outputs,
            stress=result.stress,
        )  # fmt: skip
    stress = result.stress
    if stress is not None and state.stress is not None:
        stress = keep_frozen(state, stress, state.stress)
    outputs = {
        key: keep_frozen(state, value, state.outputs[key]) if key in state.outputs else value
        for key, value in result.outputs.items()
    }
    return replace(
        state,
        forces=keep_frozen(state, result.forces, state.forces),
        potential_energy=keep_frozen(state, result.energy, state.potential_energy),
        outputs=outputs,
        stress=stress,
    )


def evaluate(state: MDState, term: ForceTerm) -> MDState:
    """``state`` with the forces, energy and outputs of ``term`` at its positions."""
    return store_forces(state, term(state))


def velocity_verlet(state: MDState, term: ForceTerm, dt: float, barostat=None) -> MDState:
    """Kick, drift, new forces, kick: one velocity-Verlet step of ``dt`` fs (time not counted).
    A ``barostat`` (:mod:`stablemd.md.barostats`) takes over the drift and force evaluation,
    rescaling the cell around the drift."""
    state = kick(state, state.forces, dt / 2)
    if barostat is None:
        state = evaluate(drift(state, dt), term)
    else:
        state = barostat.drift_and_evaluate(state, term, dt)
    return kick(state, state.forces, dt / 2)


def advance_clock(state: MDState, dt: float) -> MDState:
    """One more step, ``dt`` fs later."""
    return replace(state, step=state.step + 1, time_fs=state.time_fs + dt)
