"""Options of dynamic training: those of ``stablemd train`` plus the window and its curriculum.

Defaults are the authors' (``/shared/METHODS.md`` §4): Adam at 1e-3 on a plateau schedule
(factor 0.33, patience 15, floor 2e-6); when the rate reaches its floor the window grows by one
frame and the rate restarts at 1e-4; the frame-0 term weighs 50×; validation rolls out 120
steps; positions are detached between steps (no backpropagation through time).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stablemd.training.config import TrainConfig


class DynamicTrainConfig(TrainConfig):
    """Everything ``stablemd train --dynamic`` can be told (YAML keys are the field names).

    ``energy_weight`` weighs the mean absolute energy error per atom (eV⁻¹) of the S = 1
    loss; ``forces_weight`` is not used (the force terms weigh 1, frame 0 ``frame0_weight``).
    """

    window_start: int = Field(1, ge=1, description="frames per window at the start (S)")
    window_max: int = Field(4, ge=1, description="largest window S, frames per rollout")
    frame0_weight: float = Field(50.0, gt=0, description="weight of frame 0's force term")
    backprop: Literal["detached", "through-time"] = Field(
        "detached",
        description="detached: the state is cut from the graph between steps (the authors' "
        "choice); through-time: gradients follow the whole rollout",
    )
    validation_rollout_steps: int = Field(
        120, ge=1, description="steps of each validation rollout (frames after frame 0)"
    )
    restart_learning_rate: float = Field(1e-4, gt=0, description="rate when S grows")
    lr_factor: float = Field(0.33, gt=0, lt=1, description="plateau schedule: lr × factor")
    lr_patience: int = Field(15, ge=0, description="epochs without improvement before lr drops")
    min_learning_rate: float = Field(
        2e-6, gt=0, description="floor of the rate; reaching it grows the window (or ends)"
    )
    early_stopping_patience: int = Field(
        10_000, ge=1, description="epochs without a better rollout error (the curriculum ends runs)"
    )

    @model_validator(mode="after")
    def _windows_in_order(self) -> DynamicTrainConfig:
        if self.window_start > self.window_max:
            raise ValueError(
                f"window_start {self.window_start} is larger than window_max {self.window_max}"
            )
        if self.forces != "conservative" or self.direct_weight > 0:
            raise ValueError("dynamic training trains conservative forces (--forces conservative)")
        if self.restart_learning_rate < self.min_learning_rate:
            raise ValueError("restart_learning_rate is below min_learning_rate")
        return self
