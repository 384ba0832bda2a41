"""Batched MD of a trained model, written as an H5MD trajectory, resumable: the library behind
``stablemd simulate``.

The output directory holds ``run.json`` (the options, with fingerprints of the model and the
start structures), ``trajectory.h5`` and ``checkpoint.pt``. Calling again with the same inputs
continues from the checkpoint (a longer ``time_ps`` extends the run); other inputs are refused.
A replica whose numbers turn non-finite is frozen, its trajectory ends there, and the result
says so.

The forces are the model's conservative ones, its direct head, or both by multiple time
stepping (``forces``, ``mts``; :meth:`~stablemd.md.settings.MDSettings.force_term`). With
``pressure_bar`` periodic systems run at constant pressure and the trajectory records each
replica's cell and volume. ``every``
and ``checkpoint_every`` count integrator steps: with ``mts`` = M, outer steps of M ×
``timestep_fs``.

With ``bias_uncertainty`` τ (a model with an uncertainty, ``stablemd uncertainty fit``) the run
is uncertainty-biased MD (:mod:`stablemd.explore.uncertainty.bias`; τ = 0 runs plain MD and
reports u); ``stop_uncertainty`` freezes a replica once an atom's u passes it.

With a model that carries an early warning (a latent domain, docs/early_warning.md) the run
accumulates each replica's CLI index from the features of the same forward pass, at every
written frame (``every``), unless ``early_warning`` is False (and, for now, in runs that use
the uncertainty, whose force term does not give the features). The trajectory records it per
frame as the observables ``cumulative_latent_instability`` (ps) and
``max_extrapolation_grade``; at the end the run writes ``early_warning.json`` (the record of
:func:`~stablemd.diagnose.early_warning.report.early_warning_record`; a replica's "failure" is
the time a criterion stopped it) and ``early_warning.png``. The monitor is checkpointed with the
run, and the warning's fingerprint is one of the run's options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms
from pydantic import Field

from stablemd.core.config_file import field_defaults
from stablemd.core.errors import InputError
from stablemd.core.files import atomic_write, read_json_record, record_run_options, write_json
from stablemd.data.fingerprints import frames_fingerprint
from stablemd.diagnose.early_warning.model_file import EarlyWarning
from stablemd.diagnose.early_warning.monitor import LatentInstabilityMonitor
from stablemd.diagnose.early_warning.report import cli_figure
from stablemd.diagnose.early_warning.settings import (
    EarlyWarningSettings,
    early_warning_id,
    early_warning_monitor,
    latent_index,
    model_early_warning,
    run_early_warning_record,
)
from stablemd.explore.uncertainty.bias import UncertaintyBiasedForces, UncertaintyThreshold
from stablemd.explore.uncertainty.estimator import require_uncertainty
from stablemd.md.runner import RunResult, run
from stablemd.md.settings import MDSettings, Thermostat
from stablemd.md.starts import initial_state
from stablemd.models.potential import Potential
from stablemd.models.registry import model_fingerprint, trained_forces
from stablemd.monitors.criteria import NonFinite
from stablemd.monitors.trajectory import ReplicaObservable, TrajectoryWriter

#: Options that may change between a run and its continuation: the length, and
#: ``early_warning`` because None and True select the same stored warning, whose fingerprint
#: the run records (``early_warning_model``; False records None).
EXTENSIBLE = frozenset({"time_ps", "early_warning"})
#: The early warning's observables in the trajectory: name → (monitor series, H5MD unit).
EARLY_WARNING_OBSERVABLES = {
    "cumulative_latent_instability": ("cli_ps", "ps"),
    "max_extrapolation_grade": ("max_grade", None),
}
#: Resolution of early_warning.png.
DPI = 150


class SimulationSettings(MDSettings, EarlyWarningSettings):
    """MD settings plus the run length, how often frames and checkpoints are written, and the
    early warning (accumulated at every written frame)."""

    replicas: int = Field(8, ge=1, description="replicas integrated together in one batch")
    temperature_K: float = Field(300.0, gt=0, description="velocities and thermostat")
    thermostat: Thermostat = "langevin"
    time_ps: float = Field(10.0, gt=0, description="simulated time per replica")
    every: int = Field(100, ge=1, description="steps (outer steps with mts) between frames")
    velocities: bool = Field(False, description="write velocities too (for the VACF)")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints")
    bias_uncertainty: float | None = Field(
        None, ge=0, description="τ of uncertainty-biased MD (0: unbiased, u reported)"
    )
    stop_uncertainty: float | None = Field(
        None, gt=0, description="freeze a replica once an atom's u passes this, eV/Å"
    )

    def biased(self) -> bool:
        """Whether the run needs the model's uncertainty (a bias or a stop on it)."""
        return self.bias_uncertainty is not None or self.stop_uncertainty is not None

    def uncertainty_terms(
        self, potential: Potential, model: str = "the model"
    ) -> tuple[UncertaintyBiasedForces, list[UncertaintyThreshold]]:
        """The biased force term and the stop (if any) of a run that uses the uncertainty;
        refuses a model without one and the direct head or MTS (the bias follows −∂E/∂r)."""
        if self.forces == "direct" or self.mts is not None:
            option = "--mts" if self.mts is not None else "--forces direct"
            raise InputError(f"{option}: uncertainty-biased MD runs the conservative forces only")
        if self.forces is None and trained_forces(potential) == "direct":
            # its plain runs take the direct head (md.forces.model_force_term); the bias would
            # quietly switch it to an energy gradient it was never trained to give
            raise InputError(
                f"{model} was trained with direct forces only, and uncertainty-biased MD runs "
                "the conservative forces only; give --forces conservative to run them anyway"
            )
        uncertainty = require_uncertainty(potential, model)
        term = UncertaintyBiasedForces(
            potential, uncertainty, self.bias_uncertainty or 0.0,
            stress=self.pressure_bar is not None,
        )  # fmt: skip
        if self.stop_uncertainty is None:
            return term, []
        return term, [UncertaintyThreshold(self.stop_uncertainty)]

    def run_early_warning(
        self, potential: Potential, model: str = "the model"
    ) -> EarlyWarning | None:
        """The early warning the run uses (:func:`model_early_warning`): none by default in a
        run that uses the uncertainty, whose force term does not give the latent features, and
        refused there when asked for."""
        if not self.biased():
            return model_early_warning(potential, self, model)
        if self.early_warning or self.freeze_on_warning:
            option = "--freeze-on-warning" if self.freeze_on_warning else "--early-warning"
            raise InputError(
                f"{option}: uncertainty-biased MD (--bias-uncertainty, --stop-uncertainty) does "
                "not give the latent features the early warning reads; drop one or the other"
            )
        return None


def check_pressure(settings: MDSettings, starts: list[Atoms], source: str = "the start") -> None:
    """InputError when a pressure is asked for structures that are not periodic in all three
    directions (``source`` names them in the message)."""
    if settings.pressure_bar is None:
        return
    for i, atoms in enumerate(starts):
        if not atoms.pbc.all():
            raise InputError(
                f"--pressure {settings.pressure_bar:g}: {source} structure {i} is not periodic "
                f"in all directions (pbc={atoms.pbc.tolist()}); a molecule in vacuum has no "
                "pressure, run it without --pressure"
            )


@dataclass
class Simulation:
    """The run's result, where its trajectory is and, with the early warning, its record."""

    result: RunResult
    trajectory: Path
    early_warning: dict | None = None


def _observables(monitor: LatentInstabilityMonitor) -> dict[str, ReplicaObservable]:
    """The early warning's trajectory observables, read from ``monitor`` at each frame."""
    return {
        name: ReplicaObservable(lambda state, key=key: monitor.at(state, key), unit)
        for name, (key, unit) in EARLY_WARNING_OBSERVABLES.items()
    }


def _write_early_warning(record: dict, failure_ps: list, out: Path, title: str) -> None:
    write_json(record, out / "early_warning.json")
    figure = cli_figure({"CLI index": (record, failure_ps)}, title)
    with atomic_write(out / "early_warning.png") as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")


def _check_warning_continues(record: Path, warning_id: str | None) -> None:
    """A run made without the early warning (``--no-early-warning``, or by a stablemd that had
    none) continues without it: its index would start mid-run. Names the option that does."""
    if not record.is_file() or warning_id is None:
        return
    if read_json_record(record, "run record").get("early_warning_model") is None:
        raise InputError(
            f"{record}: this run was made without the early warning; continue it with "
            "--no-early-warning"
        )


def simulate(
    potential: Potential,
    starts: list[Atoms],
    settings: SimulationSettings,
    out: Path,
    progress: bool = True,
    label: str = "MD",
) -> Simulation:
    """Run ``settings.replicas`` replicas drawn from ``starts`` into the directory ``out``;
    ``label`` names the run in the title of ``early_warning.png`` (e.g. the model file)."""
    out = Path(out)
    check_pressure(settings, starts)
    early_warning = settings.run_early_warning(potential)
    outputs = ("features",) if early_warning is not None else ()
    # refuses a force scheme the model cannot give
    forces = settings.force_term(potential, outputs=outputs)
    stops, uncertainty = [], {}
    if settings.biased():
        forces, stops = settings.uncertainty_terms(potential)
        uncertainty = {"uncertainty": forces.uncertainty.fingerprint()}
    if not (out / "run.json").is_file():
        for name in ("trajectory.h5", "checkpoint.pt"):
            if (out / name).exists():
                raise InputError(
                    f"{out}: holds {name} but no run.json, so it is not a run to continue; "
                    "choose another output directory"
                )
    options = {
        "model": model_fingerprint(potential),
        "starts": frames_fingerprint(starts),
        **uncertainty,  # the model's weights do not fix its uncertainty: refitted, it differs
        **settings.model_dump(),
        "early_warning_model": early_warning_id(early_warning),
    }
    _check_warning_continues(out / "run.json", options["early_warning_model"])
    record_run_options(
        options, out / "run.json", may_change=EXTENSIBLE, defaults=field_defaults(type(settings))
    )
    state = initial_state(starts, settings.replicas, settings.temperature_K, settings.seed)
    integrator = settings.integrator()
    n_steps = round(settings.time_ps * 1000 / integrator.step_fs)
    trajectory = out / "trajectory.h5"
    biased = bool(settings.bias_uncertainty)  # E − τ_eff·u drives it, E is reported
    warning = []  # before the writer, which records its values of the same frame
    if early_warning is not None:
        warning = [early_warning_monitor(early_warning, settings, settings.every)]
    writer = TrajectoryWriter(
        trajectory, integrator, velocities=settings.velocities, every=settings.every,
        conserved=not biased, observables=_observables(latent_index(warning)) if warning else None,
    )  # fmt: skip
    monitors = [NonFinite(), *stops, *warning, writer]
    with writer:
        result = run(
            state, integrator, forces, n_steps, monitors, checkpoint=out / "checkpoint.pt",
            checkpoint_every=settings.checkpoint_every, progress=progress,
        )  # fmt: skip
    if early_warning is None:
        return Simulation(result, trajectory)
    failure_ps = [None if math.isnan(t) else t / 1000 for t in result.unstable_time_fs.tolist()]
    record = run_early_warning_record(
        early_warning, settings, monitors, failure_ps, result.unstable_reason, settings.time_ps
    )
    title = f"{label}, {settings.temperature_K:g} K, {settings.thermostat}"
    _write_early_warning(record, failure_ps, out, title)
    return Simulation(result, trajectory, record)
