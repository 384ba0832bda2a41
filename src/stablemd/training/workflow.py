"""From a database of labelled frames to a saved model: split, train, evaluate, save."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from stablemd.core.errors import InputError
from stablemd.data.database import read_frames
from stablemd.data.fingerprints import (
    frame_fingerprint,
    frame_fingerprint_candidates,
    labelled_frames_fingerprint,
)
from stablemd.data.frames import FrameSet
from stablemd.data.splits import Split, split_indices
from stablemd.models.coverage import shortest_distances
from stablemd.models.potential import Potential
from stablemd.models.registry import (
    load_potential,
    model_fingerprint,
    save_potential,
    trained_forces,
)
from stablemd.systems.resolve import record_training_system
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


def starting_model(path: Path, config: TrainConfig, elements: Sequence[int]) -> Potential:
    """The saved model at ``path`` (``--init``), in ``config.dtype``, to continue training from:
    of ``config.model``'s kind, with ``config.model_options`` (when given) as hyperparameters,
    knowing every element of the training frames."""
    potential = load_potential(path, dtype=getattr(torch, config.dtype))
    if potential.kind != config.model:
        raise InputError(f"--init {path}: a {potential.kind} model, but --model {config.model}")
    own = potential.hyperparameters()
    for name, value in config.model_options.items():
        if own.get(name) != value:
            raise InputError(
                f"--init {path}: its {name} is {own.get(name)!r}, but model_options sets "
                f"{value!r} (a model's hyperparameters are its own when it is continued)"
            )
    missing = sorted(set(elements) - set(potential.elements))
    if missing:
        names = ", ".join(chemical_symbols[z] for z in missing)
        known = ", ".join(chemical_symbols[z] for z in potential.elements)
        raise InputError(
            f"--init {path}: the training frames hold {names}, which the model does not know "
            f"(it knows {known})"
        )
    return potential


def train_from_database(
    data_path: Path,
    n_train: int,
    n_val: int,
    config: TrainConfig,
    out: Path,
    run_dir: Path | None = None,
    split_by: str = "random",
    progress: bool = True,
    init: Path | None = None,
    fit_attachments: Callable[[Potential, list[Atoms], list[Atoms]], object] | None = None,
    make_trainer: Callable[..., Trainer] | None = None,
    split: Split | None = None,
) -> TrainedModel:
    """Train on ``n_train`` frames of ``data_path``, validate on ``n_val`` others, save to ``out``.

    The model file records which frames were used, so that evaluation can hold them out.
    Rerunning into the same ``run_dir`` continues (or reports) that run only for the same data
    (by content: a copy elsewhere is the same data), split and options; others are refused.
    ``init``: a saved model to start from (its weights and energy scaling, e.g. a ``direct``
    model fine-tuned with ``forces="conservative"``); its hyperparameters are recorded as the
    config's ``model_options`` when those are not given.
    ``fit_attachments(potential, training frames, all frames of the data)``: fits what is
    kept with the trained weights (:func:`~stablemd.models.registry.attach`, e.g. the latent
    domain of the early warning) before the model is saved.
    ``make_trainer``: builds the trainer of another training mode (dynamic training) from
    the frames, the split and the arguments of :class:`Trainer`; default :class:`Trainer`.
    ``split``: the frames to train and validate on, given (e.g. explore's validation frames,
    the same at every step), instead of ``n_train`` and ``n_val`` drawn by ``split_by``.
    """
    frames = read_frames(data_path)
    if split is None:
        trajectories = [a.info.get("trajectory", 0) for a in frames]
        split = split_indices(
            len(frames), n_train, n_val, seed=config.seed, by=split_by, trajectories=trajectories
        )
    else:
        n_train, n_val, split_by = len(split.train), len(split.val), "given"
    dtype = getattr(torch, config.dtype)
    train = FrameSet([frames[i] for i in split.train], dtype)
    validation = FrameSet([frames[i] for i in split.val], dtype)
    run_dir = run_dir or default_run_dir(out)
    start, started_from = None, None
    if init is not None:
        start = starting_model(init, config, train.elements())
        if not config.model_options:
            own = {k: v for k, v in start.hyperparameters().items() if k != "elements"}
            config = type(config).model_validate({**config.model_dump(), "model_options": own})
        started_from = {
            "model": str(Path(init).resolve()),
            "fingerprint": model_fingerprint(start),
            "forces": trained_forces(start),
        }
    inputs = {
        "data_fingerprint": labelled_frames_fingerprint(frames),
        "n_train": int(n_train),
        "n_val": int(n_val),
        "split_by": split_by,
    }
    if make_trainer is None:
        trainer = Trainer(
            config, train, validation, run_dir, potential=start, progress=progress, inputs=inputs
        )
    else:
        trainer = make_trainer(
            frames, split, config, train, validation, run_dir, potential=start,
            progress=progress, inputs=inputs,
        )  # fmt: skip
    result = trainer.run()
    metadata = {
        "training": {
            "data": str(Path(data_path).resolve()),
            "train_fingerprint": frames_fingerprint(frames, split.train),
            "train_frame_fingerprints": [frame_fingerprint(frames[i]) for i in split.train],
            "val_frame_fingerprints": [frame_fingerprint(frames[i]) for i in split.val],
            # what the ASE calculator compares a structure with (stablemd.models.coverage)
            "distance_cutoff_A": result.potential.cutoff,
            "shortest_distances_A": shortest_distances(
                (frames[i] for i in split.train), result.potential.cutoff
            ),
            "train_indices": [int(i) for i in split.train],
            "val_indices": [int(i) for i in split.val],
            "config": config.model_dump(),
            "init": started_from,
            "epochs": len(result.history),
            "best_epoch": result.best_validation["epoch"],
            "train_time_s": round(result.elapsed_s, 1),
        },
        # so that simulate, stability and diagnose need neither --system nor --starts
        "system": record_training_system([frames[i] for i in split.train], str(data_path)),
        "validation": result.best_validation["metrics"],
        "train_set_errors": error_metrics(
            result.potential, train, batch_size=64, forces=config.scored_forces
        ),
    }
    if fit_attachments is not None:
        fit_attachments(result.potential, [frames[i] for i in split.train], frames)
    save_potential(result.potential, out, metadata)
    result.potential.metadata = metadata  # as a model loaded from the file has it
    return TrainedModel(result.potential, Path(out), metadata)


def frames_fingerprint(frames: Sequence[Atoms], indices: Sequence[int]) -> str:
    """SHA-256 of the atomic numbers and positions of ``frames[indices]`` (unrounded; the
    ``train_fingerprint`` of model files, read for models saved before per-frame fingerprints)."""
    digest = hashlib.sha256()
    for i in indices:
        digest.update(np.asarray(frames[i].numbers, dtype=np.int64).tobytes())
        digest.update(np.asarray(frames[i].positions, dtype=np.float64).tobytes())
    return digest.hexdigest()


def is_training_file(model_metadata: dict, data: Path, frames: Sequence[Atoms]) -> bool:
    """For models without per-frame fingerprints: whether ``data`` (read as ``frames``) is the
    file the model was trained on: its recorded path, or a moved or copied file whose frames at
    the training indices are the same."""
    training = model_metadata.get("training", {})
    if training.get("data") == str(Path(data).resolve()):
        return True
    indices, fingerprint = training.get("train_indices", []), training.get("train_fingerprint")
    if fingerprint is None or not indices or max(indices) >= len(frames):
        return False
    return frames_fingerprint(frames, indices) == fingerprint


@dataclass
class TrainingFrames:
    """Where a model's training and validation frames are in a file of ``n_frames`` frames.

    ``train``, ``val``: their indices in the file, in the model's order (frames not found are
    missing); ``held_out``: every other frame; ``recognised``: frames of the file that are
    training or validation frames; ``by``: how they were found (``content``: per-frame
    fingerprints; ``path`` or ``indices``: the record of a model saved before those existed;
    ``none``: no frame of the file was used).
    """

    train: list[int]
    val: list[int]
    held_out: list[int]
    recognised: int
    by: str
    n_model_train: int
    n_model_val: int

    def describe(self, data: Path) -> str:
        """One line for the terminal."""
        name = Path(data).name
        if self.by == "none":
            return f"no frame of {name} was used to train or validate the model"
        how = {
            "content": "by content",
            "path": "by its recorded path",
            "indices": "by the frames at the recorded training indices",
        }[self.by]
        return (
            f"{self.recognised} frames of {name} recognised {how} as training or validation "
            f"frames ({len(self.train)} of the model's {self.n_model_train} training frames, "
            f"{len(self.val)} of its {self.n_model_val} validation frames)"
        )


def locate_training_frames(
    model_metadata: dict, data: Path, frames: Sequence[Atoms]
) -> TrainingFrames:
    """Find the model's training and validation frames in ``data`` (read as ``frames``).

    Models that record per-frame fingerprints are matched by content, so a copy, a reordered or
    regenerated file, or an extended XYZ round trip is recognised frame by frame, whatever the
    path. Older models fall back to their recorded path and training indices.
    """
    training = model_metadata.get("training", {})
    train_prints = training.get("train_frame_fingerprints")
    val_prints = training.get("val_frame_fingerprints")
    if train_prints is not None and val_prints is not None:
        return _by_content(train_prints, val_prints, frames)
    train, val = training.get("train_indices", []), training.get("val_indices", [])
    if not is_training_file(model_metadata, data, frames):
        return TrainingFrames([], [], list(range(len(frames))), 0, "none", len(train), len(val))
    by = "path" if training.get("data") == str(Path(data).resolve()) else "indices"
    used = set(train) | set(val)
    held_out = [i for i in range(len(frames)) if i not in used]
    train = [i for i in train if i < len(frames)]
    val = [i for i in val if i < len(frames)]
    n_model = (len(training["train_indices"]), len(training["val_indices"]))
    return TrainingFrames(train, val, held_out, len(frames) - len(held_out), by, *n_model)


def _by_content(train_prints: list[str], val_prints: list[str], frames: Sequence[Atoms]):
    used = set(train_prints) | set(val_prints)
    prints = []  # each frame's recorded fingerprint, or its own when it has none
    for atoms in frames:
        candidates = frame_fingerprint_candidates(atoms)
        prints.append(next((c for c in candidates if c in used), candidates[0]))
    where: dict[str, list[int]] = {}
    for i, fingerprint in enumerate(prints):
        where.setdefault(fingerprint, []).append(i)
    taken: set[int] = set()

    def find(prints: list[str]) -> list[int]:
        found = []
        for fingerprint in prints:
            free = [i for i in where.get(fingerprint, ()) if i not in taken]
            if free:
                taken.add(free[0])
                found.append(free[0])
        return found

    train, val = find(train_prints), find(val_prints)
    held_out = [i for i, fingerprint in enumerate(prints) if fingerprint not in used]
    recognised = len(frames) - len(held_out)
    by = "content" if recognised else "none"
    return TrainingFrames(train, val, held_out, recognised, by, len(train_prints), len(val_prints))
