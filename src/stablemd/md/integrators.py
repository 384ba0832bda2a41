"""Integrators: one step of every replica at once, frozen replicas left untouched.

Each integrator has ``step(state, forces_fn) -> state`` (a new state; the old one is not
modified) and ``conserved_energy(state) -> [n_systems]`` eV. ``forces_fn`` is any force term
(:mod:`stablemd.md.forces`). Time step in fs. Thermostat variables live in ``state.thermostat``
as per-replica tensors [n_systems, ...], so they are checkpointed and rewound with the state;
random generators belong to the integrator (``state_dict`` / ``load_state_dict``).

- :class:`VelocityVerlet`: NVE.
- :class:`Langevin`: BAOAB (Leimkuhler & Matthews 2013), friction γ in 1/fs.
- :class:`NoseHooverChain`: Martyna–Tuckerman–Klein chain with Suzuki–Yoshida sub-steps.
- :class:`CSVR`: stochastic velocity rescaling (Bussi, Donadio & Parrinello 2007).

The thermostats act on 3N − 3 degrees of freedom per replica (centre-of-mass momentum zero).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import replace

import torch

from stablemd.errors import InputError
from stablemd.md.forces import ForceTerm
from stablemd.md.state import AMU_A2_PER_FS2_IN_EV, MDState
from stablemd.md.velocities import degrees_of_freedom, thermal_velocities
from stablemd.units import KB_EV_PER_K

#: Fourth-order Suzuki–Yoshida weights for the Nosé–Hoover chain propagator.
SUZUKI_YOSHIDA_4 = (
    1 / (2 - 2 ** (1 / 3)),
    -(2 ** (1 / 3)) / (2 - 2 ** (1 / 3)),
    1 / (2 - 2 ** (1 / 3)),
)
#: Names accepted by :func:`make_integrator`.
THERMOSTATS = ("nve", "langevin", "nose-hoover", "csvr")
#: Key of the energy (eV) a stochastic thermostat has put into each replica.
HEAT = "heat"


def _per_replica_mask(active: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return active.view(-1, *([1] * (value.dim() - 1)))


class Integrator(ABC):
    """Velocity-Verlet core shared by all integrators; subclasses add thermostat stages."""

    def __init__(self, timestep_fs: float):
        if timestep_fs <= 0:
            raise InputError(f"timestep must be positive, got {timestep_fs} fs")
        self.dt = float(timestep_fs)

    @abstractmethod
    def step(self, state: MDState, forces_fn: ForceTerm) -> MDState:
        """The state one time step later."""

    def conserved_energy(self, state: MDState) -> torch.Tensor:
        """Potential plus kinetic energy per replica [n_systems], eV."""
        return state.potential_energy + state.kinetic_energy()

    def state_dict(self) -> dict:
        """Random generator states to checkpoint (none for a deterministic integrator)."""
        return {}

    def load_state_dict(self, state_dict: dict) -> None:  # noqa: B027 (nothing to restore)
        """Restore what :meth:`state_dict` returned."""

    def init_thermostat(self, state: MDState) -> dict[str, torch.Tensor]:
        """Thermostat variables with defaults for any not yet in ``state``."""
        return dict(state.thermostat)

    def prepare(self, state: MDState, forces_fn: ForceTerm) -> MDState:
        """``state`` with forces, potential energy and thermostat variables in place.

        Forces already in the state are reused: set ``state.forces = None`` after changing
        the force term (e.g. new model weights) so that they are recomputed.
        """
        if state.forces is None or state.potential_energy is None:
            energy, forces = forces_fn(state)
            state = replace(state, forces=forces, potential_energy=energy)
        return replace(state, thermostat=self.init_thermostat(state))

    def kick(self, state: MDState, velocities, forces, dt: float) -> torch.Tensor:
        """Velocities after ``dt`` fs of acceleration by ``forces``."""
        inverse_mass = 1.0 / (state.masses * AMU_A2_PER_FS2_IN_EV)
        return velocities + dt * forces * inverse_mass[:, None]

    def evaluate(self, state: MDState, positions: torch.Tensor, forces_fn: ForceTerm):
        """Positions (frozen replicas kept where they were), energy and forces there."""
        if not bool(state.active.all()):
            positions = torch.where(state.active_atoms[:, None], positions, state.positions)
        energy, forces = forces_fn(replace(state, positions=positions))
        return positions, energy, forces

    def verlet(self, state: MDState, velocities: torch.Tensor, forces_fn: ForceTerm):
        """Kick–drift–kick over one step: positions, velocities, energy, forces."""
        velocities = self.kick(state, velocities, state.forces, self.dt / 2)
        positions, energy, forces = self.evaluate(
            state, state.positions + self.dt * velocities, forces_fn
        )
        return positions, self.kick(state, velocities, forces, self.dt / 2), energy, forces

    def finish(self, state, positions, velocities, energy, forces, thermostat) -> MDState:
        """The advanced state; frozen replicas keep every old value."""
        if not bool(state.active.all()):
            atoms, active = state.active_atoms[:, None], state.active
            positions = torch.where(atoms, positions, state.positions)
            velocities = torch.where(atoms, velocities, state.velocities)
            forces = torch.where(atoms, forces, state.forces)
            energy = torch.where(active, energy, state.potential_energy)
            thermostat = {
                key: torch.where(_per_replica_mask(active, value), value, state.thermostat[key])
                for key, value in thermostat.items()
            }
        return replace(
            state,
            positions=positions,
            velocities=velocities,
            forces=forces,
            potential_energy=energy,
            thermostat=thermostat,
            step=state.step + 1,
            time_fs=state.time_fs + self.dt,
        )


class _Stochastic(Integrator):
    """An integrator with its own seeded generator and a heat account in ``thermostat``."""

    def __init__(self, timestep_fs: float, temperature_K: float, seed: int):
        super().__init__(timestep_fs)
        self.temperature_K = float(temperature_K)
        self.kt = KB_EV_PER_K * self.temperature_K
        self.generator = torch.Generator().manual_seed(int(seed))

    def init_thermostat(self, state: MDState) -> dict[str, torch.Tensor]:
        thermostat = dict(state.thermostat)
        thermostat.setdefault(HEAT, torch.zeros(state.n_systems, dtype=state.positions.dtype))
        return thermostat

    def conserved_energy(self, state: MDState) -> torch.Tensor:
        """Total energy minus the heat the bath put in, per replica [n_systems], eV."""
        heat = state.thermostat.get(HEAT, torch.zeros_like(state.potential_energy))
        return super().conserved_energy(state) - heat

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.generator.set_state(state_dict["generator"])


class VelocityVerlet(Integrator):
    """NVE velocity Verlet; conserved energy = potential + kinetic."""

    def step(self, state: MDState, forces_fn: ForceTerm) -> MDState:
        state = self.prepare(state, forces_fn)
        positions, velocities, energy, forces = self.verlet(state, state.velocities, forces_fn)
        return self.finish(state, positions, velocities, energy, forces, state.thermostat)


class Langevin(_Stochastic):
    """Langevin dynamics by BAOAB; ``friction`` γ in 1/fs (γ = 1/τ).

    The O step mixes in Gaussian velocities with zero total momentum per replica (exact
    Ornstein–Uhlenbeck update on the 3N − 3 internal degrees of freedom).
    """

    def __init__(self, timestep_fs: float, temperature_K: float, friction: float, seed: int = 0):
        super().__init__(timestep_fs, temperature_K, seed)
        if friction <= 0:
            raise InputError(f"friction must be positive, got {friction} 1/fs")
        self.friction = float(friction)
        self.c1 = math.exp(-self.friction * self.dt)
        self.c2 = math.sqrt(1 - self.c1**2)

    def step(self, state: MDState, forces_fn: ForceTerm) -> MDState:
        state = self.prepare(state, forces_fn)
        half = self.dt / 2
        velocities = self.kick(state, state.velocities, state.forces, half)
        positions = state.positions + half * velocities
        kinetic_before = replace(state, velocities=velocities).kinetic_energy()
        noise = thermal_velocities(state, self.temperature_K, self.generator)
        velocities = self.c1 * velocities + self.c2 * noise
        heat = replace(state, velocities=velocities).kinetic_energy() - kinetic_before
        positions, energy, forces = self.evaluate(state, positions + half * velocities, forces_fn)
        velocities = self.kick(state, velocities, forces, half)
        thermostat = {**state.thermostat, HEAT: state.thermostat[HEAT] + heat}
        return self.finish(state, positions, velocities, energy, forces, thermostat)


class CSVR(_Stochastic):
    """Stochastic velocity rescaling (Bussi 2007) around velocity Verlet; ``tau_fs`` in fs.

    Half a thermostat step before and after each Verlet step; the kinetic energy is resampled
    exactly (Eq. A7 of the paper) for 3N − 3 degrees of freedom per replica.
    """

    def __init__(self, timestep_fs: float, temperature_K: float, tau_fs: float, seed: int = 0):
        super().__init__(timestep_fs, temperature_K, seed)
        if tau_fs <= 0:
            raise InputError(f"tau must be positive, got {tau_fs} fs")
        self.tau_fs = float(tau_fs)
        self.decay = math.exp(-self.dt / 2 / self.tau_fs)

    def rescale(self, state: MDState, velocities: torch.Tensor):
        """Velocities after half a thermostat step, and the kinetic energy added [n_systems]."""
        kinetic = replace(state, velocities=velocities).kinetic_energy()
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
        c = self.decay
        new_kinetic = (
            c * kinetic
            + (1 - c) * target * (squares + r1.square()) / dof
            + 2 * r1 * torch.sqrt(c * (1 - c) * kinetic * target / dof)
        )
        alpha = torch.where(kinetic > 0, torch.sqrt(new_kinetic / kinetic.clamp_min(1e-300)), 1.0)
        heat = torch.where(kinetic > 0, new_kinetic - kinetic, 0.0)
        return velocities * alpha[state.system_index, None], heat

    def step(self, state: MDState, forces_fn: ForceTerm) -> MDState:
        state = self.prepare(state, forces_fn)
        velocities, heat_before = self.rescale(state, state.velocities)
        positions, velocities, energy, forces = self.verlet(state, velocities, forces_fn)
        velocities, heat_after = self.rescale(state, velocities)
        thermostat = {**state.thermostat, HEAT: state.thermostat[HEAT] + heat_before + heat_after}
        return self.finish(state, positions, velocities, energy, forces, thermostat)


class NoseHooverChain(Integrator):
    """Nosé–Hoover chain NVT (Martyna, Tuckerman & Klein), one chain per replica.

    ``tau_fs``: thermostat time constant (fs); masses Q₁ = N_f k_B T τ², Q_j = k_B T τ².
    Trotter splitting exp(iL_NHC Δt/2) · velocity Verlet · exp(iL_NHC Δt/2), the chain part
    by ``n_loops`` × fourth-order Suzuki–Yoshida sub-steps. Thermostat variables: chain
    positions ``nhc_positions`` (dimensionless) and velocities ``nhc_velocities`` (1/fs),
    [n_systems, chain_length]. Conserved: H + Σ ½Q_j ṽ_j² + N_f k_B T η₁ + k_B T Σ_{j≥2} η_j.
    """

    def __init__(
        self,
        timestep_fs: float,
        temperature_K: float,
        tau_fs: float,
        chain_length: int = 3,
        n_loops: int = 1,
    ):
        super().__init__(timestep_fs)
        if tau_fs <= 0 or chain_length < 1 or n_loops < 1:
            raise InputError("Nosé–Hoover chain needs tau > 0 fs, chain_length ≥ 1, n_loops ≥ 1")
        self.temperature_K = float(temperature_K)
        self.kt = KB_EV_PER_K * self.temperature_K
        self.tau_fs = float(tau_fs)
        self.chain_length = int(chain_length)
        self.n_loops = int(n_loops)

    def init_thermostat(self, state: MDState) -> dict[str, torch.Tensor]:
        thermostat = dict(state.thermostat)
        shape = (state.n_systems, self.chain_length)
        for key in ("nhc_positions", "nhc_velocities"):
            thermostat.setdefault(key, torch.zeros(shape, dtype=state.positions.dtype))
        return thermostat

    def chain_masses(self, state: MDState) -> list[torch.Tensor]:
        """Q_j per replica, eV fs²."""
        q = self.kt * self.tau_fs**2
        first = degrees_of_freedom(state) * q
        return [first] + [torch.full_like(first, q)] * (self.chain_length - 1)

    def conserved_energy(self, state: MDState) -> torch.Tensor:
        energy = super().conserved_energy(state)
        if "nhc_positions" not in state.thermostat:
            return energy
        masses = torch.stack(self.chain_masses(state), dim=1)
        eta, v_eta = state.thermostat["nhc_positions"], state.thermostat["nhc_velocities"]
        chain = 0.5 * (masses * v_eta.square()).sum(dim=1)
        chain = chain + degrees_of_freedom(state) * self.kt * eta[:, 0]
        return energy + chain + self.kt * eta[:, 1:].sum(dim=1)

    def half_chain(self, state: MDState, velocities: torch.Tensor, thermostat: dict):
        """exp(iL_NHC Δt/2): scaled velocities and the new chain variables."""
        masses = self.chain_masses(state)
        dof = degrees_of_freedom(state)
        kinetic = replace(state, velocities=velocities).kinetic_energy()
        eta = list(thermostat["nhc_positions"].unbind(1))
        v_eta = list(thermostat["nhc_velocities"].unbind(1))
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
                h = weight * self.dt / 2 / self.n_loops
                for j in reversed(range(self.chain_length)):
                    update(j, h)
                scale = scale * torch.exp(-h * v_eta[0])
                eta = [e + h * v for e, v in zip(eta, v_eta, strict=True)]
                for j in range(self.chain_length):
                    update(j, h)
        chain = {"nhc_positions": torch.stack(eta, 1), "nhc_velocities": torch.stack(v_eta, 1)}
        return velocities * scale[state.system_index, None], {**thermostat, **chain}

    def step(self, state: MDState, forces_fn: ForceTerm) -> MDState:
        state = self.prepare(state, forces_fn)
        velocities, thermostat = self.half_chain(state, state.velocities, state.thermostat)
        positions, velocities, energy, forces = self.verlet(state, velocities, forces_fn)
        velocities, thermostat = self.half_chain(state, velocities, thermostat)
        return self.finish(state, positions, velocities, energy, forces, thermostat)


def make_integrator(
    thermostat: str,
    timestep_fs: float,
    temperature_K: float,
    friction_per_fs: float,
    tau_fs: float,
    seed: int,
) -> Integrator:
    """The integrator named ``thermostat`` (one of :data:`THERMOSTATS`); Langevin uses
    ``friction_per_fs``, Nosé–Hoover and CSVR ``tau_fs``, the stochastic ones ``seed``."""
    if thermostat == "nve":
        return VelocityVerlet(timestep_fs)
    if thermostat == "langevin":
        return Langevin(timestep_fs, temperature_K, friction_per_fs, seed=seed)
    if thermostat == "nose-hoover":
        return NoseHooverChain(timestep_fs, temperature_K, tau_fs)
    if thermostat == "csvr":
        return CSVR(timestep_fs, temperature_K, tau_fs, seed=seed)
    raise InputError(f"unknown thermostat {thermostat!r}; choose from {list(THERMOSTATS)}")
