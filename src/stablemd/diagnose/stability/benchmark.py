"""The stability benchmark: every model from the same starts, same velocities, same thermostat.

For each model, R replicas run in one batch until ``time_ps`` or until every replica is unstable
(bond-length deviation for molecules, minimum intermolecular distance for periodic systems,
non-finite numbers always). The h(r) of each replica is accumulated over its stable part only
and compared with a reference h(r) (e.g. of the training data); for periodic systems so is the
mean-squared displacement of each element, which gives its diffusivity
(:mod:`stablemd.diagnose.stability.diffusion`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from ase import Atoms
from pydantic import Field

from stablemd.analysis.structure import distance_histogram_h_r
from stablemd.core.errors import InputError
from stablemd.core.files import record_run_options, write_json
from stablemd.data.fingerprints import frames_fingerprint
from stablemd.diagnose.stability.diffusion import DIFFUSION_WINDOW_PS, StableDisplacement
from stablemd.diagnose.stability.report import StabilitySummary, summarize
from stablemd.md.forces import ForceTerm, ModelForces
from stablemd.md.monitor import Monitor, Observer
from stablemd.md.runner import run
from stablemd.md.settings import MDSettings
from stablemd.md.starts import initial_state
from stablemd.md.state import MDState
from stablemd.models.potential import Potential
from stablemd.models.registry import model_fingerprint
from stablemd.monitors.criteria import NonFinite, geometric_criterion
from stablemd.systems.system import System

#: h(r) range (Å): every intramolecular distance of the built-in molecules.
H_R_MAX_A = 10.0


class StabilitySettings(MDSettings):
    """Shared by every model of one benchmark: the MD settings, the run length (ps) and the
    evaluation thresholds (Å, StABlE appendix A.5)."""

    time_ps: float = Field(50.0, gt=0, description="simulated time per replica")
    max_bond_deviation_A: float = Field(0.5, gt=0, description="molecules: bond criterion")
    min_intermolecular_A: float = Field(1.2, gt=0, description="periodic boxes: contacts")
    nonbonded_intramolecular: bool = Field(
        True, description="contacts also between non-bonded atoms of one molecule"
    )


class StableHistogram(Observer):
    """The h(r) of each replica summed over the calls at which it is still active."""

    name = "stable_h_r"

    def __init__(self, n_replicas: int, r_max: float = H_R_MAX_A, every: int = 1):
        super().__init__(every)
        self.r_max = r_max
        self.r, _ = distance_histogram_h_r(torch.zeros(1, 2, 3, dtype=torch.float64), r_max)
        self.sums = torch.zeros(n_replicas, len(self.r), dtype=torch.float64)
        self.counts = torch.zeros(n_replicas, dtype=torch.float64)

    def __call__(self, state: MDState) -> None:
        active = state.active
        if not bool(active.any()):
            return
        _, h = distance_histogram_h_r(state, self.r_max)
        self.sums[active] += h[active]
        self.counts[active] += 1

    def pooled(self) -> torch.Tensor | None:
        """h(r) averaged over every stable frame of every replica (None if there are none)."""
        total = float(self.counts.sum())
        return self.sums.sum(dim=0) / total if total > 0 else None

    def state_dict(self) -> dict:
        return {"sums": self.sums.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.sums, self.counts = state["sums"].clone(), state["counts"].clone()


def h_r_mae(h: torch.Tensor, reference: torch.Tensor, dr: float) -> float:
    """∫ |h(r) − h_ref(r)| dr, dimensionless (0 … 2)."""
    return float((h - reference).abs().sum() * dr)


@dataclass
class ModelStability:
    """Stable times, the pooled h(r) of the stable parts, the speed of the run, for periodic
    systems the diffusivity of each element over the stable parts (cm²/s), and per replica the
    criterion that ended it (None: stable to the end)."""

    summary: StabilitySummary
    h_r: list[float] | None
    steps_per_s: float
    wall_time_s: float
    diffusivity_cm2_per_s: dict[str, float | None] | None = None
    failure_reasons: list[str | None] | None = None


def stability_monitors(system: System, settings: StabilitySettings) -> list[Monitor]:
    """The criteria (geometric, non-finite), the h(r) of the stable parts and, for periodic
    systems, their MSD, all every ``check_every`` steps."""
    every = settings.check_every
    monitors: list[Monitor] = [
        geometric_criterion(
            system, settings.max_bond_deviation_A, settings.min_intermolecular_A,
            settings.nonbonded_intramolecular, every=every,
        ),
        NonFinite(every=every),
        StableHistogram(settings.replicas, every=every),
    ]  # fmt: skip
    interval_fs = every * settings.timestep_fs
    window = round(DIFFUSION_WINDOW_PS * 1000 / interval_fs)
    if system.periodic and window >= 2:
        monitors.append(StableDisplacement(window, interval_fs, every=every))
    return monitors


def run_stability(
    model: Potential | ForceTerm,
    system: System,
    starts: list[Atoms],
    settings: StabilitySettings,
    out_dir: Path,
    model_id: str | None = None,
    progress: bool = True,
    label: str = "MD",
) -> ModelStability:
    """Simulate one model (a potential, or any force term, e.g. a reference method through
    :class:`~stablemd.md.forces.CalculatorForces`); resumes from ``out_dir/checkpoint.pt``.

    ``model_id`` names what is simulated (default: the potential's fingerprint; required for
    another force term). The finished result is kept in ``out_dir/result.json``, so a rerun
    reports it without simulating again, and a rerun with a longer ``time_ps`` extends it from
    its last state. A rerun with other settings, another model, system or start structures is
    refused (``out_dir/settings.json``).
    """
    if model_id is None:
        if not isinstance(model, Potential):
            raise ValueError("run_stability: name the force term with model_id")
        model_id = model_fingerprint(model)
    done = out_dir / "result.json"
    earlier = json.loads(done.read_text()) if done.is_file() else None
    if earlier is not None and earlier["summary"]["run_length_ps"] > settings.time_ps:
        raise InputError(
            f"{done}: the run is already {earlier['summary']['run_length_ps']:g} ps long; "
            f"a shorter one ({settings.time_ps:g} ps) needs another output directory"
        )
    options = {
        "model": model_id,
        "system": system.name,
        "starts": frames_fingerprint(starts),
        **settings.model_dump(),
    }
    record_run_options(options, out_dir / "settings.json", may_change={"time_ps"})
    if earlier is not None and earlier["summary"]["run_length_ps"] == settings.time_ps:
        summary = {
            **earlier["summary"],
            "stable_times_ps": tuple(earlier["summary"]["stable_times_ps"]),
        }
        return ModelStability(StabilitySummary(**summary), **earlier["run"])
    state = initial_state(starts, settings.replicas, settings.temperature_K, settings.seed)
    monitors = stability_monitors(system, settings)
    n_steps = round(settings.time_ps * 1000 / settings.timestep_fs)
    result = run(
        state, settings.integrator(), ModelForces(model) if isinstance(model, Potential) else model,
        n_steps, monitors, checkpoint=out_dir / "checkpoint.pt",
        checkpoint_every=max(settings.check_every, 2000), progress=progress, label=label,
    )  # fmt: skip
    stable_ps = (result.unstable_time_fs / 1000).tolist()
    histogram = next(m for m in monitors if isinstance(m, StableHistogram))
    displacement = next((m for m in monitors if isinstance(m, StableDisplacement)), None)
    pooled = histogram.pooled()
    outcome = ModelStability(
        summary=summarize(stable_ps, settings.time_ps),
        h_r=None if pooled is None else pooled.tolist(),
        steps_per_s=result.steps / max(result.wall_time_s, 1e-9),
        wall_time_s=result.wall_time_s + (earlier["run"]["wall_time_s"] if earlier else 0.0),
        diffusivity_cm2_per_s=None if displacement is None else displacement.diffusivity(),
        failure_reasons=result.unstable_reason,
    )
    run_fields = {k: v for k, v in asdict(outcome).items() if k != "summary"}
    write_json({"summary": asdict(outcome.summary), "run": run_fields}, done)
    return outcome
