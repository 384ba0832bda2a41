"""The main job on a small built-in default: the library behind ``stablemd quickstart``.

Reference data for ethanol with GFN2-xTB → the built-in PaiNN model trained on a few of the
frames → its errors on held-out frames → its stability in MD → StABlE fine-tuning without new
labels → the stability and errors of the fine-tuned model beside the baseline → the diagnosis
report of each model (``stablemd diagnose``'s page, reading the stability runs back). The
baseline is trained on few frames on purpose: the low-data regime where it fails within the
run and StABlE can help. Every stage resumes: calling again after an interruption continues.
Budgets are counted in epochs, not minutes, so that one seed gives the same models on a fast
machine and a slow one (with the same thread count).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stablemd.core.files import write_json
from stablemd.data.database import read_frames, write_frames
from stablemd.data.generate import generate_reference_data
from stablemd.diagnose.early_warning.model_file import fit_and_attach
from stablemd.diagnose.held_out import held_out_errors
from stablemd.diagnose.report.workflow import DiagnoseSettings, run_diagnosis
from stablemd.diagnose.stability.benchmark import StabilitySettings
from stablemd.diagnose.stability.compare import compare_models
from stablemd.fix.stable_training.config import StableConfig
from stablemd.fix.stable_training.workflow import stable_train
from stablemd.models.registry import load_potential
from stablemd.systems import get_system
from stablemd.training.config import TrainConfig
from stablemd.training.workflow import train_from_database

#: MD steps between kept frames of the reference data.
FRAME_EVERY = 5
#: The quickstart's small PaiNN: fast enough for minutes on two cores.
QUICK_MODEL = {"n_features": 32, "n_interactions": 3, "cutoff": 5.0}
STAGES = (
    "reference data: ethanol, GFN2-xTB MD",
    "training the baseline",
    "errors on held-out frames",
    "stability of the baseline",
    "StABlE fine-tuning, no new labels",
    "the StABlE model: stability and errors",
    "diagnosis reports of both models",
)
#: Wall time of each stage on two quiet cores (s), as measured in docs/benchmarks.md
#: ("The current default, quiet": the command's stage lines, to 0.1 min); only a guide for the
#: time left that the command shows.
DEFAULT_STAGE_SECONDS = (12.0, 36.0, 3.0, 60.0, 366.0, 60.0, 30.0)
#: The conservation checks of the quickstart's reports: shorter than ``stablemd diagnose``'s
#: default (8 replicas × 2 ps), which would double the quickstart's time.
REPORT_CONSERVATION = {"conservation_replicas": 8, "conservation_time_ps": 0.5}


class QuickstartSettings(BaseModel):
    """The quickstart's choices; defaults are the documented demonstration: 20 consecutive
    training frames of one trajectory (so that baselines fail within the run), the reference
    MD's h(r) as StABlE's target, λ = 2, the setting that worked on aspirin, and a 5-epoch
    warm-up of StABlE's rate in each learning phase (docs/benchmarks.md, "Quickstart", has the
    five-seed tables that chose them)."""

    model_config = ConfigDict(extra="forbid")

    temperature_K: float = Field(500.0, gt=0, description="reference MD and test temperature")
    steps: int = Field(1500, ge=10, description="MD steps of 0.5 fs per reference trajectory")
    trajectories: int = Field(2, ge=1, description="independent reference trajectories")
    n_train: int = Field(20, ge=2, description="training frames of the baseline")
    split_by: Literal["random", "trajectory"] = Field(
        "trajectory",
        description="the first n_train frames of one trajectory, or frames drawn at random from "
        "all; with 'trajectory' the h(r) reference of StABlE and of the stability runs is every "
        "frame of the reference MD (positions only), with 'random' the training frames",
    )
    train_epochs: int = Field(300, ge=1)
    replicas: int = Field(64, ge=2, description="replicas of each stability run")
    stability_ps: float = Field(2.0, gt=0, description="simulated time of each stability run")
    stable_epochs: int = Field(100, ge=1, description="StABlE epochs (simulation and learning)")
    stable_replicas: int = Field(16, ge=2, description="replicas of StABlE's simulations")
    stable_steps_per_epoch: int = Field(
        400, ge=40, description="MD steps of 0.5 fs per StABlE epoch (a multiple of 20)"
    )
    qm_weight: float = Field(2.0, ge=0, description="λ of StABlE's L_obs + λ·L_QM")
    stable_learning_rate: float = Field(3e-4, gt=0, description="Adam's rate in StABlE")
    stable_lr_warmup_epochs: int = Field(
        5, ge=0, description="learning epochs over which each StABlE phase's rate rises"
    )
    f_max: float = Field(0.25, gt=0, le=1, description="unstable fraction that starts learning")
    f_min: float = Field(0.1, ge=0, lt=1, description="unstable fraction that ends learning")
    seed: int = 0

    @property
    def h_r_from_reference_md(self) -> bool:
        """Whether the h(r) reference is every reference frame (else the training frames)."""
        return self.split_by == "trajectory"

    @model_validator(mode="after")
    def _split_fits_the_data(self) -> QuickstartSettings:
        """Refuse, before any work, a trajectory split the reference data cannot give."""
        if self.split_by != "trajectory":
            return self
        if self.trajectories < 2:
            raise ValueError(
                "--split-by trajectory validates on another trajectory: it needs --trajectories "
                "2 or more (or --split-by random)"
            )
        frames = self.steps // FRAME_EVERY
        if self.n_train > frames:
            raise ValueError(
                f"--n-train {self.n_train} is more than the {frames} frames of one trajectory "
                f"(--steps {self.steps}, a frame every {FRAME_EVERY}) that --split-by trajectory "
                "trains on"
            )
        return self


def expected_stage_seconds(settings: QuickstartSettings) -> list[float]:
    """Wall time of each stage (s) expected on two quiet cores: the measured times of the
    default (:data:`DEFAULT_STAGE_SECONDS`) scaled by the work each stage does under
    ``settings`` (MD steps, epochs, replica-picoseconds); a guide for the progress line."""
    d, s = QuickstartSettings(), settings

    def stability(x: QuickstartSettings) -> float:
        return x.replicas * x.stability_ps

    def stable(x: QuickstartSettings) -> float:
        return x.stable_epochs * x.stable_replicas * x.stable_steps_per_epoch

    work = (
        s.steps * s.trajectories / (d.steps * d.trajectories),
        s.train_epochs / d.train_epochs,
        1.0,
        stability(s) / stability(d),
        stable(s) / stable(d),
        stability(s) / stability(d),
        1.0,
    )
    return [seconds * k for seconds, k in zip(DEFAULT_STAGE_SECONDS, work, strict=True)]


@dataclass
class QuickstartResult:
    """Paths, errors and stability of both models (``n_reference``: frames of the h(r)
    reference), and the wall time of each stage (s)."""

    data: Path
    models: dict[str, Path]
    n_train: int
    n_reference: int
    n_held_out: int
    errors: dict[str, dict]
    stability: dict[str, dict]
    stability_dir: Path
    stable_run_dir: Path
    reports: dict[str, Path]
    stage_seconds: dict[str, float] = field(default_factory=dict)


def run_quickstart(
    out: Path,
    settings: QuickstartSettings,
    on_stage: Callable[[int, str], None] | None = None,
    progress: bool = True,
) -> QuickstartResult:
    """Run the stages (:data:`STAGES`) into ``out``; ``on_stage(k, title)`` is told when stage
    k begins."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]

    def stage(k: int) -> None:
        if k > 1:
            seconds[STAGES[k - 2]] = round(time.perf_counter() - clock[0], 1)
        clock[0] = time.perf_counter()
        if on_stage is not None and k <= len(STAGES):
            on_stage(k, STAGES[k - 1])

    s = settings
    stage(1)
    data_path = out / "ethanol-xtb.db"
    generate_reference_data(
        "ethanol", "xtb", s.temperature_K, s.steps, FRAME_EVERY, data_path,
        n_trajectories=s.trajectories, seed=s.seed, progress=progress,
    )  # fmt: skip
    frames = read_frames(data_path)
    n_val = max(len(frames) // 6, 1)
    n_train = min(s.n_train, len(frames) - 2 * n_val)

    stage(2)
    config = TrainConfig(model_options=QUICK_MODEL, max_epochs=s.train_epochs, seed=s.seed)
    baseline = train_from_database(
        data_path, n_train, n_val, config, out / "model.pt", split_by=s.split_by,
        progress=progress, fit_attachments=fit_and_attach,
    )  # fmt: skip
    train_frames = [frames[i] for i in baseline.metadata["training"]["train_indices"]]
    reference = frames if s.h_r_from_reference_md else train_frames

    stage(3)
    tested = held_out_errors(baseline.potential, data_path)
    held_out = tested.indices
    errors = {"baseline": tested.metrics}
    write_json(errors["baseline"], out / "test_metrics.json")

    stage(4)
    system = get_system("ethanol")
    starts = [frames[i] for i in held_out]
    starts_path = out / "starts.db"  # for the reports, and for a user's own stability runs
    write_frames(starts_path, starts, overwrite=True)
    stability = StabilitySettings(
        replicas=s.replicas, temperature_K=s.temperature_K, time_ps=s.stability_ps, seed=s.seed
    )
    potentials = {"baseline": baseline.potential}
    compare_models(potentials, system, starts, reference, stability, out / "stability", progress)

    stage(5)
    stable_config = StableConfig(
        temperature_K=s.temperature_K, max_epochs=s.stable_epochs, f_max=s.f_max, f_min=s.f_min,
        qm_weight=s.qm_weight, learning_rate=s.stable_learning_rate,
        lr_warmup_epochs=s.stable_lr_warmup_epochs, replicas=s.stable_replicas,
        steps_per_epoch=s.stable_steps_per_epoch, seed=s.seed,
    )  # fmt: skip
    stable_path = out / "model-stable.pt"
    run_dir = out / "model-stable_run"
    stable_train(
        baseline.path, data_path, stable_path, stable_config, system_name="ethanol",
        reference_file=data_path if s.h_r_from_reference_md else None, run_dir=run_dir,
        progress=progress,
    )  # fmt: skip

    stage(6)
    potentials["stable"] = load_potential(stable_path)
    rows = compare_models(
        potentials, system, starts, reference, stability, out / "stability", progress
    )
    errors["stable"] = held_out_errors(potentials["stable"], data_path).metrics
    write_json(errors["stable"], out / "test_metrics_stable.json")

    stage(7)
    models = {"baseline": baseline.path, "stable": stable_path}
    diagnosis = DiagnoseSettings(**stability.model_dump(), **REPORT_CONSERVATION)
    reports = {}
    for label, model in models.items():
        result = run_diagnosis(
            model, system, out / f"report-{label}", diagnosis, data_path, starts_path,
            overwrite=True, progress=progress, stability_dir=out / "stability" / label,
        )  # fmt: skip
        reports[label] = result.paths.html
    stage(len(STAGES) + 1)
    return QuickstartResult(
        data=data_path,
        models=models,
        n_train=n_train,
        n_reference=len(reference),
        n_held_out=len(held_out),
        errors=errors,
        stability=rows,
        stability_dir=out / "stability",
        stable_run_dir=run_dir,
        reports=reports,
        stage_seconds=seconds,
    )
