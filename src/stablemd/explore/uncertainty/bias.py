"""Uncertainty-biased MD: the force term of E_bias = E − τ_eff·u and the stop at a threshold.

The model's forces are pushed up the uncertainty: F = −∂E/∂r + τ_eff ∂u/∂r, where u is the
calibrated total uncertainty (eV/atom, :mod:`~stablemd.explore.uncertainty.estimator`) and its
gradient is taken by autograd through the gradient features (a double backward: the features
contain ∂E/∂z). For periodic cells the bias stress is −τ_eff (∂u/∂ε)/V by the same symmetric
strain that gives the model's stress (:func:`uncertainty_and_derivatives`). The reported energy
is the model's, unbiased.

Adaptive strength (Zaverkin et al. 2024; METHODS §2): per replica,
τ_eff = τ·sqrt(Σ w_Z|F|²)/(sqrt(Σ w_Z|∂u/∂r|²) + 1e-8), the sums over the replica's atoms and
the last ``window`` steps (100), w_Z a weight per element (0 for hydrogen by default, so the
fast, stiff hydrogen forces do not set the scale). No bias is applied until the window is full
(an unbiased burn-in of ``window`` steps). The window lives in the state's outputs, so a
checkpoint carries it and a resumed run continues exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.explore.uncertainty.estimator import Uncertainty
from stablemd.md.forces import ForceResult, on_active_replicas
from stablemd.md.monitoring import Criterion
from stablemd.md.state import MDState
from stablemd.models.potential import N_ELEMENTS, Potential

#: Per-element weights of the adaptive strength by default: hydrogen left out.
DEFAULT_ELEMENT_WEIGHTS = {1: 0.0}
#: Steps of the adaptive-strength window and of the unbiased burn-in.
WINDOW = 100
EPSILON = 1e-8


def uncertainty_and_derivatives(
    potential: Potential, uncertainty: Uncertainty, batch: Batch, stress: bool = False
) -> dict[str, torch.Tensor]:
    """The model's ``energy`` and ``forces`` (and ``stress``), ``uncertainty`` u [n_systems]
    and ``atomic_uncertainty``, and the derivatives of u: ``uncertainty_gradient`` ∂u/∂r
    [n_atoms, 3] (eV/atom/Å) and, with ``stress``, ``uncertainty_stress`` (∂u/∂ε)/V
    [n_systems, 3, 3] (symmetric strain ε, as the stress of the energy)."""
    if uncertainty.features.kind == "last-layer" and not stress:
        return _first_order(potential, uncertainty, batch)
    positions = batch.positions.detach().requires_grad_(True)
    moved, cell, strain = positions, batch.cell, None
    if stress:
        strain = torch.zeros_like(batch.cell, requires_grad=True)
        symmetric = 0.5 * (strain + strain.transpose(1, 2))
        deform = torch.eye(3, dtype=cell.dtype) + symmetric
        moved = torch.einsum("ai,aij->aj", positions, deform[batch.system_index])
        cell = torch.bmm(batch.cell, deform)
    work = Batch(moved, batch.numbers, batch.system_index, cell, batch.pbc)
    properties = ("energy", "forces", *(("stress",) if stress else ()))
    out = uncertainty.predict(potential, work, properties, create_graph=True)
    inputs = [positions] + ([strain] if stress else [])
    grads = torch.autograd.grad(out["uncertainty"].sum(), inputs)
    result = {name: value.detach() for name, value in out.items()}
    result["uncertainty_gradient"] = grads[0]
    if stress:
        volume = torch.linalg.det(batch.cell).abs().clamp_min(1e-12)
        result["uncertainty_stress"] = grads[1] / volume[:, None, None]
    return result


def _first_order(
    potential: Potential, uncertainty: Uncertainty, batch: Batch
) -> dict[str, torch.Tensor]:
    """:func:`uncertainty_and_derivatives` of last-layer features without a second derivative
    through the network: the last layer's g = ∂E_i/∂z_i is the energy scale, whose graph does
    not pass through the message passing, so u depends on the positions through the forward
    pass alone and two first-order backward passes (the fast kernels' own) give F and ∂u/∂r."""
    positions = batch.positions.detach().requires_grad_(True)
    work = Batch(positions, batch.numbers, batch.system_index, batch.cell, batch.pbc)
    with uncertainty.features.tape() as tape:
        out = potential(work, once_differentiable=True)
    energy = work.sum_per_system(out["energies"])
    tape.gradients = list(torch.autograd.grad(energy.sum(), tape.outputs, create_graph=True))
    atomic, total = uncertainty.of_features(work, uncertainty.features(tape))
    forces = -torch.autograd.grad(energy.sum(), positions, retain_graph=True)[0]
    gradient = torch.autograd.grad(total.sum(), positions)[0]
    return {
        "energy": energy.detach(),
        "energies": out["energies"].detach(),
        "forces": forces,
        "atomic_uncertainty": atomic.detach(),
        "uncertainty": total.detach(),
        "uncertainty_gradient": gradient,
    }


class UncertaintyBiasedForces:
    """The force term of uncertainty-biased MD (see the module docstring), on the active
    replicas only. ``tau``: the relative strength τ (0.25 in the paper; 0 runs unbiased MD
    and reports u); ``element_weights``: w_Z by atomic number (1 for elements not named).

    Outputs per atom: ``atomic_uncertainty`` (eV/Å), ``uncertainty`` (each atom holds its
    replica's total u, eV/atom), ``bias_strength`` (its replica's τ_eff), and the window. With
    ``stress`` (periodic replicas under a barostat) the result carries the biased stress
    σ − τ_eff (∂u/∂ε)/V."""

    WINDOW_KEY, STEPS_KEY = "bias_window", "bias_steps"

    def __init__(
        self,
        potential: Potential,
        uncertainty: Uncertainty,
        tau: float,
        window: int = WINDOW,
        element_weights: Mapping[int, float] | None = None,
        stress: bool = False,
    ):
        if not tau >= 0:
            raise InputError(f"bias strength tau must be 0 or positive, got {tau}")
        if window < 1:
            raise InputError(f"bias window must be at least 1 step, got {window}")
        self.potential, self.uncertainty = potential.eval(), uncertainty
        self.tau, self.window, self.stress = float(tau), int(window), bool(stress)
        self.dtype = next(potential.parameters()).dtype
        weights = DEFAULT_ELEMENT_WEIGHTS if element_weights is None else element_weights
        self.weights = torch.ones(N_ELEMENTS, dtype=torch.float64)
        for z, w in weights.items():
            if not w >= 0:
                raise InputError(f"bias weight of element {z} must be 0 or positive, got {w}")
            self.weights[int(z)] = float(w)

    def __call__(self, state: MDState) -> ForceResult:
        if self.tau == 0:  # no derivative of u: the model's own first-order pass
            out = on_active_replicas(state, self.dtype, self._unbiased)
            return self._result(state, out, out.get("forces"))
        tau_eff, window, steps = self._strength(state)
        active_tau = tau_eff[state.active].to(self.dtype)
        out = on_active_replicas(state, self.dtype, lambda b: self._with_gradient(b, active_tau))
        if "forces" not in out:  # every replica frozen
            return self._result(state, out, None)
        gradient = out.pop("uncertainty_gradient")
        weight = self.weights[state.numbers][:, None]
        slot = (steps % self.window).long()
        atoms = torch.arange(state.n_atoms)
        window = window.clone()
        window[atoms, 0, slot] = (weight * out["forces"].pow(2)).sum(1)
        window[atoms, 1, slot] = (weight * gradient.pow(2)).sum(1)
        per_atom_tau = tau_eff[state.system_index]
        forces = out["forces"] + per_atom_tau[:, None] * gradient
        out[self.WINDOW_KEY], out[self.STEPS_KEY] = window, steps + 1
        out["bias_strength"] = per_atom_tau
        return self._result(state, out, forces)

    def _unbiased(self, batch: Batch) -> dict[str, torch.Tensor]:
        properties = ("energy", "forces", *(("stress",) if self.stress else ()))
        out = self.uncertainty.predict(self.potential, batch, properties)
        out["uncertainty"] = out["uncertainty"][batch.system_index]
        return out

    def _with_gradient(self, batch: Batch, tau: torch.Tensor) -> dict[str, torch.Tensor]:
        """u, F and ∂u/∂r of the active replicas; with ``stress`` the biased stress
        σ − τ_eff (∂u/∂ε)/V, ``tau`` τ_eff per active replica."""
        out = uncertainty_and_derivatives(self.potential, self.uncertainty, batch, self.stress)
        out["uncertainty"] = out["uncertainty"][batch.system_index]
        if self.stress:
            bias = out.pop("uncertainty_stress")
            out["stress"] = out["stress"] - tau[:, None, None] * bias
        return out

    def _strength(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """τ_eff per replica from the window of the previous steps (0 until it is full), the
        window [n_atoms, 2, window] and the steps counted so far per atom."""
        window = state.outputs.get(self.WINDOW_KEY)
        steps = state.outputs.get(self.STEPS_KEY)
        if window is None or steps is None:
            window = torch.zeros(state.n_atoms, 2, self.window, dtype=torch.float64)
            steps = torch.zeros(state.n_atoms, dtype=torch.float64)
        sums = state.sum_per_system(window.sum(2))  # [n_systems, 2]
        ratio = sums[:, 0].sqrt() / (sums[:, 1].sqrt() + EPSILON)
        full = state.sum_per_system((steps >= self.window).double()) > 0
        return torch.where(full, self.tau * ratio, torch.zeros_like(ratio)), window, steps

    def _result(self, state: MDState, out: dict, forces: torch.Tensor | None) -> ForceResult:
        forces = torch.zeros_like(state.positions) if forces is None else forces
        own = ("energy", "forces", "energies", "stress")
        extra = {k: v for k, v in out.items() if k not in own}
        stress = None
        if self.stress:
            stress = out.get("stress", state.positions.new_zeros(state.n_systems, 3, 3))
        return ForceResult(out["energy"], forces, extra, stress)


class UncertaintyThreshold(Criterion):
    """Stops (freezes) a replica when any of its atoms' uncertainty exceeds ``threshold``
    (eV/Å; the paper's examples use 1.5): the structure is beyond what the model can be
    trusted with, and exploration has found what it was looking for. Needs a force term that
    outputs ``atomic_uncertainty`` (:class:`UncertaintyBiasedForces`)."""

    name = "uncertainty"

    def __init__(self, threshold: float, every: int = 1):
        super().__init__(every)
        if not threshold > 0:
            raise InputError(f"uncertainty threshold must be positive, got {threshold}")
        self.threshold = float(threshold)

    def __call__(self, state: MDState) -> torch.Tensor:
        u = state.outputs.get("atomic_uncertainty")
        if u is None:
            return torch.zeros(state.n_systems, dtype=torch.bool)
        above = (u > self.threshold).to(torch.float64)
        return state.sum_per_system(above) > 0
