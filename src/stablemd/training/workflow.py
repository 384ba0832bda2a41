"""From a database of labelled frames to a saved model: split, train, evaluate, save."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from stablemd.data.database import read_frames
from stablemd.data.fingerprints import labelled_frames_fingerprint
from stablemd.data.frames import FrameSet
from stablemd.data.splits import split_indices
from stablemd.models.potential import Potential
from stablemd.models.registry import save_potential
from stablemd.training.config import TrainConfig
from stablemd.training.metrics import error_metrics
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
    Rerunning into the same ``run_dir`` continues (or reports) that run only for the same data
    (by content: a copy elsewhere is the same data), split and options; others are refused.
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
    inputs = {
        "data_fingerprint": labelled_frames_fingerprint(frames),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "split_by": split_by,
    }
    result = Trainer(config, train, validation, run_dir, progress=progress, inputs=inputs).run()
    metadata = {
        "training": {
            "data": str(Path(data_path).resolve()),
            "train_fingerprint": frames_fingerprint(frames, split.train),
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


def frames_fingerprint(frames: Sequence[Atoms], indices: Sequence[int]) -> str:
    """SHA-256 of the atomic numbers and positions of ``frames[indices]``."""
    digest = hashlib.sha256()
    for i in indices:
        digest.update(np.asarray(frames[i].numbers, dtype=np.int64).tobytes())
        digest.update(np.asarray(frames[i].positions, dtype=np.float64).tobytes())
    return digest.hexdigest()


def is_training_file(model_metadata: dict, data: Path, frames: Sequence[Atoms]) -> bool:
    """Whether ``data`` (read as ``frames``) is the file the model was trained on: its recorded
    path, or a moved or copied file whose frames at the training indices are the same."""
    training = model_metadata.get("training", {})
    if training.get("data") == str(Path(data).resolve()):
        return True
    indices, fingerprint = training.get("train_indices", []), training.get("train_fingerprint")
    if fingerprint is None or not indices or max(indices) >= len(frames):
        return False
    return frames_fingerprint(frames, indices) == fingerprint


def held_out_indices(model_metadata: dict, data: Path, frames: Sequence[Atoms]) -> list[int]:
    """Frames of ``data`` not used to train or validate the model (all when it is another file)."""
    if not is_training_file(model_metadata, data, frames):
        return list(range(len(frames)))
    training = model_metadata["training"]
    used = set(training["train_indices"]) | set(training["val_indices"])
    return [i for i in range(len(frames)) if i not in used]
