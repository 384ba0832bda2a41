"""Options of energy-and-force training (YAML keys are the field names)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Everything ``stablemd train`` can be told; defaults suit small molecules on a CPU."""

    model_config = ConfigDict(extra="forbid")

    model: Literal["painn", "mace"] = "painn"
    model_options: dict[str, Any] = Field(
        default_factory=dict, description="hyperparameters of the model (cutoff in Å, widths...)"
    )
    dtype: Literal["float32", "float64"] = "float32"
    energy_weight: float = Field(1.0, ge=0, description="weight of (ΔE per atom)², eV⁻²")
    forces_weight: float = Field(100.0, ge=0, description="weight of ΔF², (eV/Å)⁻²")
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
