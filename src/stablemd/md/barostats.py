"""Constant pressure: stochastic cell rescaling (Bernetti & Bussi, J. Chem. Phys. 153, 114107
(2020)), isotropic, one cell per replica.

The volume follows first-order (overdamped) Langevin dynamics towards the pressure
``pressure`` (eV/Å³) with the relaxation time ``tau_fs`` and the isothermal compressibility
``compressibility`` (Å³/eV) as its mobility. It is integrated in λ = √V, whose noise is
additive (diffusion D = k_BT β_T / 4τ_p, Å³/fs), so that each move is a Gaussian whose
backward probability is known:

    dλ = (D / k_BT) f dt + √(2 D dt) ξ,      f = −2λ (P₀ − P_int − k_BT / 2V),
    P_int = 2K / 3V − tr(σ) / 3,

with K the kinetic energy (eV) and σ the stress of the force term (eV/Å³, ASE's sign). A move
scales positions and the cell by s = (λ'/λ)^(2/3) and velocities by 1/s, so the kinetic
pressure is part of P_int and no N k_BT/V term is needed; the k_BT/2V term is the Jacobian
of λ. The move is placed around the drift of velocity Verlet (half the scaling before and half
after it: a symmetric split in the spirit of the paper's time-reversible scheme, which merges
scaling and drift), so it needs no force call of its own.

Its term of the conserved quantity is P₀V plus the work the barostat's noise and friction did
(``barostat_work`` in ``state.thermostat``), accumulated from the log-ratio of forward and
backward move probabilities: H + P₀V + work drifts only by the integration error.

Sampled ensemble: exp(−β(U + K + P₀V)) with the kinetic energy on N_f degrees of freedom; an
ideal gas of N atoms whose centre-of-mass momentum is removed (N_f = 3N − 3) has V following
a Gamma distribution of shape N_f/3 + 1 = N: ⟨V⟩ = N k_BT / P₀, var V = N (k_BT / P₀)².
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from ase import units as ase_units

from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.md.forces import ForceTerm
from stablemd.md.state import MDState
from stablemd.md.steps import drift, evaluate, keep_frozen

#: One bar in eV/Å³.
BAR_IN_EV_PER_A3 = ase_units.bar
#: Key of the barostat's accumulated work (eV) in ``state.thermostat``.
WORK = "barostat_work"


class StochasticCellRescaling:
    """Isotropic stochastic cell rescaling at ``pressure`` eV/Å³ and ``temperature_K``, with
    ``compressibility`` Å³/eV and relaxation time ``tau_fs`` fs; its noise from its own
    generator (``seed``)."""

    def __init__(
        self,
        pressure: float,
        temperature_K: float,
        compressibility: float,
        tau_fs: float,
        seed: int = 0,
    ):
        if not math.isfinite(pressure):
            raise InputError(f"pressure must be finite, got {pressure}")
        if not temperature_K > 0:
            raise InputError(f"barostat temperature must be positive, got {temperature_K} K")
        if not compressibility > 0 or not tau_fs > 0:
            raise InputError(
                f"barostat needs compressibility > 0 and tau > 0, got {compressibility} Å³/eV "
                f"and {tau_fs} fs"
            )
        self.pressure = float(pressure)
        self.temperature_K = float(temperature_K)
        self.compressibility = float(compressibility)
        self.tau_fs = float(tau_fs)
        self.kt = KB_EV_PER_K * self.temperature_K
        self.diffusion = self.kt * self.compressibility / (4 * self.tau_fs)  # of λ = √V, Å³/fs
        self.generator = torch.Generator().manual_seed(int(seed))

    # -- what the integrator and the runner ask -----------------------------------------
    def settings(self) -> dict[str, float]:
        """The numbers that define this barostat."""
        return {
            "pressure": self.pressure,
            "temperature_K": self.temperature_K,
            "compressibility": self.compressibility,
            "tau_fs": self.tau_fs,
        }

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.generator.set_state(state_dict["generator"])

    def check(self, state: MDState) -> None:
        """InputError unless every replica is periodic in all three directions and the state
        carries the stress of its force term."""
        open_replicas = torch.nonzero(~state.pbc.all(dim=1))[:, 0].tolist()
        if open_replicas:
            raise InputError(
                f"a barostat needs a periodic cell, but replica {open_replicas[0]} is not "
                "periodic in all directions (a molecule in vacuum has no pressure); run it "
                "without a pressure"
            )
        if state.stress is None:
            raise InputError(
                "the force term gives no stress, which a barostat needs; build it with "
                "stress=True (ModelForces, CalculatorForces)"
            )

    def init_variables(self, state: MDState) -> dict[str, torch.Tensor]:
        """``state.thermostat`` with the work account added if missing."""
        variables = dict(state.thermostat)
        variables.setdefault(WORK, torch.zeros(state.n_systems, dtype=state.positions.dtype))
        return variables

    def conserved_term(self, state: MDState) -> torch.Tensor:
        """P₀V plus the barostat's work, per replica [n_systems] eV."""
        work = state.thermostat.get(WORK, torch.zeros_like(state.potential_energy))
        return self.pressure * state.volume() + work

    # -- the dynamics ---------------------------------------------------------------------
    def internal_pressure(self, state: MDState) -> torch.Tensor:
        """2K/3V − tr(σ)/3 per replica [n_systems], eV/Å³."""
        volume = state.volume()
        virial = -torch.diagonal(state.stress, dim1=1, dim2=2).sum(dim=1) / 3
        return 2 * state.kinetic_energy() / (3 * volume) + virial

    def _force(self, state: MDState) -> torch.Tensor:
        """f = −∂F/∂λ per replica, eV/Å^(3/2)."""
        volume = state.volume()
        excess = self.pressure - self.internal_pressure(state) - self.kt / (2 * volume)
        return -2 * volume.sqrt() * excess

    def drift_and_evaluate(self, state: MDState, term: ForceTerm, dt: float) -> MDState:
        """The drift of velocity Verlet over ``dt`` fs with the cell rescaled half before and
        half after it, then the forces of ``term`` at the new positions; the work of the move
        is added to the state's account. Frozen replicas keep everything."""
        volume0 = state.volume()
        lam = volume0.sqrt()
        force0 = self._force(state)
        noise = torch.randn(state.n_systems, generator=self.generator, dtype=lam.dtype)
        dlam = self.diffusion / self.kt * force0 * dt + math.sqrt(2 * self.diffusion * dt) * noise
        dlam = torch.where(state.active, dlam, 0.0)  # frozen replicas: scaled by exactly 1
        # λ' ≤ 0 (a time step far too long for τ_p) gives NaN, which NonFinite then catches.
        ratio = torch.where(lam + dlam > 0, (lam + dlam) / lam, float("nan"))
        half = ratio.pow(1 / 3)  # s^(1/2): s = (λ'/λ)^(2/3) scales lengths
        state = drift(_rescale(state, half), dt)
        state = evaluate(_rescale(state, half), term)
        if state.stress is None:
            raise InputError("the force term stopped giving the stress the barostat needs")
        force1 = self._force(state)
        volume1 = state.volume()
        work = (
            0.5 * dlam * (force0 + force1)
            + 0.25 * self.diffusion * dt / self.kt * (force1.square() - force0.square())
            + 0.5 * self.kt * torch.log(volume0 / volume1)
        )
        total = keep_frozen(state, state.thermostat[WORK] + work, state.thermostat[WORK])
        return replace(state, thermostat={**state.thermostat, WORK: total})


def _rescale(state: MDState, factor: torch.Tensor) -> MDState:
    """Positions and cells of each replica scaled by ``factor`` [n_systems], velocities by its
    inverse (a factor of exactly 1 leaves a frozen replica bit for bit as it was)."""
    per_atom = factor[state.system_index, None]
    return replace(
        state,
        positions=state.positions * per_atom,
        velocities=state.velocities / per_atom,
        cell=state.cell * factor[:, None, None],
    )
