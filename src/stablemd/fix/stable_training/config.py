"""Options of StABlE training (YAML keys are the field names).

Defaults follow the paper's aspirin setting (Table 2, METHODS §1) scaled to a 2-core CPU:
16 replicas instead of 128 and 400-step epochs (0.2 ps) instead of 2000, so an epoch takes
seconds; f_max = 0.75 is the authors' code's learning trigger, f_min = 0.25 our choice. The
optimiser differs from the paper's (SGD, lr 1e-3, clip 1.0): on xTB aspirin that made no
progress in our budget (gradient norms 20–60, so every step was clipped to 1e-3), and SGD
clipped at 10 oscillated; Adam at 3e-4 clipped at 10 with one estimate over all samples is
the setting we measured to work (docs/stable.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stablemd.diagnose.early_warning.grade_criterion import MAX_GRADE
from stablemd.md.settings import MDSettings


class StableConfig(MDSettings):
    """StABlE's options on top of the MD settings every batched run shares."""

    estimator: Literal["global", "local"] = "global"
    observable: str | None = Field(
        None, description="h_r, bond_lengths, rdf, molecule_bond_length or module:function; "
        "default h_r (global) or molecule_bond_length (local)",
    )  # fmt: skip
    observable_r_max_A: float = Field(10.0, gt=0, description="range of h_r / rdf bins")
    observable_dr_A: float = Field(0.02, gt=0, description="bin width of h_r / rdf")
    observable_sigma_A: float = Field(
        0.01, ge=0, description="Gaussian smearing of h_r / rdf; wider is less noisy"
    )
    reference_temperature_K: float | None = Field(
        None, gt=0, description="temperature of the reference frames, to reweight them"
    )
    criterion: Literal["bond_length_deviation", "min_nonbonded_distance"] | None = Field(
        None, description="default: bonds for molecules, contacts for periodic systems"
    )
    max_bond_deviation_A: float = Field(0.25, gt=0)
    min_intermolecular_A: float = Field(1.2, gt=0)
    nonbonded_intramolecular: bool = Field(
        True, description="contacts also between non-bonded atoms of one molecule (A.5)"
    )
    latent_grade_criterion: bool = Field(
        False,
        description="also unstable when an atom's extrapolation grade in the model's latent "
        "space, refitted for the current weights, exceeds max_grade (docs/early_warning.md)",
    )
    max_grade: float = Field(
        MAX_GRADE, gt=1, description="largest atomic grade γ the latent grade criterion allows"
    )
    replicas: int = Field(16, ge=2, description="R: replicas started from training frames")
    steps_per_epoch: int = Field(400, ge=1, description="t: MD steps per epoch")
    sample_every: int = Field(20, ge=1, description="S: steps between samples (learning)")
    f_max: float = Field(0.75, gt=0, le=1, description="unstable fraction that starts learning")
    f_min: float = Field(0.25, ge=0, lt=1, description="unstable fraction that ends learning")
    optimizer: Literal["sgd", "adam"] = "adam"
    learning_rate: float = Field(3e-4, gt=0)
    gradient_clip: float = Field(10.0, gt=0, description="max norm of the total gradient")
    lr_warmup_epochs: int = Field(
        0, ge=0, description="learning epochs over which each phase's rate rises linearly to "
        "learning_rate (a fresh Adam's first step moves every weight by the full rate); a phase "
        "that ends sooner never reaches it",
    )  # fmt: skip
    lr_factor: float = Field(
        0.2, gt=0, lt=1, description="plateau schedule on the learning runs' unstable fraction"
    )
    lr_patience: int = Field(10, ge=0)
    max_lr_cuts: int = Field(
        2, ge=0, description="a learning phase ends when the schedule cuts the rate once more"
    )
    qm_weight: float = Field(10.0, ge=0, description="λ in L_obs + λ·L_QM")
    obs_weight: float = Field(
        1.0, ge=0, description="weight of L_obs; 0 is the energy-and-force-only control"
    )
    qm_batch_size: int = Field(32, ge=1)
    energy_weight: float = Field(1.0, ge=0, description="L_QM weight of (ΔE per atom)², eV⁻²")
    forces_weight: float = Field(100.0, ge=0, description="L_QM weight of ΔF², (eV/Å)⁻²")
    estimate_per: Literal["replica", "all"] = Field(
        "all", description="global: one estimate of E[g] over all samples, or one per replica"
    )
    local_bins: int = Field(100, ge=1, description="local: bins of |g − g_ref| to stratify")
    local_per_bin: int = Field(5, ge=1, description="local: samples kept per bin")
    frames_per_pass: int = Field(64, ge=1, description="frames per backward pass (memory)")
    max_cycles: int = Field(4, ge=1, description="simulation + learning cycles")
    max_epochs: int = Field(400, ge=1)
    max_learning_epochs: int = Field(60, ge=1, description="per learning phase")
    max_time_minutes: float | None = Field(None, gt=0, description="wall-time budget")
    checkpoint_every_epochs: int = Field(1, ge=1)
    checkpoint_every_seconds: float = Field(
        120.0, gt=0, description="wall time after which an epoch, or its MD, checkpoints"
    )

    @model_validator(mode="after")
    def _conservative_forces(self) -> StableConfig:
        # The loop trains the energy through its Boltzmann gradient and runs −∂E/∂r (ModelForces):
        # direct forces or multiple time stepping would simulate other dynamics than it learns.
        if self.forces == "direct" or self.mts is not None:
            raise ValueError(
                "StABlE simulates and trains conservative forces only: remove forces: direct "
                "and mts from the config"
            )
        return self

    @model_validator(mode="after")
    def _constant_volume(self) -> StableConfig:
        # The estimator differentiates the canonical (NVT) average; at constant pressure the
        # Boltzmann weights would need the P·V term and the cell's fluctuations.
        if self.pressure_bar is not None:
            raise ValueError(
                "StABlE simulates at constant volume (its estimator is the NVT average): "
                "remove pressure_bar from the config"
            )
        return self

    @model_validator(mode="after")
    def _thresholds(self) -> StableConfig:
        if self.f_min >= self.f_max:
            raise ValueError(f"f_min ({self.f_min}) must be below f_max ({self.f_max})")
        if self.steps_per_epoch % self.sample_every or self.steps_per_epoch % self.check_every:
            raise ValueError("steps_per_epoch must be a multiple of sample_every and check_every")
        if self.steps_per_epoch < 2 * self.sample_every:
            raise ValueError(
                "steps_per_epoch must be at least 2 × sample_every: the learning runs need two "
                "samples per replica, and the anchor they start from is not one"
            )
        return self

    @model_validator(mode="after")
    def _grade_needs_its_criterion(self) -> StableConfig:
        if self.max_grade != MAX_GRADE and not self.latent_grade_criterion:
            raise ValueError(
                f"max_grade {self.max_grade:g} is the threshold of the latent grade criterion, "
                "which is off: add latent_grade_criterion: true (--latent-grade-criterion)"
            )
        return self

    @property
    def observable_name(self) -> str:
        if self.observable is not None:
            return self.observable
        return "h_r" if self.estimator == "global" else "molecule_bond_length"
