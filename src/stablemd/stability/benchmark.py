"""The stability benchmark: every model from the same starts, same velocities, same thermostat.

For each model, R replicas run in one batch until ``time_ps`` or until every replica is unstable
(bond-length deviation for molecules, minimum intermolecular distance for periodic systems,
non-finite numbers always). The h(r) of each replica is accumulated over its stable part only
and compared with a reference h(r) (e.g. of the training data); for periodic systems so is the
mean-squared displacement of each element, which gives its diffusivity
(:mod:`stablemd.stability.diffusion`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from stablemd.errors import InputError
from stablemd.io import record_run_options, write_json
from stablemd.md.criteria import BondLengthDeviation, MinIntermolecularDistance, NonFinite
from stablemd.md.forces import ForceTerm, ModelForces
from stablemd.md.integrators import make_integrator
from stablemd.md.observables import distance_histogram_h_r
from stablemd.md.runner import run
from stablemd.md.starts import state_from_atoms
from stablemd.md.state import MDState
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.models.potential import Potential
from stablemd.stability.diffusion import DIFFUSION_WINDOW_PS, StableDisplacement
from stablemd.stability.report import StabilitySummary, summarize
from stablemd.systems.system import System

#: h(r) range (Å): every intramolecular distance of the built-in molecules.
H_R_MAX_A = 10.0


@dataclass
class StabilitySettings:
    """Shared by every model of one benchmark. Times in fs/ps, temperature K, lengths Å."""

    replicas: int = 64
    temperature_K: float = 500.0
    time_ps: float = 50.0
    timestep_fs: float = 0.5
    thermostat: str = "nose-hoover"
    tau_fs: float = 100.0
    friction_per_fs: float = 0.01
    max_bond_deviation_A: float = 0.5
    min_intermolecular_A: float = 1.2
    check_every: int = 20
    seed: int = 0


class StableHistogram:
    """Observer: the h(r) of each replica summed over the calls at which it is still active."""

    def __init__(self, n_replicas: int, r_max: float = H_R_MAX_A):
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


def criteria_for(system: System, settings: StabilitySettings) -> list:
    """The instability criteria of a system: bonds for molecules, contacts for periodic boxes."""
    if system.periodic:
        geometric = MinIntermolecularDistance(system.molecule_index, settings.min_intermolecular_A)
    else:
        geometric = BondLengthDeviation(
            system.bonds, system.reference_bond_lengths, settings.max_bond_deviation_A
        )
    return [geometric, NonFinite()]


def start_structures(starts: list[Atoms], replicas: int, seed: int) -> list[Atoms]:
    """``replicas`` start structures drawn without replacement when there are enough."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(starts), size=replicas, replace=len(starts) < replicas)
    return [starts[int(i)] for i in chosen]


@dataclass
class ModelStability:
    """Stable times, the pooled h(r) of the stable parts, the speed of the run and, for periodic
    systems, the diffusivity of each element over the stable parts (cm²/s)."""

    summary: StabilitySummary
    h_r: list[float] | None
    steps_per_s: float
    wall_time_s: float
    diffusivity_cm2_per_s: dict[str, float | None] | None = None


def _displacement_observer(
    system: System, settings: StabilitySettings
) -> StableDisplacement | None:
    """The MSD observer of a periodic system (None for molecules, or a window under 2 checks)."""
    interval_fs = settings.check_every * settings.timestep_fs
    window = round(DIFFUSION_WINDOW_PS * 1000 / interval_fs)
    return StableDisplacement(window, interval_fs) if system.periodic and window >= 2 else None


def run_stability(
    model: Potential | ForceTerm,
    system: System,
    starts: list[Atoms],
    settings: StabilitySettings,
    out_dir: Path,
    progress: bool = True,
) -> ModelStability:
    """Simulate one model (a potential, or any force term, e.g. a reference method through
    :class:`~stablemd.md.forces.CalculatorForces`); resumes from ``out_dir/checkpoint.pt``.

    The finished result is kept in ``out_dir/result.json``, so a rerun reports it without
    simulating again, and a rerun with a longer ``time_ps`` extends it from its last state. A
    rerun with other settings is refused (``out_dir/settings.json``).
    """
    done = out_dir / "result.json"
    earlier = json.loads(done.read_text()) if done.is_file() else None
    if earlier is not None and earlier["summary"]["run_length_ps"] > settings.time_ps:
        raise InputError(
            f"{done}: the run is already {earlier['summary']['run_length_ps']:g} ps long; "
            f"a shorter one ({settings.time_ps:g} ps) needs another output directory"
        )
    record_run_options(asdict(settings), out_dir / "settings.json", frozenset({"time_ps"}))
    if earlier is not None and earlier["summary"]["run_length_ps"] == settings.time_ps:
        summary = {
            **earlier["summary"],
            "stable_times_ps": tuple(earlier["summary"]["stable_times_ps"]),
        }
        return ModelStability(StabilitySummary(**summary), **earlier["run"])
    state = state_from_atoms(start_structures(starts, settings.replicas, settings.seed))
    state = maxwell_boltzmann(state, settings.temperature_K, settings.seed, exact=True)
    integrator = make_integrator(
        settings.thermostat, settings.timestep_fs, settings.temperature_K,
        settings.friction_per_fs, settings.tau_fs, settings.seed + 1,
    )  # fmt: skip
    histogram = StableHistogram(settings.replicas)
    displacement = _displacement_observer(system, settings)
    observers = [*criteria_for(system, settings), histogram]
    observers += [] if displacement is None else [displacement]
    n_steps = round(settings.time_ps * 1000 / settings.timestep_fs)
    result = run(
        state, integrator, ModelForces(model) if isinstance(model, Potential) else model, n_steps,
        observers=observers, every=settings.check_every,
        checkpoint=out_dir / "checkpoint.pt", checkpoint_every=max(settings.check_every, 2000),
        progress=progress,
    )  # fmt: skip
    stable_ps = (result.unstable_time_fs / 1000).tolist()
    pooled = histogram.pooled()
    outcome = ModelStability(
        summary=summarize(stable_ps, settings.time_ps),
        h_r=None if pooled is None else pooled.tolist(),
        steps_per_s=result.steps / max(result.wall_time_s, 1e-9),
        wall_time_s=result.wall_time_s + (earlier["run"]["wall_time_s"] if earlier else 0.0),
        diffusivity_cm2_per_s=None if displacement is None else displacement.diffusivity(),
    )
    run_fields = {k: v for k, v in asdict(outcome).items() if k != "summary"}
    write_json({"summary": asdict(outcome.summary), "run": run_fields}, done)
    return outcome
