"""Force terms: anything that maps an :class:`MDState` to energies, forces and extra outputs.

A force term is called as ``term(state) -> ForceResult``, float64. Frozen replicas
(``state.active`` False) get zeros and should cost nothing; the integrator keeps their previous
values. Integrators never ask where forces come from: a model, a reference method, a bias, or
the levels of a multiple-time-step scheme (:class:`ForceLevels`) all look alike.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.md.state import MDState
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import trained_forces


@dataclass
class ForceResult:
    """Energy per replica [n_systems] eV, forces [n_atoms, 3] eV/Å and extra per-atom outputs
    [n_atoms, ...] by name (features, direct forces, ...), all for every replica of the state;
    ``stress`` [n_systems, 3, 3] eV/Å³ ((1/V) ∂E/∂ε, ASE's sign) from terms asked for it (a
    barostat needs it), else None."""

    energy: torch.Tensor
    forces: torch.Tensor
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    stress: torch.Tensor | None = None

    def __add__(self, other: ForceResult) -> ForceResult:
        if (self.stress is None) != (other.stress is None):
            # a sum that dropped one term's stress would give a barostat the wrong pressure
            raise ValueError("cannot add a force result with stress to one without")
        return ForceResult(
            self.energy + other.energy,
            self.forces + other.forces,
            {**self.outputs, **other.outputs},
            None if self.stress is None else self.stress + other.stress,
        )


class ForceTerm(Protocol):
    def __call__(self, state: MDState) -> ForceResult:
        """Energy, forces and extra outputs of every replica (zeros for frozen ones)."""


def _zeros(state: MDState) -> ForceResult:
    dtype = state.positions.dtype
    return ForceResult(torch.zeros(state.n_systems, dtype=dtype), torch.zeros_like(state.positions))


def on_active_replicas(
    state: MDState, dtype: torch.dtype, compute: Callable[[Batch], dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """``compute`` on a batch of the active replicas only (positions in ``dtype``), its results
    scattered back to every replica in float64 with zeros for the frozen ones: ``energy``
    [n_systems] and ``stress`` [n_systems, 3, 3] per replica, every other entry per atom
    [n_atoms, ...]."""
    float64 = state.positions.dtype
    if not bool(state.active.any()):
        return {"energy": torch.zeros(state.n_systems, dtype=float64)}
    batch = state.batch(dtype=dtype, only_active=True)
    out = {name: value.detach().to(float64) for name, value in compute(batch).items()}
    if batch.n_systems == state.n_systems:
        return out
    full = {}
    for name, value in out.items():
        per_replica = name in ("energy", "stress")
        size, rows = (state.n_systems, state.active) if per_replica else (
            state.n_atoms, state.active_atoms)  # fmt: skip
        full[name] = value.new_zeros((size, *value.shape[1:]))
        full[name][rows] = value
    return full


class _ModelTerm:
    """A force term of a :class:`Potential`, evaluated on the active replicas only (frozen ones
    get zeros and cost nothing); positions are cast to the model's dtype, results come back as
    float64. ``outputs`` names extra per-atom model outputs (``features``, ...; see
    :data:`~stablemd.models.potential.PROPERTIES`) returned from the same forward pass."""

    def __init__(self, potential: Potential, outputs: Collection[str] = ()):
        self.potential = potential.eval()
        self.outputs = tuple(outputs)
        self.dtype = next(potential.parameters()).dtype

    def _predict(self, state: MDState, properties: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """``energy`` and ``properties`` plus the extra outputs, on every replica."""
        names = ("energy", *properties, *(o for o in self.outputs if o not in properties))
        return on_active_replicas(
            state, self.dtype, lambda batch: predict(self.potential, batch, names)
        )

    def _result(self, out: dict[str, torch.Tensor], forces: torch.Tensor) -> ForceResult:
        extra = {name: out[name] for name in self.outputs if name in out}  # none if all frozen
        return ForceResult(out["energy"], forces, extra)


class ModelForces(_ModelTerm):
    """Conservative forces −∂E/∂r of a :class:`Potential` on the active replicas only, in one
    batch, with the extra ``outputs`` of the same forward pass; with ``stress`` (periodic
    replicas, for a barostat) the stress from the same backward pass."""

    def __init__(self, potential: Potential, outputs: Collection[str] = (), stress: bool = False):
        super().__init__(potential, outputs)
        self.stress = bool(stress)

    def __call__(self, state: MDState) -> ForceResult:
        out = self._predict(state, ("forces", "stress") if self.stress else ("forces",))
        result = self._result(out, out.get("forces", torch.zeros_like(state.positions)))
        if self.stress:
            result.stress = out.get("stress", state.positions.new_zeros(state.n_systems, 3, 3))
        return result


class DirectForces(_ModelTerm):
    """The model's direct (non-conservative) force head as the forces, eV/Å, and its energy
    head's value as the energy (free: the same forward pass); no derivative is taken, so there
    is no backward pass.

    With ``shared`` (the :class:`ConservativeCorrection` of the same model) the forces of a
    state that the correction has just evaluated are taken from its pass instead of a new one.
    """

    def __init__(
        self,
        potential: Potential,
        outputs: Collection[str] = (),
        shared: ConservativeCorrection | None = None,
    ):
        super().__init__(potential, outputs)
        self.shared = shared

    def __call__(self, state: MDState) -> ForceResult:
        done = None if self.shared is None else self.shared.direct_level(state)
        if done is not None:
            return done
        with torch.no_grad():
            out = self._predict(state, ("direct_forces",))
        return self._result(out, out.get("direct_forces", torch.zeros_like(state.positions)))


class ConservativeCorrection(_ModelTerm):
    """F_C − F_direct, eV/Å, from one forward pass (energy, direct head) and one backward pass
    (F_C = −∂E/∂r): the slow level of multiple time stepping with :class:`DirectForces` as the
    fast one, so that the two levels sum to the conservative forces. Its energy is zero (the
    energy belongs to the direct level).

    It keeps the direct level of the state it has just evaluated until the fast level asks for
    it (:meth:`direct_level`, right after it in :class:`ForceLevels`), which then costs nothing.
    """

    def __init__(self, potential: Potential, outputs: Collection[str] = ()):
        super().__init__(potential, outputs)
        self._last: tuple[torch.Tensor, torch.Tensor, ForceResult] | None = None

    def __call__(self, state: MDState) -> ForceResult:
        out = self._predict(state, ("forces", "direct_forces"))
        zeros = torch.zeros_like(state.positions)
        conservative, direct = out.get("forces", zeros), out.get("direct_forces", zeros)
        self._last = (state.positions, state.active.clone(), self._result(out, direct))
        return ForceResult(torch.zeros_like(out["energy"]), conservative - direct)

    def direct_level(self, state: MDState) -> ForceResult | None:
        """The direct forces, energy and outputs of ``state`` if this term's last call was on
        the same positions (the same tensor: steps never modify a state in place) with the same
        active replicas, else None; handed out once, so a later call cannot see stale values."""
        last, self._last = self._last, None
        if last is None:
            return None
        positions, active, result = last
        if state.positions is not positions or not torch.equal(state.active, active):
            return None
        return result


class CalculatorForces:
    """Forces of an ASE calculator, replica by replica (for tests and reference oracles); with
    ``stress`` (periodic replicas, for a barostat) the calculator's stress too."""

    def __init__(self, calculator: Calculator, stress: bool = False):
        self.calculator = calculator
        self.stress = bool(stress)

    def __call__(self, state: MDState) -> ForceResult:
        result = _zeros(state)
        if self.stress:
            result.stress = state.positions.new_zeros(state.n_systems, 3, 3)
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
            if self.stress:
                stress = atoms.get_stress(voigt=False)
                result.stress[s] = torch.as_tensor(stress, dtype=torch.float64)
        return result


class ForceLevels:
    """Two force terms for multiple time stepping: ``fast`` (cheap, every inner step) and
    ``slow`` (the expensive correction, every outer step); called as one term it is their sum,
    with each level's forces in the outputs ``fast_forces`` and ``slow_forces``."""

    FAST, SLOW = "fast_forces", "slow_forces"

    def __init__(self, fast: ForceTerm, slow: ForceTerm):
        self.fast, self.slow = fast, slow

    def __call__(self, state: MDState) -> ForceResult:
        # The slow level first: one that computes the fast level on the way (the conservative
        # correction) lets the fast level reuse that pass.
        slow = self.slow(state)
        fast = self.fast(state)
        total = fast + slow
        total.outputs.update({self.FAST: fast.forces, self.SLOW: slow.forces})
        return total


#: Forces a model-driven run can use (``MDSettings.forces``): −∂E/∂r, or the direct head.
FORCE_KINDS = ("conservative", "direct")


def model_force_term(
    potential: Potential,
    forces: str | None = None,
    mts: int | None = None,
    outputs: Collection[str] = (),
    model: str = "this model",
    stress: bool = False,
) -> ForceTerm:
    """The force term of an MD run of ``potential`` (named ``model`` in errors, e.g. its file).

    ``forces``: ``conservative`` (:class:`ModelForces`), ``direct`` (:class:`DirectForces`) or
    None, the kind the model was trained for (direct for a model trained with direct forces
    only, conservative otherwise; :func:`~stablemd.models.registry.trained_forces`). With
    ``mts`` (the inner steps of multiple time stepping; ``forces`` must then be None):
    ``ForceLevels(DirectForces, ConservativeCorrection)``, which sum to the conservative forces
    and share the outer step's forward pass. Direct forces need a trained direct head: a model
    trained with conservative forces only is refused (its head would give nonsense); MTS needs
    both heads trained. ``stress`` (for a barostat) needs conservative forces: the stress is
    the strain derivative of the energy, which the direct head's forces do not follow.
    """
    trained = trained_forces(potential)
    if forces is not None and forces not in FORCE_KINDS:
        raise InputError(f"forces: unknown kind {forces!r}; choose from {list(FORCE_KINDS)}")
    if mts is not None and forces is not None:
        raise InputError(
            f"mts={mts}: multiple time stepping sets the forces itself (direct inside, "
            f"conservative every {mts} steps); leave forces unset, not {forces!r}"
        )
    requested = forces
    if forces is None and mts is None:
        forces = "direct" if trained == "direct" else "conservative"
    if stress and forces != "conservative":
        scheme = f"mts={mts}" if mts is not None else "forces=direct"
        if requested is None and mts is None:
            scheme = f"{model} was trained with direct forces only, so it runs forces=direct"
        raise InputError(
            f"{scheme}: a barostat needs the stress ∂E/∂ε/V that belongs to conservative forces; "
            "run constant pressure with forces: conservative (and no mts)"
        )
    if forces == "conservative":
        return ModelForces(potential, outputs, stress=stress)
    option = f"mts={mts}" if mts is not None else "forces=direct"
    if not potential.supports_direct_forces:
        raise InputError(f"{option}: {model} ({potential.kind}) has no direct-force head")
    if trained == "conservative":
        raise InputError(
            f"{option}: {model} was trained with conservative forces only, so its direct-force "
            "head is untrained; train with forces: direct or both"
        )
    if mts is None:
        return DirectForces(potential, outputs)
    if trained != "both":  # the correction's −∂E/∂r would follow an energy never fit to forces
        raise InputError(
            f"{option}: {model} was trained with direct forces only, so −∂E/∂r of its energy "
            "head (the correction every M steps) was never fit to forces; train with forces: "
            "both, or fine-tune it conservatively keeping a direct-forces weight"
        )
    correction = ConservativeCorrection(potential, outputs)
    return ForceLevels(DirectForces(potential, outputs, shared=correction), correction)
