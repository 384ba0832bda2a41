"""Labelling one structure with an oracle, with failures flagged instead of raised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from stablemd.core.errors import InputError


@dataclass
class LabelResult:
    """Energy (eV), forces (eV/Å), stress (Voigt, eV/Å³; periodic only) or the reason it failed."""

    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def attach(self, atoms: Atoms) -> Atoms:
        """A copy of ``atoms`` (without constraints) carrying these labels."""
        if not self.ok:
            raise ValueError(f"cannot attach a failed label: {self.error}")
        out = atoms.copy()
        out.set_constraint()
        out.calc = SinglePointCalculator(
            out, energy=self.energy, forces=self.forces, stress=self.stress
        )
        return out


def label(atoms: Atoms, calculator: Calculator) -> LabelResult:
    """Energy and forces of ``atoms`` (and stress when periodic) from ``calculator``.

    Any exception but :class:`InputError` (e.g. SCF not converged) or a non-finite value
    (positions, energy, forces, stress) gives a flagged result whose ``error`` says why. A
    calculator that already holds results for these positions is not rerun. Forces are the
    raw oracle forces (constraints on ``atoms`` are ignored).
    """
    if not np.isfinite(atoms.positions).all():
        return LabelResult(error="non-finite positions")
    atoms = atoms.copy()
    atoms.set_constraint()
    atoms.calc = calculator
    periodic = bool(atoms.pbc.any()) and "stress" in calculator.implemented_properties
    try:
        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(), dtype=float)
        stress = np.array(atoms.get_stress(), dtype=float) if periodic else None
    except InputError:  # the user's input is wrong (e.g. atoms the oracle cannot handle)
        raise
    except Exception as exc:  # any oracle failure is reported, never raised
        return LabelResult(error=f"{type(exc).__name__}: {exc}".strip())
    for name, value in (("energy", energy), ("forces", forces), ("stress", stress)):
        if value is not None and not np.all(np.isfinite(value)):
            return LabelResult(error=f"non-finite {name}")
    return LabelResult(energy, forces, stress)
