"""The contract every potential implements, and the forces/stress derived from it.

A :class:`Potential` maps a batch to per-atom energies (eV). It may also return direct
(non-conservative) forces and per-atom features. Conservative forces and stress are never
computed by the model itself: :func:`predict` takes them from the energy by autograd, so every
model gets them the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Any, ClassVar

import torch
from ase.data import chemical_symbols
from torch import nn

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.core.neighbors import NeighborList, build_neighbor_list

N_ELEMENTS = 119


class AtomicEnergyScaling(nn.Module):
    """E_i = scale · ε_i + shift + E0[Z_i]: the model's raw output ε_i to eV.

    ``reference_energies`` (E0 per element, eV), ``scale`` (eV) and ``shift`` (eV) are fitted
    from the training data (see :mod:`stablemd.training.statistics`), not learned.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("reference_energies", torch.zeros(N_ELEMENTS))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))

    def forward(self, raw: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        return self.scale * raw + self.shift + self.reference_energies[numbers]


class Potential(nn.Module, ABC):
    """Batch → per-atom energies [n_atoms] eV, optional direct forces and features.

    Subclasses set ``kind`` (the name the registry knows them by), implement
    :meth:`raw_outputs` and :meth:`hyperparameters` (the keyword arguments that rebuild them).
    """

    kind: ClassVar[str]
    supports_direct_forces: ClassVar[bool] = False

    def __init__(self, elements: list[int], cutoff: float):
        super().__init__()
        self.elements = sorted(int(z) for z in elements)
        self.cutoff = float(cutoff)
        self.energy_scaling = AtomicEnergyScaling()
        known = torch.zeros(N_ELEMENTS, dtype=torch.bool)
        known[self.elements] = True
        self.register_buffer("known_elements", known, persistent=False)
        self.metadata: dict[str, Any] = {}  # training record, as read from a model file
        self.attachments: dict[str, dict] = {}  # see models.registry.attach

    @abstractmethod
    def hyperparameters(self) -> dict[str, Any]:
        """Keyword arguments of ``__init__`` that rebuild this model."""

    @abstractmethod
    def raw_outputs(
        self,
        batch: Batch,
        neighbors: NeighborList,
        direct_forces: bool,
        features: bool,
        once_differentiable: bool = False,
    ) -> dict[str, torch.Tensor]:
        """``raw_energies`` [n_atoms] in units of ``scale``; optionally ``raw_direct_forces``
        [n_atoms, 3] (same units per Å) and ``features`` [n_atoms, n_features].

        ``once_differentiable``: the caller takes one derivative at most, outside ``vmap``, so
        the model may use faster kernels whose backward is not itself differentiable."""

    def gradient_feature_layers(self) -> list[nn.Module]:
        """The atom-wise linear layers (``nn.Linear`` or e3nn ``o3.Linear`` applied to each
        atom's features) whose weight gradients make the model's uncertainty features
        (:mod:`stablemd.explore.uncertainty`), in order of the forward pass; the last one gives
        the atomic energy. A model kind without them has no gradient features."""
        raise InputError(f"{self.kind} models do not name their layers for gradient features")

    def check_elements(self, numbers: torch.Tensor) -> None:
        """Raise :class:`InputError` naming the first atom whose element the model lacks."""
        unknown = ~self.known_elements[numbers.clamp(0, N_ELEMENTS - 1)]
        if bool(unknown.any()):
            index = int(torch.nonzero(unknown)[0])
            symbol = chemical_symbols[int(numbers[index])]
            known = ", ".join(chemical_symbols[z] for z in self.elements)
            raise InputError(
                f"atom {index} is {symbol}, an element this model was not trained on "
                f"(it knows {known})"
            )

    def forward(
        self,
        batch: Batch,
        neighbors: NeighborList | None = None,
        direct_forces: bool = False,
        features: bool = False,
        once_differentiable: bool = False,
    ) -> dict[str, torch.Tensor]:
        self.check_elements(batch.numbers)
        if direct_forces and not self.supports_direct_forces:
            raise ValueError(f"{self.kind} has no direct-force head")
        if neighbors is None:
            neighbors = build_neighbor_list(batch, self.cutoff)
        raw = self.raw_outputs(batch, neighbors, direct_forces, features, once_differentiable)
        out = {"energies": self.energy_scaling(raw["raw_energies"], batch.numbers)}
        if direct_forces:
            out["direct_forces"] = self.energy_scaling.scale * raw["raw_direct_forces"]
        if features:
            out["features"] = raw["features"]
        return out


#: What :func:`predict` can compute, named as ASE calculators name their results.
PROPERTIES = ("energy", "energies", "forces", "stress", "direct_forces", "features")


def predict(
    potential: Potential,
    batch: Batch,
    properties: Collection[str] = ("energy", "forces"),
    create_graph: bool = False,
    tape=None,
) -> dict[str, torch.Tensor]:
    """The requested ``properties`` of every system of ``batch``; the one entry point to a model.

    ``energy`` [n_systems] eV and ``energies`` [n_atoms] eV always come back; on request
    ``forces`` [n_atoms, 3] eV/Å (−∂E/∂r by autograd), ``stress`` [n_systems, 3, 3] eV/Å³
    (∂E/∂ε / V, periodic systems only), ``direct_forces`` [n_atoms, 3] eV/Å (the model's
    non-conservative head) and ``features`` [n_atoms, n_features]. ``create_graph`` keeps the
    graph of the derivatives, for force-matching losses and second derivatives.

    ``tape``: a recorder whose list ``outputs`` fills with tensors during the forward pass
    (:class:`~stablemd.explore.uncertainty.features.LayerTape`); the gradients of the energy
    with respect to them are taken in the same backward pass as the forces and stored in its
    ``gradients``.
    """
    unknown = sorted(set(properties) - set(PROPERTIES))
    if unknown:
        raise ValueError(f"unknown properties {unknown}; choose from {list(PROPERTIES)}")
    forces, stress = "forces" in properties, "stress" in properties
    positions = batch.positions
    cell = batch.cell
    need_grad = forces or stress or tape is not None
    if need_grad and not positions.requires_grad:
        positions = positions.detach().requires_grad_(True)
    strain = None
    if stress:
        strain = torch.zeros_like(cell, requires_grad=True)
        symmetric = 0.5 * (strain + strain.transpose(1, 2))
        deform = torch.eye(3, dtype=cell.dtype, device=cell.device) + symmetric
        positions = torch.einsum("ai,aij->aj", positions, deform[batch.system_index])
        cell = torch.bmm(cell, deform)
    work = Batch(positions, batch.numbers, batch.system_index, cell, batch.pbc)
    out = potential(
        work,
        direct_forces="direct_forces" in properties,
        features="features" in properties,
        once_differentiable=not create_graph,
    )
    energy = work.sum_per_system(out["energies"])
    result = {"energy": energy, **out}
    if need_grad:
        inputs = [positions] + ([strain] if stress else [])
        recorded = list(tape.outputs) if tape is not None else []
        grads = torch.autograd.grad(
            energy.sum(),
            inputs + recorded,
            create_graph=create_graph,
            retain_graph=create_graph,
            allow_unused=bool(recorded),
        )
        if tape is not None:
            tape.gradients = list(grads[len(inputs) :])
        if forces:
            result["forces"] = -grads[0]
        if stress:
            volume = torch.linalg.det(batch.cell).abs().clamp_min(1e-12)
            result["stress"] = grads[1] / volume[:, None, None]
    return result
