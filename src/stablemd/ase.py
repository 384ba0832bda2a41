"""An ASE calculator for every stablemd model, so ASE's MD, optimisers and tools can drive it.

from stablemd.ase import Calculator
atoms.calc = Calculator.from_file("model.pt")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from stablemd.core.batch import Batch
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import load_potential


class Calculator(_AseCalculator):
    """Energy (eV), per-atom energies, forces (eV/Å) and, for periodic cells, stress (eV/Å³).

    ``direct_forces=True`` reports the model's direct-force head as ``forces`` instead of −∂E/∂r.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, potential: Potential, direct_forces: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential.eval()
        self.direct_forces = direct_forces
        self.dtype = next(potential.parameters()).dtype

    @classmethod
    def from_file(cls, path: str | Path, dtype: torch.dtype | None = None, **kwargs) -> Calculator:
        """Load a model saved by ``stablemd train`` (optionally cast to ``dtype``)."""
        return cls(load_potential(path, dtype=dtype), **kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        batch = Batch.from_atoms([self.atoms], dtype=self.dtype)
        periodic = bool(self.atoms.pbc.any())
        wanted = ["direct_forces" if self.direct_forces else "forces"]
        wanted += ["stress"] if periodic and "stress" in properties else []
        out = predict(self.potential, batch, wanted)
        energy = float(out["energy"][0].detach())
        forces = out["direct_forces"] if self.direct_forces else out["forces"]
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().double().numpy(),
            "forces": forces.detach().double().numpy(),
        }
        if "stress" in out:
            stress = out["stress"][0].detach().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(stress))
