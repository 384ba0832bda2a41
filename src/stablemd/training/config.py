"""Options of energy-and-force training (YAML keys are the field names)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Which forces a run trains (see :attr:`TrainConfig.forces`).
ForcesKind = Literal["conservative", "direct", "both"]


class TrainConfig(BaseModel):
    """Everything ``stablemd train`` can be told; defaults suit small molecules on a CPU.

    ``forces`` names the forces the model is trained to give:

    - ``conservative``: −∂E/∂r of the energy head, by autograd (weight ``forces_weight``); with
      ``direct_forces_weight`` > 0 the direct-force head is trained beside it and the model
      counts as trained with both heads (conservative fine-tuning of a direct model keeps a
      small direct term: pass ``direct_forces_weight`` 1 = 0.01 × the default
      ``forces_weight``; the default 0 leaves the head untrained);
    - ``direct``: the direct-force head alone (weight ``direct_forces_weight``, by default
      ``forces_weight``), the energy head on energies only: no derivative with respect to
      positions, so a step is cheaper; the model gives non-conservative forces;
    - ``both``: −∂E/∂r and the direct head (default weight ``forces_weight`` each).

    Validation and early stopping score the forces the model gives in MD: the direct head's
    for ``direct``, −∂E/∂r otherwise. Only models with a direct-force head (PaiNN) train it.
    """

    model_config = ConfigDict(extra="forbid")

    model: Literal["painn", "mace"] = "painn"
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="hyperparameters of the model (cutoff in Å, widths...)"
    )
    dtype: Literal["float32", "float64"] = "float32"
    forces: ForcesKind = Field(
        "conservative", description="forces trained: conservative (−∂E/∂r), direct or both"
    )
    energy_weight: float = Field(1.0, ge=0, description="weight of (ΔE per atom)², eV⁻²")
    forces_weight: float = Field(
        100.0, ge=0, description="weight of ΔF² of −∂E/∂r (conservative, both), (eV/Å)⁻²"
    )
    direct_forces_weight: float | None = Field(
        None,
        ge=0,
        description="weight of ΔF² of the direct-force head, (eV/Å)⁻²; default forces_weight "
        "for direct and both, 0 (head not trained) for conservative",
    )
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    lr_factor: float = Field(0.5, gt=0, lt=1, description="plateau schedule: lr × factor")
    lr_patience: int = Field(5, ge=0, description="epochs without improvement before lr drops")
    min_learning_rate: float = Field(1e-5, gt=0, description="training stops below this lr")
    ema_decay: float = Field(0.99, ge=0, lt=1, description="exponential moving average of weights")
    gradient_clip: float = Field(10.0, gt=0, description="max gradient norm")
    max_epochs: int = Field(300, ge=1)
    early_stopping_patience: int = Field(30, ge=1, description="epochs without improvement")
    max_time_minutes: float | None = Field(None, gt=0, description="training wall-time budget")
    checkpoint_every_seconds: float = Field(30.0, gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _direct_head_is_trainable(self) -> TrainConfig:
        if self.forces != "conservative" and self.direct_forces_weight == 0:
            raise ValueError(
                f"--forces {self.forces} trains the direct-force head, but "
                "--direct-forces-weight is 0"
            )
        if self.trains_direct_head:
            check_direct_head(self.model, self)
        return self

    @property
    def direct_weight(self) -> float:
        """Weight of the direct head's force term, (eV/Å)⁻² (0: the head is not trained)."""
        if self.direct_forces_weight is not None:
            return self.direct_forces_weight
        return 0.0 if self.forces == "conservative" else self.forces_weight

    @property
    def conservative_weight(self) -> float:
        """Weight of the −∂E/∂r force term, (eV/Å)⁻² (0 for ``direct``: no autograd)."""
        return 0.0 if self.forces == "direct" else self.forces_weight

    @property
    def trains_direct_head(self) -> bool:
        return self.direct_weight > 0

    @property
    def md_forces(self) -> Literal["conservative", "direct"]:
        """The forces the trained model gives in MD, which validation scores."""
        return "direct" if self.forces == "direct" else "conservative"

    @property
    def scored_forces(self) -> ForcesKind:
        """The forces whose errors are reported: −∂E/∂r, plus the direct head when trained."""
        return "both" if self.trains_direct_head else "conservative"


def direct_head_refusal(kind: str, config: TrainConfig) -> str:
    """Why ``config`` cannot train a ``kind`` model that has no direct-force head."""
    if config.forces != "conservative":
        asked = f"--forces {config.forces}"
    else:
        asked = f"--direct-forces-weight {config.direct_weight:g}"
    return (
        f"{asked} trains a direct-force head, which {kind} models do not have "
        "(painn has one); train it with --forces conservative and no direct-forces weight"
    )


def check_direct_head(kind: str, config: TrainConfig) -> None:
    """Raise ``ValueError`` if ``config`` trains a direct head that ``kind`` lacks."""
    from stablemd.models.registry import _potential_class

    if not _potential_class(kind).supports_direct_forces:
        raise ValueError(direct_head_refusal(kind, config))
