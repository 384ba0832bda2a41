"""Held-out errors: a model's energy and force errors on the frames of a file it was neither
trained nor validated on (recognised by content, :mod:`stablemd.training.workflow`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stablemd.core.errors import InputError
from stablemd.data.database import read_frames
from stablemd.data.frames import FrameSet
from stablemd.models.potential import Potential
from stablemd.models.registry import check_elements
from stablemd.training.metrics import error_metrics
from stablemd.training.workflow import TrainingFrames, locate_training_frames


@dataclass
class HeldOutErrors:
    """The metrics (see :func:`~stablemd.training.metrics.error_metrics`), the frames they
    count (indices into the file) and where the training frames were found (None: all counted)."""

    metrics: dict
    indices: list[int]
    located: TrainingFrames | None


def held_out_errors(
    potential: Potential,
    data: Path,
    include_training: bool = False,
    batch_size: int = 32,
    model_name: str = "the model",
) -> HeldOutErrors:
    """Errors of ``potential`` on the frames of ``data`` it did not see in training (all frames
    with ``include_training``); a file whose every frame was seen is refused."""
    frames = read_frames(data)
    check_elements(potential, frames, model_name, str(data))
    located, indices = None, list(range(len(frames)))
    if not include_training:
        located = locate_training_frames(potential.metadata, data, frames)
        indices = located.held_out
    if not indices:
        raise InputError(f"{data}: every frame was used in training; pass --include-training")
    dtype = next(potential.parameters()).dtype
    metrics = error_metrics(potential, FrameSet([frames[i] for i in indices], dtype), batch_size)
    return HeldOutErrors(metrics, indices, located)
