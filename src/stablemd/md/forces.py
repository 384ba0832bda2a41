"""Force terms: anything that maps an :class:`MDState` to energies, forces and extra outputs.

A force term is called as ``term(state) -> ForceResult``, float64. Frozen replicas
(``state.active`` False) get zeros and should cost nothing; the integrator keeps their previous
values. Integrators never ask where forces come from: a model, a reference method, a bias, or
the levels of a multiple-time-step scheme (:class:`ForceLevels`) all look alike.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from stablemd.md.state import MDState
from stablemd.models.potential import Potential, predict


@dataclass
class ForceResult:
    """Energy per replica [n_systems] eV, forces [n_atoms, 3] eV/Å and extra per-atom outputs
    [n_atoms, ...] by name (features, direct forces, ...), all for every replica of the state."""

    energy: torch.Tensor
    forces: torch.Tensor
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def __add__(self, other: ForceResult) -> ForceResult:
        return ForceResult(
            self.energy + other.energy,
            self.forces + other.forces,
            {**self.outputs, **other.outputs},
        )


class ForceTerm(Protocol):
    def __call__(self, state: MDState) -> ForceResult:
        """Energy, forces and extra outputs of every replica (zeros for frozen ones)."""


def _zeros(state: MDState) -> ForceResult:
    dtype = state.positions.dtype
    return ForceResult(torch.zeros(state.n_systems, dtype=dtype), torch.zeros_like(state.positions))


class ModelForces:
    """Forces −∂E/∂r of a :class:`Potential` on the active replicas only, in one batch.

    ``outputs`` names extra model outputs to return with them (``features``,
    ``direct_forces``; see :data:`~stablemd.models.potential.PROPERTIES`), computed in the same
    forward pass. Positions are cast to the model's dtype; results come back as float64.
    """

    def __init__(self, potential: Potential, outputs: Collection[str] = ()):
        self.potential = potential.eval()
        self.outputs = tuple(outputs)
        self.dtype = next(potential.parameters()).dtype

    def __call__(self, state: MDState) -> ForceResult:
        result = _zeros(state)
        if not bool(state.active.any()):
            return result
        batch = state.batch(dtype=self.dtype, only_active=True)
        out = predict(self.potential, batch, ("energy", "forces", *self.outputs))
        energy = out["energy"].detach().to(result.energy.dtype)
        forces = out["forces"].detach().to(result.forces.dtype)
        extra = {name: out[name].detach().to(result.forces.dtype) for name in self.outputs}
        if batch.n_systems == state.n_systems:
            return ForceResult(energy, forces, extra)
        atoms = state.active_atoms
        result.energy[state.active] = energy
        result.forces[atoms] = forces
        for name, value in extra.items():
            result.outputs[name] = value.new_zeros((state.n_atoms, *value.shape[1:]))
            result.outputs[name][atoms] = value
        return result


class CalculatorForces:
    """Forces of an ASE calculator, replica by replica (for tests and reference oracles)."""

    def __init__(self, calculator: Calculator):
        self.calculator = calculator

    def __call__(self, state: MDState) -> ForceResult:
        result = _zeros(state)
        counts = state.atoms_per_system.tolist()
        starts = np.cumsum([0, *counts])
        positions = state.positions.detach().numpy()
        for s in torch.nonzero(state.active)[:, 0].tolist():
            atoms_slice = slice(int(starts[s]), int(starts[s + 1]))
            atoms = Atoms(
                numbers=state.numbers[atoms_slice].numpy(),
                positions=positions[atoms_slice],
                cell=state.cell[s].numpy(),
                pbc=state.pbc[s].numpy(),
            )
            atoms.calc = self.calculator
            result.energy[s] = atoms.get_potential_energy()
            result.forces[atoms_slice] = torch.as_tensor(atoms.get_forces(), dtype=torch.float64)
        return result


class ForceLevels:
    """Two force terms for multiple time stepping: ``fast`` (cheap, every inner step) and
    ``slow`` (the expensive correction, every outer step); called as one term it is their sum,
    with each level's forces in the outputs ``fast_forces`` and ``slow_forces``."""

    FAST, SLOW = "fast_forces", "slow_forces"

    def __init__(self, fast: ForceTerm, slow: ForceTerm):
        self.fast, self.slow = fast, slow

    def __call__(self, state: MDState) -> ForceResult:
        fast, slow = self.fast(state), self.slow(state)
        total = fast + slow
        total.outputs.update({self.FAST: fast.forces, self.SLOW: slow.forces})
        return total
