"""The model's own rollout of a batch of windows, through the MD engine's velocity Verlet.

Training needs the forces with their graph to the parameters, which the engine's
:class:`~stablemd.md.forces.ModelForces` drops (it serves MD, detached, through the fused
first-order kernel). :class:`DifferentiableForces` is the same −∂E/∂r with
``create_graph``; the integrator is the engine's own :class:`~stablemd.md.integrators.
VelocityVerlet`, in the engine's float64 state (the model sees its own dtype and the cast
keeps the graph).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from stablemd.md.forces import ForceResult
from stablemd.md.integrators import VelocityVerlet
from stablemd.md.state import MDState
from stablemd.models.potential import Potential, predict


class DifferentiableForces:
    """Force term −∂E/∂r of ``potential`` keeping the graph: to the parameters, and to the
    positions when they carry one (backpropagation through time)."""

    def __init__(self, potential: Potential):
        self.potential = potential
        self.dtype = next(potential.parameters()).dtype

    def __call__(self, state: MDState) -> ForceResult:
        out = predict(self.potential, state.batch(self.dtype), ("forces",), create_graph=True)
        float64 = state.positions.dtype
        return ForceResult(out["energy"].to(float64), out["forces"].to(float64))


def detached(state: MDState) -> MDState:
    """``state`` cut from the autograd graph (values unchanged)."""

    def cut(value):
        return None if value is None else value.detach()

    return replace(
        state,
        positions=state.positions.detach(),
        velocities=state.velocities.detach(),
        forces=cut(state.forces),
        potential_energy=cut(state.potential_energy),
    )


def rollout(
    term, start: MDState, n_frames: int, every: int, timestep_fs: float, through_time: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Velocity Verlet from ``start`` driven by ``term``: the forces [n_atoms, 3] eV/Å at
    each of ``n_frames`` frames (frame 0 is ``start``; frames ``every`` steps of
    ``timestep_fs`` fs apart) and frame 0's energies [n_systems] eV.

    Unless ``through_time``, the state is detached before every step: each frame's forces
    depend on the parameters only through their own evaluation (the authors' choice)."""
    integrator = VelocityVerlet(timestep_fs)
    state = integrator.prepare(replace(start, forces=None, potential_energy=None), term)
    forces, energy = [state.forces], state.potential_energy
    for _ in range(1, n_frames):
        for _ in range(every):
            state = integrator.step(state if through_time else detached(state), term)
        forces.append(state.forces)
    return forces, energy
