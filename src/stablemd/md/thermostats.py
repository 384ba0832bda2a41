"""Thermostats as operators: ``propagate(state, dt)`` lets the bath act alone for ``dt`` fs.

Integrators (:mod:`stablemd.md.integrators`) place these operators around or inside their
velocity-Verlet core (Trotter splitting). Thermostat variables live in ``state.thermostat`` as
per-replica tensors [n_systems, ...], so they are checkpointed and rewound with the state;
random generators belong to the thermostat (``state_dict`` / ``load_state_dict``).

- :class:`LangevinNoise`: the exact Ornstein–Uhlenbeck update of Langevin dynamics (the O of
  BAOAB), friction γ in 1/fs.
- :class:`NoseHooverChain`: Martyna–Tuckerman–Klein chain with Suzuki–Yoshida sub-steps.
- :class:`CSVR`: stochastic velocity rescaling (Bussi, Donadio & Parrinello 2007).

All act on 3N − 3 degrees of freedom per replica (centre-of-mass momentum zero).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace

import torch

from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.md.state import MDState
from stablemd.md.steps import keep_frozen
from stablemd.md.velocities import degrees_of_freedom, thermal_velocities

#: Fourth-order Suzuki–Yoshida weights for the Nosé–Hoover chain propagator.
SUZUKI_YOSHIDA_4 = (
    1 / (2 - 2 ** (1 / 3)),
    -(2 ** (1 / 3)) / (2 - 2 ** (1 / 3)),
    1 / (2 - 2 ** (1 / 3)),
)
#: Key of the energy (eV) a stochastic thermostat has put into each replica.
HEAT = "heat"


def _with_variables(state: MDState, velocities: torch.Tensor, variables: dict) -> MDState:
    """``state`` with new velocities and thermostat variables; frozen replicas keep theirs."""
    kept = {
        key: keep_frozen(state, value, state.thermostat[key]) if key in state.thermostat else value
        for key, value in variables.items()
    }
    return replace(
        state,
        velocities=keep_frozen(state, velocities, state.velocities),
        thermostat={**state.thermostat, **kept},
    )


class Thermostat(ABC):
    """A bath at ``temperature_K`` that acts on the velocities (and its own variables)."""

    def __init__(self, temperature_K: float):
        if not temperature_K > 0:
            raise InputError(f"temperature must be positive, got {temperature_K} K")
        self.temperature_K = float(temperature_K)
        self.kt = KB_EV_PER_K * self.temperature_K

    @abstractmethod
    def propagate(self, state: MDState, dt: float) -> MDState:
        """The state after the bath alone acted for ``dt`` fs."""

    @abstractmethod
    def conserved_term(self, state: MDState) -> torch.Tensor:
        """What to add to H = potential + kinetic energy for the conserved quantity [n_systems]
        eV (the bath's energy, or minus the heat it put in)."""

    def init_variables(self, state: MDState) -> dict[str, torch.Tensor]:
        """Thermostat variables with defaults for any not yet in ``state``."""
        return dict(state.thermostat)

    def settings(self) -> dict[str, float | int]:
        """The numbers that define this bath (temperature, time constants, chain length)."""
        return {k: v for k, v in vars(self).items() if isinstance(v, int | float)}

    def state_dict(self) -> dict:
        """Random generator states to checkpoint (none for a deterministic thermostat)."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:  # noqa: B027 (nothing to restore)
        """Restore what :meth:`state_dict` returned."""


class _Stochastic(Thermostat):
    """A thermostat with its own seeded generator and a heat account in ``state.thermostat``."""

    def __init__(self, temperature_K: float, seed: int):
        super().__init__(temperature_K)
        self.generator = torch.Generator().manual_seed(int(seed))

    def init_variables(self, state: MDState) -> dict[str, torch.Tensor]:
        variables = dict(state.thermostat)
        variables.setdefault(HEAT, torch.zeros(state.n_systems, dtype=state.positions.dtype))
        return variables

    def conserved_term(self, state: MDState) -> torch.Tensor:
        return -state.thermostat.get(HEAT, torch.zeros_like(state.potential_energy))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.generator.set_state(state_dict["generator"])

    def _heated(self, state: MDState, velocities: torch.Tensor, heat: torch.Tensor) -> MDState:
        return _with_variables(state, velocities, {HEAT: state.thermostat[HEAT] + heat})


class LangevinNoise(_Stochastic):
    """v ← c₁v + c₂ξ with c₁ = exp(−γ dt), c₂ = √(1 − c₁²): the exact Ornstein–Uhlenbeck
    update over ``dt``, with Gaussian velocities ξ of zero total momentum per replica."""

    def __init__(self, temperature_K: float, friction_per_fs: float, seed: int = 0):
        super().__init__(temperature_K, seed)
        if not friction_per_fs > 0:
            raise InputError(f"friction must be positive, got {friction_per_fs} 1/fs")
        self.friction = float(friction_per_fs)

    def propagate(self, state: MDState, dt: float) -> MDState:
        c1 = math.exp(-self.friction * dt)
        c2 = math.sqrt(1 - c1**2)
        before = state.kinetic_energy()
        noise = thermal_velocities(state, self.temperature_K, self.generator)
        velocities = c1 * state.velocities + c2 * noise
        heat = replace(state, velocities=velocities).kinetic_energy() - before
        return self._heated(state, velocities, heat)


class CSVR(_Stochastic):
    """Stochastic velocity rescaling; ``tau_fs`` in fs. The kinetic energy is resampled exactly
    (Eq. A7 of Bussi 2007) for 3N − 3 degrees of freedom per replica."""

    def __init__(self, temperature_K: float, tau_fs: float, seed: int = 0):
        super().__init__(temperature_K, seed)
        if not tau_fs > 0:
            raise InputError(f"tau must be positive, got {tau_fs} fs")
        self.tau_fs = float(tau_fs)

    def propagate(self, state: MDState, dt: float) -> MDState:
        kinetic = state.kinetic_energy()
        dof = degrees_of_freedom(state)
        target = 0.5 * dof * self.kt
        r1 = torch.randn(state.n_systems, generator=self.generator, dtype=kinetic.dtype)
        # Σ_{i=2}^{N_f} R_i²: one Gaussian per Cartesian component, the first N_f − 1 of each
        # replica kept.
        gaussians = torch.randn(
            state.positions.shape, generator=self.generator, dtype=kinetic.dtype
        )
        first_atom = torch.cumsum(state.atoms_per_system, 0) - state.atoms_per_system
        local = torch.arange(state.n_atoms) - first_atom[state.system_index]
        component = 3 * local[:, None] + torch.arange(3)
        kept = component < (dof - 1)[state.system_index, None]
        squares = state.sum_per_system((gaussians.square() * kept).sum(dim=1))
        c = math.exp(-dt / self.tau_fs)
        new_kinetic = (
            c * kinetic
            + (1 - c) * target * (squares + r1.square()) / dof
            + 2 * r1 * torch.sqrt(c * (1 - c) * kinetic * target / dof)
        )
        alpha = torch.where(kinetic > 0, torch.sqrt(new_kinetic / kinetic.clamp_min(1e-300)), 1.0)
        heat = torch.where(kinetic > 0, new_kinetic - kinetic, 0.0)
        return self._heated(state, state.velocities * alpha[state.system_index, None], heat)


class NoseHooverChain(Thermostat):
    """Nosé–Hoover chain (Martyna, Tuckerman & Klein), one chain per replica.

    ``tau_fs``: time constant (fs); masses Q₁ = N_f k_B T τ², Q_j = k_B T τ². Each
    :meth:`propagate` takes ``n_loops`` × fourth-order Suzuki–Yoshida sub-steps. Variables:
    chain positions ``nhc_positions`` (dimensionless) and velocities ``nhc_velocities`` (1/fs),
    [n_systems, chain_length]. Bath energy: Σ ½Q_j ṽ_j² + N_f k_B T η₁ + k_B T Σ_{j≥2} η_j.
    """

    def __init__(
        self, temperature_K: float, tau_fs: float, chain_length: int = 3, n_loops: int = 1
    ):
        super().__init__(temperature_K)
        if not tau_fs > 0 or chain_length < 1 or n_loops < 1:
            raise InputError("Nosé–Hoover chain needs tau > 0 fs, chain_length ≥ 1, n_loops ≥ 1")
        self.tau_fs = float(tau_fs)
        self.chain_length = int(chain_length)
        self.n_loops = int(n_loops)

    def init_variables(self, state: MDState) -> dict[str, torch.Tensor]:
        variables = dict(state.thermostat)
        shape = (state.n_systems, self.chain_length)
        for key in ("nhc_positions", "nhc_velocities"):
            variables.setdefault(key, torch.zeros(shape, dtype=state.positions.dtype))
        return variables

    def chain_masses(self, state: MDState) -> list[torch.Tensor]:
        """Q_j per replica, eV fs²."""
        q = self.kt * self.tau_fs**2
        first = degrees_of_freedom(state) * q
        return [first] + [torch.full_like(first, q)] * (self.chain_length - 1)

    def conserved_term(self, state: MDState) -> torch.Tensor:
        if "nhc_positions" not in state.thermostat:
            return torch.zeros_like(state.potential_energy)
        masses = torch.stack(self.chain_masses(state), dim=1)
        eta, v_eta = state.thermostat["nhc_positions"], state.thermostat["nhc_velocities"]
        chain = 0.5 * (masses * v_eta.square()).sum(dim=1)
        chain = chain + degrees_of_freedom(state) * self.kt * eta[:, 0]
        return chain + self.kt * eta[:, 1:].sum(dim=1)

    def propagate(self, state: MDState, dt: float) -> MDState:
        masses = self.chain_masses(state)
        dof = degrees_of_freedom(state)
        kinetic = state.kinetic_energy()
        eta = list(state.thermostat["nhc_positions"].unbind(1))
        v_eta = list(state.thermostat["nhc_velocities"].unbind(1))
        last = self.chain_length - 1
        scale = torch.ones_like(kinetic)

        def update(j: int, h: float) -> None:
            if j == 0:
                force = (2 * kinetic * scale.square() - dof * self.kt) / masses[0]
            else:
                force = (masses[j - 1] * v_eta[j - 1].square() - self.kt) / masses[j]
            if j < last:
                damp = torch.exp(-h / 4 * v_eta[j + 1])
                v_eta[j] = (v_eta[j] * damp + h / 2 * force) * damp
            else:
                v_eta[j] = v_eta[j] + h / 2 * force

        for _ in range(self.n_loops):
            for weight in SUZUKI_YOSHIDA_4:
                h = weight * dt / self.n_loops
                for j in reversed(range(self.chain_length)):
                    update(j, h)
                scale = scale * torch.exp(-h * v_eta[0])
                eta = [e + h * v for e, v in zip(eta, v_eta, strict=True)]
                for j in range(self.chain_length):
                    update(j, h)
        chain = {"nhc_positions": torch.stack(eta, 1), "nhc_velocities": torch.stack(v_eta, 1)}
        return _with_variables(state, state.velocities * scale[state.system_index, None], chain)
