"""A potential's fitted uncertainty: its gradient feature map, the posteriors of atoms and
structures and their calibration, kept with the model (``models.registry.attach`` under
``"uncertainty"``) and evaluated in the same forward and backward pass as the forces.

- atomic u_i = c_atom·σ_atom(φ_i), eV/Å, calibrated against each atom's force RMSE
  ‖ΔF_i‖/√3;
- total u = c_struct·σ_struct(mean_i φ_i), eV/atom, calibrated against the energy error per
  atom |ΔE|/N.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass

import torch

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.explore.uncertainty.features import GradientFeatures
from stablemd.explore.uncertainty.posterior import Posterior
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import attach, attachment

#: The name of the attachment in a model file.
ATTACHMENT = "uncertainty"


def mean_per_system(batch: Batch, per_atom: torch.Tensor) -> torch.Tensor:
    """Mean over each system's atoms of per-atom rows [n_atoms, d] → [n_systems, d]."""
    sums = per_atom.new_zeros((batch.n_systems, *per_atom.shape[1:]))
    sums = sums.index_add(0, batch.system_index, per_atom)
    counts = batch.atoms_per_system.to(per_atom.dtype)
    return sums / counts.view(-1, *([1] * (per_atom.dim() - 1)))


@dataclass
class Uncertainty:
    """The fitted uncertainty of one potential (see the module docstring)."""

    features: GradientFeatures
    atomic: Posterior
    structure: Posterior
    atomic_factor: float
    structure_factor: float
    calibration: str
    alpha: float

    def predict(
        self,
        potential: Potential,
        batch: Batch,
        properties: Collection[str] = ("energy", "forces"),
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """:func:`~stablemd.models.potential.predict` plus ``atomic_uncertainty`` [n_atoms]
        eV/Å and ``uncertainty`` [n_systems] eV/atom (float64) from the same passes; with
        ``create_graph`` they are differentiable with respect to the positions."""
        with self.features.tape() as tape:
            out = predict(potential, batch, properties, create_graph=create_graph, tape=tape)
        phi = self.features(tape)
        if not create_graph:  # the layer inputs still hold the forward graph
            phi = phi.detach()
        out["atomic_uncertainty"], out["uncertainty"] = self.of_features(batch, phi)
        return out

    def of_features(self, batch: Batch, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Atomic u [n_atoms] (eV/Å) and total u [n_systems] (eV/atom) of per-atom features."""
        atomic = self.atomic_factor * self.atomic.std(phi)
        return atomic, self.structure_factor * self.structure.std(mean_per_system(batch, phi))

    def fingerprint(self) -> str:
        """SHA-256 of everything u depends on besides the model's weights (feature map,
        posteriors, calibration): a biased run records it, so a refitted uncertainty in a model
        file of the same weights is not taken for the one a stored run used."""
        digest = hashlib.sha256()

        def add(value) -> None:
            if isinstance(value, dict):
                for key in sorted(value):
                    digest.update(str(key).encode())
                    add(value[key])
            elif isinstance(value, list | tuple):
                digest.update(f"[{len(value)}]".encode())
                for item in value:
                    add(item)
            elif isinstance(value, torch.Tensor):
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            else:
                digest.update(json.dumps(value, default=str).encode())

        add(self.state_dict())
        return digest.hexdigest()

    def state_dict(self) -> dict:
        return {
            "features": self.features.state_dict(),
            "atomic": self.atomic.state_dict(),
            "structure": self.structure.state_dict(),
            "atomic_factor": self.atomic_factor,
            "structure_factor": self.structure_factor,
            "calibration": self.calibration,
            "alpha": self.alpha,
        }

    @classmethod
    def from_state_dict(cls, potential: Potential, values: dict) -> Uncertainty:
        layers = potential.gradient_feature_layers()
        return cls(
            GradientFeatures.from_state_dict(layers, values["features"]),
            Posterior.from_state_dict(values["atomic"]),
            Posterior.from_state_dict(values["structure"]),
            float(values["atomic_factor"]),
            float(values["structure_factor"]),
            values["calibration"],
            float(values["alpha"]),
        )


def attach_uncertainty(potential: Potential, uncertainty: Uncertainty) -> None:
    """Keep ``uncertainty`` with the model (written into its file by ``save_potential``)."""
    attach(potential, ATTACHMENT, uncertainty.state_dict())


def model_uncertainty(potential: Potential) -> Uncertainty | None:
    """The uncertainty attached to the model, None when it carries none (refused when it was
    fitted for other weights)."""
    values = attachment(potential, ATTACHMENT)
    return None if values is None else Uncertainty.from_state_dict(potential, values)


def require_uncertainty(potential: Potential, model: str = "the model") -> Uncertainty:
    """:func:`model_uncertainty`, refusing a model without one."""
    uncertainty = model_uncertainty(potential)
    if uncertainty is None:
        raise InputError(f"{model} carries no uncertainty; fit one with stablemd uncertainty fit")
    return uncertainty
