"""From a database of labelled frames to a saved model: split, train, evaluate, save."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from stablemd.data.database import read_frames
from stablemd.data.splits import split_indices
from stablemd.evaluation import error_metrics
from stablemd.models.potential import Potential
from stablemd.models.registry import save_potential
from stablemd.training.config import TrainConfig
from stablemd.training.frames import FrameSet
from stablemd.training.trainer import Trainer


@dataclass
class TrainedModel:
    potential: Potential
    path: Path
    metadata: dict


def default_run_dir(model_path: Path) -> Path:
    """Where the checkpoint and metrics of the model at ``model_path`` live."""
    return model_path.with_name(model_path.stem + "_run")


def train_from_database(
    data_path: Path,
    n_train: int,
    n_val: int,
    config: TrainConfig,
    out: Path,
    run_dir: Path | None = None,
    split_by: str = "random",
    progress: bool = True,
) -> TrainedModel:
    """Train on ``n_train`` frames of ``data_path``, validate on ``n_val`` others, save to ``out``.

    The model file records which frames were used, so that evaluation can hold them out.
    """
    frames = read_frames(data_path)
    trajectories = [a.info.get("trajectory", 0) for a in frames]
    split = split_indices(
        len(frames), n_train, n_val, seed=config.seed, by=split_by, trajectories=trajectories
    )
    dtype = getattr(torch, config.dtype)
    train = FrameSet([frames[i] for i in split.train], dtype)
    validation = FrameSet([frames[i] for i in split.val], dtype)
    run_dir = run_dir or default_run_dir(out)
    result = Trainer(config, train, validation, run_dir, progress=progress).run()
    metadata = {
        "training": {
            "data": str(Path(data_path).resolve()),
            "train_indices": [int(i) for i in split.train],
            "val_indices": [int(i) for i in split.val],
            "config": config.model_dump(),
            "epochs": len(result.history),
            "best_epoch": result.best_validation["epoch"],
            "train_time_s": round(result.elapsed_s, 1),
        },
        "validation": result.best_validation["metrics"],
        "train_set_errors": error_metrics(result.potential, train, batch_size=64),
    }
    save_potential(result.potential, out, metadata)
    return TrainedModel(result.potential, Path(out), metadata)


def held_out_indices(model_metadata: dict, data: Path, n_frames: int) -> list[int]:
    """Frames of ``data`` not used to train or validate the model (all when it is another file)."""
    training = model_metadata.get("training", {})
    if training.get("data") != str(data.resolve()):
        return list(range(n_frames))
    used = set(training["train_indices"]) | set(training["val_indices"])
    return [i for i in range(n_frames) if i not in used]
