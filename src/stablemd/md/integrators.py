"""Integrators: one step of every replica at once, composed of the steps of
:mod:`stablemd.md.steps` and the thermostat operators of :mod:`stablemd.md.thermostats`.

Each integrator has ``step(state, term) -> state`` and ``conserved_energy(state)`` [n_systems]
eV; ``term`` is any force term (:mod:`stablemd.md.forces`). Time steps in fs.

- :class:`VelocityVerlet`: NVE, or with a thermostat acting half a step before and after
  (Nosé–Hoover chain, CSVR; Trotter splitting).
- :class:`BAOAB`: Langevin dynamics (Leimkuhler & Matthews 2013), the noise between two
  half drifts.
- :class:`RESPA`: multiple time stepping (Tuckerman, Berne & Martyna 1992): the fast forces
  every inner step, the slow ones every ``n_inner`` steps, a thermostat around the outer step.

Constant pressure: velocity Verlet with a barostat
(:class:`~stablemd.md.barostats.StochasticCellRescaling`) that rescales the cell around its drift;
Langevin dynamics then runs as OBABO (the noise half a step at each end).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from stablemd.core.errors import InputError
from stablemd.md.barostats import StochasticCellRescaling
from stablemd.md.forces import ForceLevels, ForceTerm
from stablemd.md.state import MDState
from stablemd.md.steps import advance_clock, drift, evaluate, kick, velocity_verlet
from stablemd.md.thermostats import CSVR, LangevinNoise, NoseHooverChain, Thermostat

#: Names accepted by :func:`make_integrator`.
THERMOSTATS = ("nve", "langevin", "nose-hoover", "csvr")


class Integrator:
    """Time step ``timestep_fs``, an optional thermostat and (velocity Verlet only) an optional
    barostat; subclasses compose :meth:`step`."""

    def __init__(self, timestep_fs: float, thermostat: Thermostat | None = None):
        if not timestep_fs > 0:
            raise InputError(f"timestep must be positive, got {timestep_fs} fs")
        self.dt = float(timestep_fs)
        self.thermostat = thermostat
        self.barostat: StochasticCellRescaling | None = None

    @property
    def step_fs(self) -> float:
        """Simulated time of one :meth:`step`, fs."""
        return self.dt

    def step(self, state: MDState, term: ForceTerm) -> MDState:
        """The state one time step later."""
        raise NotImplementedError

    def prepare(self, state: MDState, term: ForceTerm) -> MDState:
        """``state`` with forces, potential energy and thermostat variables in place.

        Forces already in the state are reused: set ``state.forces = None`` after changing
        the force term (e.g. new model weights) so that they are recomputed.
        """
        if state.forces is None or state.potential_energy is None:
            state = evaluate(state, term)
        if self.thermostat is not None:
            state = replace(state, thermostat=self.thermostat.init_variables(state))
        if self.barostat is not None:
            self.barostat.check(state)
            state = replace(state, thermostat=self.barostat.init_variables(state))
        return state

    def conserved_energy(self, state: MDState) -> torch.Tensor:
        """Potential plus kinetic energy plus the thermostat's and barostat's terms, per replica
        [n_systems] eV."""
        energy = state.potential_energy + state.kinetic_energy()
        for bath in (self.thermostat, self.barostat):
            if bath is not None:
                energy = energy + bath.conserved_term(state)
        return energy

    def state_dict(self) -> dict:
        """Random generator states to checkpoint (the barostat's under its own key)."""
        out = {} if self.thermostat is None else self.thermostat.state_dict()
        if self.barostat is not None:
            out["barostat"] = self.barostat.state_dict()
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        if self.thermostat is not None:
            self.thermostat.load_state_dict(state_dict)
        if self.barostat is not None:
            self.barostat.load_state_dict(state_dict["barostat"])

    def _thermostat_half(self, state: MDState, dt: float) -> MDState:
        return state if self.thermostat is None else self.thermostat.propagate(state, dt / 2)


class VelocityVerlet(Integrator):
    """Velocity Verlet, NVE without a thermostat; with one, T(dt/2) · Verlet · T(dt/2); with a
    ``barostat``, the cell rescaled around the drift (constant pressure)."""

    def __init__(
        self,
        timestep_fs: float,
        thermostat: Thermostat | None = None,
        barostat: StochasticCellRescaling | None = None,
    ):
        super().__init__(timestep_fs, thermostat)
        self.barostat = barostat

    def step(self, state: MDState, term: ForceTerm) -> MDState:
        state = self.prepare(state, term)
        state = self._thermostat_half(state, self.dt)
        state = velocity_verlet(state, term, self.dt, self.barostat)
        state = self._thermostat_half(state, self.dt)
        return advance_clock(state, self.dt)


class BAOAB(Integrator):
    """Langevin dynamics by BAOAB: kick, half drift, exact noise over dt, half drift, kick."""

    def __init__(self, timestep_fs: float, thermostat: LangevinNoise):
        super().__init__(timestep_fs, thermostat)

    def step(self, state: MDState, term: ForceTerm) -> MDState:
        state = self.prepare(state, term)
        half = self.dt / 2
        state = drift(kick(state, state.forces, half), half)
        state = drift(self.thermostat.propagate(state, self.dt), half)
        state = evaluate(state, term)
        return advance_clock(kick(state, state.forces, half), self.dt)


class RESPA(Integrator):
    """Reversible multiple time stepping: one step is ``n_inner`` inner steps of ``timestep_fs``.

    The force term must be :class:`~stablemd.md.forces.ForceLevels`: its ``slow`` forces kick
    half an outer step before and after ``n_inner`` velocity-Verlet steps with the ``fast``
    forces; a thermostat acts half an outer step at each end. The kicks at the ends of the outer
    step are merged with the adjacent inner kicks, so with ``n_inner = 1`` this is exactly
    velocity Verlet with the sum of the levels.
    """

    def __init__(self, timestep_fs: float, n_inner: int, thermostat: Thermostat | None = None):
        super().__init__(timestep_fs, thermostat)
        if n_inner < 1:
            raise InputError(f"RESPA needs at least one inner step, got {n_inner}")
        self.n_inner = int(n_inner)

    @property
    def step_fs(self) -> float:
        return self.n_inner * self.dt

    def step(self, state: MDState, term: ForceTerm) -> MDState:
        if not isinstance(term, ForceLevels):
            raise InputError("RESPA needs fast and slow force levels (ForceLevels)")
        if ForceLevels.FAST not in state.outputs:  # forces of another term: not split in levels
            state = replace(state, forces=None, potential_energy=None)
        state = self.prepare(state, term)
        state = self._thermostat_half(state, self.step_fs)
        fast, slow = ForceLevels.FAST, ForceLevels.SLOW
        for inner in range(self.n_inner):
            forces = state.outputs[fast]
            if inner == 0:  # the outer half kick, merged: F_fast + M F_slow, or the sum for M = 1
                forces = forces + self.n_inner * state.outputs[slow]
            state = drift(kick(state, forces, self.dt / 2), self.dt)
            last = inner == self.n_inner - 1
            state = evaluate(state, term if last else _FastLevel(term))
            forces = state.outputs[fast]
            if last:
                forces = forces + self.n_inner * state.outputs[slow]
            state = kick(state, forces, self.dt / 2)
        state = self._thermostat_half(state, self.step_fs)
        return advance_clock(state, self.step_fs)


class _FastLevel:
    """The fast level of ``levels`` alone, with the slow forces of the last outer step kept."""

    def __init__(self, levels: ForceLevels):
        self.levels = levels

    def __call__(self, state: MDState):
        result = self.levels.fast(state)
        slow = state.outputs[ForceLevels.SLOW]
        result.outputs.update({ForceLevels.FAST: result.forces, ForceLevels.SLOW: slow})
        result.forces = result.forces + slow
        return result


def make_thermostat(
    thermostat: str, temperature_K: float, friction_per_fs: float, tau_fs: float, seed: int
) -> Thermostat | None:
    """The thermostat named ``thermostat`` (one of :data:`THERMOSTATS`; ``nve``: none)."""
    if thermostat == "nve":
        return None
    if thermostat == "langevin":
        return LangevinNoise(temperature_K, friction_per_fs, seed=seed)
    if thermostat == "nose-hoover":
        return NoseHooverChain(temperature_K, tau_fs)
    if thermostat == "csvr":
        return CSVR(temperature_K, tau_fs, seed=seed)
    raise InputError(f"unknown thermostat {thermostat!r}; choose from {list(THERMOSTATS)}")


def make_integrator(
    thermostat: str,
    timestep_fs: float,
    temperature_K: float,
    friction_per_fs: float,
    tau_fs: float,
    seed: int,
    barostat: StochasticCellRescaling | None = None,
) -> Integrator:
    """The integrator of ``thermostat``: BAOAB for Langevin, velocity Verlet for the others;
    Langevin uses ``friction_per_fs``, Nosé–Hoover and CSVR ``tau_fs``, the stochastic ones
    ``seed``. With a ``barostat`` always velocity Verlet (Langevin as OBABO), the barostat
    rescaling the cell around its drift."""
    bath = make_thermostat(thermostat, temperature_K, friction_per_fs, tau_fs, seed)
    if isinstance(bath, LangevinNoise) and barostat is None:
        return BAOAB(timestep_fs, bath)
    return VelocityVerlet(timestep_fs, bath, barostat)
