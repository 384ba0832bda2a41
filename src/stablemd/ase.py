"""An ASE calculator for every stablemd model, so ASE's MD, optimisers and tools can drive it.

from stablemd.ase import Calculator
atoms.calc = Calculator.from_file("model.pt")

Nothing non-finite passes silently: a position or cell that is not finite, or an energy, force
or stress the model returns that is not, raises :class:`NonFiniteError` (an ASE
``CalculationFailed``) naming the atom. A structure far outside the model's training frames
(an interatomic distance well below the shortest of its element pair in them, see
:mod:`stablemd.models.coverage`) gives one :class:`OutsideTrainingWarning` per element pair.

A model with an uncertainty (``stablemd uncertainty fit``) also reports ``uncertainty`` (eV/atom,
the calibrated u of the energy per atom) and ``atomic_uncertainties`` (eV/Å per atom, of its
force), from the same forward and backward pass as the forces, when either is asked for (ASE
asks again for a property a calculation left out, so MD that only asks for forces never pays
for u).

A model that carries an early warning (a latent domain, docs/early_warning.md) also gives, from
the same forward pass, each atom's extrapolation grade γ (``extrapolation_grade``) and whether
it is outside the domain by the grade indicator, γ > the domain's threshold (``out_of_domain``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import CalculationFailed, all_changes
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from stablemd.core.batch import Batch
from stablemd.explore.uncertainty.estimator import model_uncertainty
from stablemd.models.coverage import OutsideTrainingWarning, close_contacts
from stablemd.models.latent_domain import stored_latent_domain
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import load_potential, trained_forces

__all__ = ["Calculator", "NonFiniteError", "OutsideTrainingWarning"]


class NonFiniteError(CalculationFailed):
    """A non-finite number went into or came out of the model."""


def _first_non_finite(values: np.ndarray) -> int | None:
    """Index of the first row of ``values`` with a non-finite number (None: all finite)."""
    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    return int(bad[0]) if len(bad) else None


class Calculator(_AseCalculator):
    """Energy (eV), per-atom energies, forces (eV/Å) and, for periodic cells, stress (eV/Å³).

    ``forces`` are the ones the model was trained to give (its file records them,
    :func:`~stablemd.models.registry.trained_forces`): the direct-force head for a model trained
    with ``--forces direct`` (not energy-conserving), −∂E/∂r otherwise. ``direct_forces=True``
    or ``False`` chooses instead. With a latent domain stored in the model, per atom
    ``extrapolation_grade`` (γ, float) and ``out_of_domain`` (γ > threshold, bool) too.
    """

    implemented_properties = [
        "energy", "free_energy", "energies", "forces", "stress",
        "uncertainty", "atomic_uncertainties",
    ]  # fmt: skip
    #: Per-atom results of a model that carries a latent domain.
    DOMAIN_PROPERTIES = ("extrapolation_grade", "out_of_domain")

    def __init__(self, potential: Potential, direct_forces: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.potential = potential.eval()
        if direct_forces is None:
            direct_forces = trained_forces(potential) == "direct"
        self.direct_forces = bool(direct_forces)
        self.dtype = next(potential.parameters()).dtype
        self.uncertainty = model_uncertainty(potential)
        training = potential.metadata.get("training", {})
        self.shortest_distances = training.get("shortest_distances_A")
        self.distance_cutoff = training.get("distance_cutoff_A", potential.cutoff)
        self.warned_pairs: set[str] = set()
        self.domain = stored_latent_domain(potential)
        if self.domain is not None:
            self.implemented_properties = [*self.implemented_properties, *self.DOMAIN_PROPERTIES]

    @classmethod
    def from_file(cls, path: str | Path, dtype: torch.dtype | None = None, **kwargs) -> Calculator:
        """Load a model saved by ``stablemd train`` (optionally cast to ``dtype``)."""
        return cls(load_potential(path, dtype=dtype), **kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self._check_input()
        batch = Batch.from_atoms([self.atoms], dtype=self.dtype)
        periodic = bool(self.atoms.pbc.any())
        wanted = ["direct_forces" if self.direct_forces else "forces"]
        wanted += ["stress"] if periodic and "stress" in properties else []
        wanted += ["features"] if self.domain is not None else []
        asked = {"uncertainty", "atomic_uncertainties"} & set(properties)
        if self.uncertainty is None or not asked:  # u costs up to 3× the forces: only on request
            out = predict(self.potential, batch, wanted)
        else:
            out = self.uncertainty.predict(self.potential, batch, wanted)
        energy = float(out["energy"][0].detach())
        forces = out["direct_forces"] if self.direct_forces else out["forces"]
        results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["energies"].detach().double().numpy(),
            "forces": forces.detach().double().numpy(),
        }
        if "uncertainty" in out:
            results["uncertainty"] = float(out["uncertainty"][0])
            results["atomic_uncertainties"] = out["atomic_uncertainty"].double().numpy()
        if "stress" in out:
            stress = out["stress"][0].detach().double().numpy()
            results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(stress))
        if self.domain is not None:
            grade = self.domain.grade(out["features"].detach(), batch.numbers).numpy()
            results["extrapolation_grade"] = grade
            results["out_of_domain"] = grade > self.domain.grade_threshold
        self._check_output(results)  # before they are kept: ASE would hand them out again
        self.results = results

    def _atom(self, k: int) -> str:
        return f"atom {k} ({self.atoms.get_chemical_symbols()[k]})"

    def _check_input(self) -> None:
        k = _first_non_finite(self.atoms.positions)
        if k is not None:
            raise NonFiniteError(
                f"{self._atom(k)} has a non-finite position {self.atoms.positions[k].tolist()}"
            )
        if self.atoms.pbc.any() and not np.isfinite(self.atoms.cell.array).all():
            raise NonFiniteError(f"the cell is not finite: {self.atoms.cell.array.tolist()}")
        if self.shortest_distances is None:
            return  # a model saved without training statistics
        for contact in close_contacts(self.atoms, self.shortest_distances, self.distance_cutoff):
            if contact.pair not in self.warned_pairs:
                self.warned_pairs.add(contact.pair)
                warnings.warn(contact.message(), OutsideTrainingWarning, stacklevel=4)

    def _check_output(self, results: dict) -> None:
        k = _first_non_finite(results["energies"])
        if k is not None or not np.isfinite(results["energy"]):
            where = "" if k is None else f" (first at {self._atom(k)})"
            raise NonFiniteError(f"the model's energy is not finite{where}")
        k = _first_non_finite(results["forces"])
        if k is not None:
            raise NonFiniteError(
                f"the model's force on {self._atom(k)} is not finite: {results['forces'][k]}"
            )
        k = _first_non_finite(results.get("atomic_uncertainties", np.zeros(1)))
        if k is not None:
            raise NonFiniteError(f"the model's uncertainty on {self._atom(k)} is not finite")
        if not np.isfinite(results.get("uncertainty", 0.0)):
            raise NonFiniteError(f"the model's uncertainty is not finite: {results['uncertainty']}")
        if "stress" in results and not np.isfinite(results["stress"]).all():
            raise NonFiniteError(f"the model's stress is not finite: {results['stress']}")
