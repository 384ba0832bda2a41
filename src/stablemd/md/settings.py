"""The settings every batched MD run shares (simulate, the stability benchmark, StABlE).

Typed with pydantic so that the command line, YAML files and checkpoints validate and compare
them alike. Times in fs, temperatures K.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from stablemd.md.integrators import Integrator, make_integrator

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
    check_every: int = Field(20, ge=1, description="steps between stability checks")
    seed: int = Field(0, description="start structures, velocities and thermostat noise")

    def integrator(self) -> Integrator:
        """A new integrator with these settings (its noise seeded by ``seed + 1``)."""
        return make_integrator(
            self.thermostat, self.timestep_fs, self.temperature_K, self.friction_per_fs,
            self.tau_fs, self.seed + 1,
        )  # fmt: skip
