"""The settings every batched MD run shares (simulate, the stability benchmark, StABlE).

Typed with pydantic so that the command line, YAML files and checkpoints validate and compare
them alike. Times in fs, temperatures K.

A *step* is one step of the integrator: ``timestep_fs`` long, or with multiple time stepping
(``mts`` = M) one outer step of M inner steps, M × ``timestep_fs`` long (:attr:`step_fs`).
Every interval counted in steps (``check_every``, and the trajectory's ``every`` and
``checkpoint_every``) counts these steps, because monitors only see the state between them.

With ``pressure_bar`` set, periodic systems run at constant pressure (stochastic cell
rescaling, :mod:`stablemd.md.barostats`); pressures are in bar and compressibilities in 1/bar
here, converted to eV/Å³ and Å³/eV for the engine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stablemd.md.barostats import BAR_IN_EV_PER_A3, StochasticCellRescaling
from stablemd.md.forces import ForceTerm, model_force_term
from stablemd.md.integrators import RESPA, Integrator, make_integrator, make_thermostat
from stablemd.models.potential import Potential

#: The thermostats of :func:`~stablemd.md.integrators.make_integrator` (``nve``: none).
Thermostat = Literal["nve", "langevin", "nose-hoover", "csvr"]

#: No MLIP MD of molecules or water is meaningful beyond this time step (fs).
MAX_TIMESTEP_FS = 10.0


class MDSettings(BaseModel):
    """Replicas, temperature, integrator and thermostat of a batched MD run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    replicas: int = Field(64, ge=1, description="replicas integrated together in one batch")
    temperature_K: float = Field(500.0, gt=0, description="velocities and thermostat")
    timestep_fs: float = Field(0.5, gt=0, le=MAX_TIMESTEP_FS)
    thermostat: Thermostat = "nose-hoover"
    tau_fs: float = Field(100.0, gt=0, description="Nosé–Hoover or CSVR time constant")
    friction_per_fs: float = Field(0.01, gt=0, description="Langevin friction")
    check_every: int = Field(
        20, ge=1, description="steps between stability checks (outer steps with mts)"
    )
    seed: int = Field(0, description="start structures, velocities and thermostat noise")
    forces: Literal["conservative", "direct"] | None = Field(
        None, description="−∂E/∂r or the model's direct head; None: what the model was trained for"
    )
    mts: int | None = Field(
        None,
        ge=1,
        description="multiple time stepping: M inner steps of timestep_fs with direct forces, "
        "the conservative correction every M (needs a trained direct head); None: off",
    )
    pressure_bar: float | None = Field(
        None, description="constant pressure (periodic systems), bar; None: constant volume"
    )
    barostat_time_fs: float = Field(1000.0, gt=0, description="barostat relaxation time τ_p")
    compressibility_per_bar: float = Field(
        4.5e-5, gt=0, description="isothermal compressibility the barostat assumes (water's)"
    )

    @model_validator(mode="after")
    def _one_force_scheme(self) -> MDSettings:
        if self.mts is not None and self.forces is not None:
            raise ValueError(
                f"--mts {self.mts} runs direct forces inside and conservative ones every "
                f"{self.mts} steps: leave --forces ({self.forces}) unset"
            )
        if self.pressure_bar is not None and (self.mts is not None or self.forces == "direct"):
            scheme = f"--mts {self.mts}" if self.mts is not None else "--forces direct"
            raise ValueError(
                f"--pressure {self.pressure_bar:g}: the barostat needs the stress of "
                f"conservative forces without multiple time stepping; drop {scheme}"
            )
        return self

    @property
    def step_fs(self) -> float:
        """Simulated time of one integrator step, fs: ``timestep_fs``, × ``mts`` with MTS."""
        return self.timestep_fs * (self.mts or 1)

    def barostat(self) -> StochasticCellRescaling | None:
        """The barostat of ``pressure_bar`` (its noise seeded by ``seed + 2``), or None."""
        if self.pressure_bar is None:
            return None
        return StochasticCellRescaling(
            self.pressure_bar * BAR_IN_EV_PER_A3, self.temperature_K,
            self.compressibility_per_bar / BAR_IN_EV_PER_A3, self.barostat_time_fs,
            seed=self.seed + 2,
        )  # fmt: skip

    def integrator(self) -> Integrator:
        """A new integrator with these settings (its noise seeded by ``seed + 1``): with ``mts``
        RESPA, the thermostat acting around each outer step; else by thermostat name, with the
        barostat when ``pressure_bar`` is set."""
        if self.mts is not None:
            bath = make_thermostat(
                self.thermostat, self.temperature_K, self.friction_per_fs, self.tau_fs,
                self.seed + 1,
            )  # fmt: skip
            return RESPA(self.timestep_fs, self.mts, bath)
        return make_integrator(
            self.thermostat, self.timestep_fs, self.temperature_K, self.friction_per_fs,
            self.tau_fs, self.seed + 1, self.barostat(),
        )  # fmt: skip

    def force_term(self, potential: Potential, model: str = "this model") -> ForceTerm:
        """The force term of a run of ``potential`` (named ``model`` in errors) with these
        ``forces`` and ``mts`` (:func:`~stablemd.md.forces.model_force_term`), with the stress
        when a barostat needs it."""
        return model_force_term(
            potential, self.forces, self.mts, model=model, stress=self.pressure_bar is not None
        )
