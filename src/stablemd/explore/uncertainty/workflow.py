"""From a model file and its training data to a model file that carries an uncertainty."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stablemd.core.errors import InputError
from stablemd.data.database import read_frames
from stablemd.data.frames import FrameSet
from stablemd.explore.uncertainty.estimator import Uncertainty, attach_uncertainty
from stablemd.explore.uncertainty.fit import fit_uncertainty
from stablemd.models.registry import check_elements, load_potential, save_potential
from stablemd.training.workflow import TrainingFrames, locate_training_frames


@dataclass
class FittedUncertainty:
    uncertainty: Uncertainty
    located: TrainingFrames


def fit_model_uncertainty(model: Path, data: Path, out: Path, **options) -> FittedUncertainty:
    """Fit the uncertainty of the model at ``model`` on its own training frames and calibrate
    it on its validation frames, both found by content in ``data``; write the model with the
    uncertainty attached to ``out``. The caller checks ``out`` (a new file, not an input).
    ``options``: those of :func:`~stablemd.explore.uncertainty.fit.fit_uncertainty`."""
    potential = load_potential(model)
    frames = read_frames(data)
    check_elements(potential, frames, str(model), str(data))
    located = locate_training_frames(potential.metadata, data, frames)
    if not located.train:
        raise InputError(f"{data}: holds none of the training frames of {model}")
    if not located.val:
        raise InputError(
            f"{data}: holds none of the validation frames of {model}, so the uncertainty "
            "cannot be calibrated"
        )
    dtype = next(potential.parameters()).dtype
    uncertainty = fit_uncertainty(
        potential,
        FrameSet([frames[i] for i in located.train], dtype),
        FrameSet([frames[i] for i in located.val], dtype),
        **options,
    )
    attach_uncertainty(potential, uncertainty)
    save_potential(potential, out, metadata=potential.metadata)
    return FittedUncertainty(uncertainty, located)
