"""From a base model file and its training data to a StABlE-trained model file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from stablemd.data.database import read_frames
from stablemd.data.formats import read_positions
from stablemd.fix.stable_training.config import StableConfig
from stablemd.fix.stable_training.loop import StableResult, StableTrainer, training_observable
from stablemd.fix.stable_training.targets import (
    ReferenceValue,
    TrainingObservable,
    reference_from_file,
    reference_from_frames,
)
from stablemd.models.registry import load_potential, save_potential
from stablemd.systems.resolve import resolve_system
from stablemd.systems.system import System
from stablemd.training.workflow import TrainingFrames, locate_training_frames


def training_frames(model_metadata: dict, data: Path) -> tuple[list[Atoms], TrainingFrames]:
    """The frames of ``data`` the base model was trained on, in the model's order (recognised
    by content when the model records per-frame fingerprints, so a copy, a reordered file or an
    extended XYZ round trip serves as well), and where they were found. When none of them is in
    ``data`` it is another file, and all its frames are returned."""
    frames = read_frames(data)
    located = locate_training_frames(model_metadata, data, frames)
    if not located.train:
        return frames, located
    return [frames[i] for i in located.train], located


def system_of(
    name: str | None, frames: list[Atoms], where: str = "the training frames"
) -> tuple[System, np.ndarray | None]:
    """The named system (built-in or stored) in the atom order of ``frames`` (of ``where``,
    named in errors), or one derived from the frames (bonds of the first frame, reference bond
    lengths averaged over all); and the order matched when the frames list the named system's
    atoms in another order (system atom ``k`` is frame atom ``order[k]``; None: same order)."""
    resolved = resolve_system(name, frames, where)
    if resolved.order is None:
        return resolved.system, None
    return resolved.system.in_frame_order(resolved.order), resolved.order


def reference_value(
    observable: TrainingObservable,
    system: System,
    train_frames: list[Atoms],
    config: StableConfig,
    reference_file: Path | None = None,
) -> ReferenceValue:
    """g_ref: the ``reference`` array of an ``.npz`` file; the observable averaged over the
    frames of a ``.db``/``.xyz``/``.extxyz`` file (a reference simulation: positions only, its
    labels are never used for training); or, without a file, over the training frames. Frames are
    reweighted to ``config.temperature_K`` when ``config.reference_temperature_K`` is set."""
    if reference_file is not None and Path(reference_file).suffix.lower() == ".npz":
        size = len(reference_from_frames(observable, train_frames[:1]).value)
        return reference_from_file(reference_file, size)
    frames = train_frames
    if reference_file is not None:
        frames, _ = system.align(read_positions(reference_file), str(reference_file))
    reweight_to = config.temperature_K if config.reference_temperature_K else None
    reference = reference_from_frames(
        observable, frames, config.reference_temperature_K, reweight_to
    )
    if reference_file is not None:
        reference.source = f"{reference.source} of {reference_file}"
    return reference


def stable_train(
    model: Path,
    data: Path,
    out: Path,
    config: StableConfig,
    system_name: str | None = None,
    reference_file: Path | None = None,
    run_dir: Path | None = None,
    progress: bool = True,
) -> StableResult:
    """StABlE-train the model at ``model`` on its training frames in ``data``; save to ``out``.

    The reference observable comes from ``reference_file`` or from the training frames (see
    :func:`reference_value`). The saved model keeps the base
    model's training record, so ``stablemd evaluate`` still holds its training frames out.
    """
    potential = load_potential(model)
    frames, located = training_frames(potential.metadata, data)
    system, order = system_of(system_name, frames, f"{data} (training frames)")
    observable = training_observable(system, config)
    reference = reference_value(observable, system, frames, config, reference_file)
    run_dir = run_dir or Path(out).with_name(Path(out).stem + "_run")
    trainer = StableTrainer(potential, system, frames, reference, config, run_dir, progress)
    result = trainer.run()
    metadata = {
        **potential.metadata,
        "stable": {
            "base_model": str(Path(model).resolve()),
            "config": config.model_dump(),
            "reference": {"source": reference.source, "n_eff": reference.effective_samples},
            "epochs": len(result.history),
            "cycles": trainer.cycle,
            "wall_time_s": round(result.elapsed_s, 1),
            "energy_recentred_eV_per_atom": result.energy_recentred_eV_per_atom,
        },
    }
    save_potential(result.potential, out, metadata)
    result.training_frames = located
    result.atom_order = order
    return result
