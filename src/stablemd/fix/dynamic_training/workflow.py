"""From a database of reference trajectories to a model trained on its own rollouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ase import Atoms

from stablemd.data.database import read_frames
from stablemd.data.trajectories import consecutive_runs, read_trajectories
from stablemd.fix.dynamic_training.config import DynamicTrainConfig
from stablemd.fix.dynamic_training.trainer import DynamicTrainer
from stablemd.models.potential import Potential
from stablemd.training.workflow import TrainedModel, train_from_database


def train_dynamic_from_database(
    data_path: Path,
    n_train: int,
    n_val: int,
    config: DynamicTrainConfig,
    out: Path,
    run_dir: Path | None = None,
    split_by: str = "trajectory",
    progress: bool = True,
    init: Path | None = None,
    fit_attachments: Callable[[Potential, list[Atoms], list[Atoms]], object] | None = None,
) -> TrainedModel:
    """:func:`~stablemd.training.workflow.train_from_database` in the dynamic mode: windows of
    consecutive training frames are rolled out by the model, validation rolls out from the
    validation frames. Every frame must be a trajectory frame (velocities, step, time step),
    checked before any training; ``split_by="trajectory"`` keeps trajectories whole;
    ``fit_attachments`` as there."""
    trajectories = read_trajectories(read_frames(data_path), str(data_path))

    def make_trainer(frames, split, config, train, validation, run_dir, **kwargs):
        train_runs = _runs(trajectories, split.train)
        val_runs = _runs(trajectories, split.val)
        return DynamicTrainer(config, train_runs, val_runs, train, validation, run_dir, **kwargs)

    return train_from_database(
        data_path, n_train, n_val, config, out, run_dir=run_dir, split_by=split_by,
        progress=progress, init=init, fit_attachments=fit_attachments, make_trainer=make_trainer,
    )  # fmt: skip


def _runs(trajectories, indices):
    keep = {int(i) for i in indices}
    return [run for trajectory in trajectories for run in consecutive_runs(trajectory, keep)]
