"""The stability benchmark: every model from the same starts, same velocities, same thermostat.

With a model that carries an early warning (a latent domain stored with it,
:mod:`stablemd.diagnose.early_warning.model_file`), the run also accumulates each replica's CLI
index from the features of the same forward pass (``early_warning``), and with
``freeze_on_warning`` freezes a replica once its index passes the critical level.

For each model, R replicas run in one batch until ``time_ps`` or until every replica is unstable
(bond-length deviation for molecules, minimum distance of non-bonded atoms for periodic systems,
non-finite numbers always; for periodic systems optionally StABlE's evaluation criterion, the
deviation of window-averaged element-resolved RDFs from a reference RDF). The h(r) of each
replica is accumulated over its stable part only and compared with a reference h(r) (e.g. of
the training data); for periodic systems so is the mean-squared displacement of each element,
which gives its diffusivity (:mod:`stablemd.diagnose.stability.diffusion`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from ase import Atoms
from pydantic import Field

from stablemd.analysis.structure import distance_histogram_h_r
from stablemd.core.errors import InputError
from stablemd.core.files import (
    check_same_options,
    read_json_record,
    record_run_options,
    write_json,
)
from stablemd.data.fingerprints import frames_fingerprint
from stablemd.diagnose.early_warning.model_file import EarlyWarning
from stablemd.diagnose.early_warning.settings import (
    EarlyWarningSettings,
    early_warning_id,
    early_warning_monitor,
    model_early_warning,
    run_early_warning_record,
)
from stablemd.diagnose.stability.diffusion import DIFFUSION_WINDOW_PS, StableDisplacement
from stablemd.diagnose.stability.report import StabilitySummary, summarize
from stablemd.md.forces import ForceTerm
from stablemd.md.monitoring import Monitor, Observer
from stablemd.md.runner import run
from stablemd.md.settings import MDSettings
from stablemd.md.starts import initial_state
from stablemd.md.state import MDState
from stablemd.models.potential import Potential
from stablemd.models.registry import model_fingerprint
from stablemd.monitors.criteria import NonFinite, RDFDeviation, geometric_criterion
from stablemd.systems.system import System

#: Settings added after runs were recorded without them, and the value those runs had.
RECORDED_LATER = {
    "max_rdf_deviation": None,
    "rdf_window_ps": 1.0,
    "early_warning": None,
    "early_warning_indicator": "grade",
    "freeze_on_warning": False,
    "early_warning_model": None,
}
#: h(r) range (Å): every intramolecular distance of the built-in molecules.
H_R_MAX_A = 10.0


class StabilitySettings(MDSettings, EarlyWarningSettings):
    """Shared by every model of one benchmark: the MD settings, the run length (ps) and the
    evaluation thresholds (Å, StABlE appendix A.5)."""

    time_ps: float = Field(50.0, gt=0, description="simulated time per replica")
    max_bond_deviation_A: float = Field(0.5, gt=0, description="molecules: bond criterion")
    min_intermolecular_A: float = Field(1.2, gt=0, description="periodic boxes: contacts")
    nonbonded_intramolecular: bool = Field(
        True, description="contacts also between non-bonded atoms of one molecule"
    )
    max_rdf_deviation: float | None = Field(
        None,
        gt=0,
        description="periodic boxes: unstable when ∫|⟨g_ab⟩ − g_ab^ref| dr (Å) of any element "
        "pair exceeds this over a window (StABlE's water setting: 3.0); None: not checked",
    )
    rdf_window_ps: float = Field(1.0, gt=0, description="averaging window of the RDF criterion")


class StablePartHistogram(Observer):
    """The h(r) of each replica summed over the calls at which it is still active."""

    name = "stable_part_h_r"

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
    early_warning: dict | None = None


def check_rdf_criterion(
    system: System, settings: StabilitySettings, reference_rdf: Mapping | None
) -> None:
    """Refuse the RDF criterion for a molecule or without a reference RDF."""
    if settings.max_rdf_deviation is None:
        return
    if not system.periodic:
        raise InputError(
            f"max_rdf_deviation: the RDF criterion needs a periodic box; {system.name} is a "
            "molecule (the bond-length deviation judges it)"
        )
    if not reference_rdf:
        raise InputError("max_rdf_deviation: the RDF criterion needs a reference RDF")


def rdf_fingerprint(reference_rdf: Mapping) -> str:
    """A short hash of a reference RDF {(Z_a, Z_b): g [n_bins]}, to recognise it on resume."""
    digest = hashlib.sha256()
    for pair in sorted(reference_rdf):
        digest.update(repr(tuple(int(z) for z in pair)).encode())
        digest.update(torch.as_tensor(reference_rdf[pair], dtype=torch.float64).numpy().tobytes())
    return digest.hexdigest()[:16]


def stability_monitors(
    system: System,
    settings: StabilitySettings,
    reference_rdf: Mapping | None = None,
    early_warning: EarlyWarning | None = None,
) -> list[Monitor]:
    """The criteria (geometric, non-finite, with ``settings.max_rdf_deviation`` the RDF
    deviation from ``reference_rdf``), with ``early_warning`` the CLI index (a criterion with
    ``settings.freeze_on_warning``), the h(r) of the stable parts and, for periodic systems,
    their MSD, all every ``check_every`` steps."""
    check_rdf_criterion(system, settings, reference_rdf)
    every = settings.check_every
    monitors: list[Monitor] = [
        geometric_criterion(
            system, settings.max_bond_deviation_A, settings.min_intermolecular_A,
            settings.nonbonded_intramolecular, every=every,
        ),
        NonFinite(every=every),
    ]  # fmt: skip
    if settings.max_rdf_deviation is not None:
        monitors.append(
            RDFDeviation(
                reference_rdf, window_fs=1000.0 * settings.rdf_window_ps,
                max_mae=settings.max_rdf_deviation, every=every,
            )
        )  # fmt: skip
    if early_warning is not None:
        monitors.append(early_warning_monitor(early_warning, settings, every))
    monitors.append(StablePartHistogram(settings.replicas, every=every))
    interval_fs = every * settings.step_fs
    window = round(DIFFUSION_WINDOW_PS * 1000 / interval_fs)
    if system.periodic and window >= 2:
        monitors.append(StableDisplacement(window, interval_fs, every=every))
    return monitors


def stability_run_options(
    model_id: str,
    system: System,
    starts: list[Atoms],
    settings: StabilitySettings,
    reference_rdf: Mapping | None,
    early_warning: EarlyWarning | None = None,
) -> dict:
    """What defines a stability run's result: the model, the system, the start structures, the
    settings, (with the RDF criterion) the reference RDF and the early warning the run uses
    (:func:`early_warning_id`; the model's fingerprint covers its weights only), as
    ``settings.json`` records it."""
    options = {
        "model": model_id,
        "system": system.name,
        "starts": frames_fingerprint(starts),
        **settings.model_dump(),
        "early_warning_model": early_warning_id(early_warning),
    }
    if settings.max_rdf_deviation is not None:
        options["rdf_reference"] = rdf_fingerprint(reference_rdf)
    return options


def check_stability_run(options: dict, out_dir: Path) -> dict | None:
    """The finished result kept in ``out_dir`` (None: none yet), once it is clear that a run
    with ``options`` (:func:`stability_run_options`) may go there: a damaged or foreign
    ``result.json`` or ``settings.json``, other options or a shorter run are refused. Writes
    nothing, so that several runs can all be checked before the first starts."""
    done = out_dir / "result.json"
    earlier = None
    if done.is_file():
        earlier = read_json_record(done, "stability result", ("summary", "run"))
        summary = earlier["summary"]
        length = summary.get("run_length_ps") if isinstance(summary, dict) else None
        if not isinstance(length, int | float):
            raise InputError(f"{done}: not a stablemd stability result; use another output")
        if summary["run_length_ps"] > options["time_ps"]:
            raise InputError(
                f"{done}: the run is already {summary['run_length_ps']:g} ps long; "
                f"a shorter one ({options['time_ps']:g} ps) needs another output directory"
            )
    record = out_dir / "settings.json"
    if record.is_file():
        previous = read_json_record(record, "run record")
        check_same_options(record, previous, options, {"time_ps"}, RECORDED_LATER)
    return earlier


def run_stability(
    model: Potential | ForceTerm,
    system: System,
    starts: list[Atoms],
    settings: StabilitySettings,
    out_dir: Path,
    model_id: str | None = None,
    progress: bool = True,
    label: str = "MD",
    reference_rdf: Mapping | None = None,
) -> ModelStability:
    """Simulate one model (a potential, or any force term, e.g. a reference method through
    :class:`~stablemd.md.forces.CalculatorForces`); resumes from ``out_dir/checkpoint.pt``.

    ``reference_rdf`` {(Z_a, Z_b): g [n_bins]} on bins of ``DR_A`` from 0 (as
    :func:`~stablemd.analysis.structure.reference_observables` gives for periodic frames) is
    the reference of the RDF criterion, needed with ``settings.max_rdf_deviation``.

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
    early_warning = None
    if isinstance(model, Potential):
        early_warning = model_early_warning(model, settings)
        outputs = ("features",) if early_warning is not None else ()
        term = settings.force_term(model, outputs=outputs)
    elif settings.forces is not None or settings.mts is not None:
        raise InputError(f"forces, mts: choose the forces of a model, not of {model_id}")
    elif settings.early_warning or settings.freeze_on_warning:
        raise InputError(f"early_warning: {model_id} is not a model with a latent domain")
    else:
        term = model
    check_rdf_criterion(system, settings, reference_rdf)
    options = stability_run_options(
        model_id, system, starts, settings, reference_rdf, early_warning
    )
    earlier = check_stability_run(options, out_dir)
    record_run_options(
        options, out_dir / "settings.json", may_change={"time_ps"},
        defaults=RECORDED_LATER,
    )  # fmt: skip
    if earlier is not None and earlier["summary"]["run_length_ps"] == settings.time_ps:
        summary = {
            **earlier["summary"],
            "stable_times_ps": tuple(earlier["summary"]["stable_times_ps"]),
        }
        return ModelStability(StabilitySummary(**summary), **earlier["run"])
    state = initial_state(starts, settings.replicas, settings.temperature_K, settings.seed)
    monitors = stability_monitors(system, settings, reference_rdf, early_warning)
    n_steps = round(settings.time_ps * 1000 / settings.step_fs)
    result = run(
        state, settings.integrator(), term, n_steps, monitors, checkpoint=out_dir / "checkpoint.pt",
        checkpoint_every=max(settings.check_every, 2000), progress=progress, label=label,
    )  # fmt: skip
    stable_ps = (result.unstable_time_fs / 1000).tolist()
    histogram = next(m for m in monitors if isinstance(m, StablePartHistogram))
    displacement = next((m for m in monitors if isinstance(m, StableDisplacement)), None)
    pooled = histogram.pooled()
    record = None
    if early_warning is not None:
        record = run_early_warning_record(
            early_warning, settings, monitors,
            summarize(stable_ps, settings.time_ps).stable_times_ps, result.unstable_reason,
            settings.time_ps,
        )  # fmt: skip
    outcome = ModelStability(
        summary=summarize(stable_ps, settings.time_ps),
        h_r=None if pooled is None else pooled.tolist(),
        steps_per_s=result.steps / max(result.wall_time_s, 1e-9),
        wall_time_s=result.wall_time_s + (earlier["run"]["wall_time_s"] if earlier else 0.0),
        diffusivity_cm2_per_s=None if displacement is None else displacement.diffusivity(),
        failure_reasons=result.unstable_reason,
        early_warning=record,
    )
    run_fields = {k: v for k, v in asdict(outcome).items() if k != "summary"}
    write_json({"summary": asdict(outcome.summary), "run": run_fields}, out_dir / "result.json")
    return outcome
