"""Force terms: anything that maps an :class:`MDState` to energies and forces.

A force term is called as ``term(state) -> (energy [n_systems] eV, forces [n_atoms, 3] eV/Å)``,
both float64. Frozen replicas (``state.active`` False) get zero energy and forces and should cost
nothing; the integrator keeps their previous values. Terms compose with :class:`SumOfForces`,
so model forces, bias forces and multiple-time-step levels all look alike to an integrator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from stablemd.md.state import MDState
from stablemd.models.potential import Potential, predict


class ForceTerm(Protocol):
    def __call__(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy per replica [n_systems] eV and forces [n_atoms, 3] eV/Å, float64."""


def _zeros(state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = state.positions.dtype
    return torch.zeros(state.n_systems, dtype=dtype), torch.zeros_like(state.positions)


class ModelForces:
    """Forces of a :class:`Potential` on the active replicas only, in one batch.

    Positions are cast to the model's dtype; results come back as float64. ``direct=True``
    returns the model's direct-force head instead of −∂E/∂r (energy is still the model's).
    """

    def __init__(self, potential: Potential, direct: bool = False):
        self.potential = potential.eval()
        self.direct = direct
        self.dtype = next(potential.parameters()).dtype

    def __call__(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        energy, forces = _zeros(state)
        if not bool(state.active.any()):
            return energy, forces
        batch = state.batch(dtype=self.dtype, only_active=True)
        if self.direct:
            with torch.no_grad():
                out = predict(self.potential, batch, forces=False, direct_forces=True)
            batch_forces = out["direct_forces"]
        else:
            out = predict(self.potential, batch)
            batch_forces = out["forces"]
        batch_energy = out["energy"].detach().to(energy.dtype)
        batch_forces = batch_forces.detach().to(forces.dtype)
        if batch.n_systems == state.n_systems:
            return batch_energy, batch_forces
        energy[state.active] = batch_energy
        forces[state.active_atoms] = batch_forces
        return energy, forces


class CalculatorForces:
    """Forces of an ASE calculator, replica by replica (for tests and reference oracles)."""

    def __init__(self, calculator: Calculator):
        self.calculator = calculator

    def __call__(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        energy, forces = _zeros(state)
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
            energy[s] = atoms.get_potential_energy()
            forces[atoms_slice] = torch.as_tensor(atoms.get_forces(), dtype=forces.dtype)
        return energy, forces


class SumOfForces:
    """The sum of several force terms (energies and forces add)."""

    def __init__(self, terms: Sequence[ForceTerm]):
        if not terms:
            raise ValueError("SumOfForces needs at least one term")
        self.terms = list(terms)

    def __call__(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        energy, forces = self.terms[0](state)
        for term in self.terms[1:]:
            e, f = term(state)
            energy, forces = energy + e, forces + f
        return energy, forces
