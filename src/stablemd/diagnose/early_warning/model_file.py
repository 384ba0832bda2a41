"""The early warning kept with a model: its latent domain fitted on its training frames and, when
the data hold reference MD trajectories, the critical level calibrated on them, attached to the
model under ``latent_domain`` (:func:`stablemd.models.registry.attach`), so that it is saved in
the model file and dropped when the model is trained further.

The critical level is calibrated on the reference method's own MD (stablemd's ``data generate``
records each frame's ``trajectory``, ``step`` and ``timestep_fs``): the model's indicator on
every frame of each trajectory, its flagged fraction accumulated along the trajectory
(:func:`~.index.cumulative_index`), and L = the largest CLI of any trajectory at the end of the
time they all cover (:func:`~.index.calibrate_critical_level`, quantile 1, factor 1), but at
least :data:`LEVEL_FLOOR_FRACTION` of that time (a well-trained model's reference runs may flag
no atom at all, and a level of 0 is passed by the first flagged atom; the floor was chosen on
the aspirin study of docs/early_warning.md). These runs did not fail, so they are known-good
runs; they hold the training frames and the frames around them. Frames without that record
(imported files) give no critical level.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from ase import Atoms

from stablemd.core.errors import InputError
from stablemd.data.database import read_frames
from stablemd.diagnose.early_warning.index import (
    CriticalLevel,
    calibrate_critical_level,
    cumulative_index,
    replica_index,
)
from stablemd.models.latent_domain import (
    ATTACHMENT,
    INDICATORS,
    LatentDomain,
    fit_latent_domain,
    latent_features,
)
from stablemd.models.potential import Potential
from stablemd.models.registry import (
    attach,
    attachment,
    check_elements,
    load_potential,
    save_potential,
)
from stablemd.training.workflow import TrainingFrames, locate_training_frames

#: The least critical level, as a flagged fraction of the calibration length.
LEVEL_FLOOR_FRACTION = 0.01


@dataclass
class ReferenceTrajectories:
    """Frames of reference MD: ``indices`` [n_trajectories][n_times] of the frames at the common
    ``times_ps`` [n_times] (from the first common frame, 0)."""

    times_ps: torch.Tensor
    indices: list[list[int]]


@dataclass
class EarlyWarning:
    """A model's latent domain and, per indicator, its calibrated critical level (empty when
    the data held no reference trajectories); ``calibration`` says on what."""

    domain: LatentDomain
    critical_levels: dict[str, CriticalLevel] = field(default_factory=dict)
    calibration: dict | None = None

    def state_dict(self) -> dict:
        """A plain dictionary for a model file's attachments."""
        return {
            "domain": self.domain.state_dict(),
            "critical_levels": {
                name: {"level_ps": level.level_ps, "calibration_ps": level.calibration_ps}
                for name, level in self.critical_levels.items()
            },
            "calibration": self.calibration,
        }

    def fingerprint(self) -> str:
        """A short SHA-256 of everything in :meth:`state_dict` (domain, levels, calibration)."""
        digest = hashlib.sha256()

        def feed(value) -> None:
            if isinstance(value, torch.Tensor):
                digest.update(value.contiguous().numpy().tobytes())
            elif isinstance(value, dict):
                for key in sorted(value, key=str):
                    digest.update(str(key).encode())
                    feed(value[key])
            else:
                digest.update(repr(value).encode())

        feed(self.state_dict())
        return digest.hexdigest()[:16]

    @classmethod
    def from_state_dict(cls, values: dict) -> EarlyWarning:
        try:
            levels = {name: CriticalLevel(**v) for name, v in values["critical_levels"].items()}
            domain = LatentDomain.from_state_dict(values["domain"])
            return cls(domain, levels, values["calibration"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"a damaged early-warning attachment ({exc!r})") from None


def reference_trajectories(frames: Sequence[Atoms]) -> ReferenceTrajectories | None:
    """The reference MD trajectories among ``frames`` (each frame's ``info`` holding
    ``trajectory``, ``step`` and ``timestep_fs``), cut to the steps every trajectory has; None
    when there are none, or fewer than two common frames."""
    steps: dict[object, dict[int, int]] = {}
    timestep = None
    for index, atoms in enumerate(frames):
        info = atoms.info
        if not {"trajectory", "step", "timestep_fs"} <= info.keys():
            return None
        if timestep is not None and info["timestep_fs"] != timestep:
            return None  # runs of other time steps: no common time axis
        timestep = info["timestep_fs"]
        steps.setdefault(info["trajectory"], {})[int(info["step"])] = index
    if not steps:
        return None
    common = sorted(set.intersection(*(set(s) for s in steps.values())))
    if len(common) < 2:
        return None
    times = torch.tensor([(s - common[0]) * timestep / 1000.0 for s in common], dtype=torch.float64)
    return ReferenceTrajectories(times, [[s[step] for step in common] for s in steps.values()])


def flagged_fractions(
    potential: Potential, domain: LatentDomain, frames: Sequence[Atoms]
) -> dict[str, torch.Tensor]:
    """Per indicator, the fraction [n_frames] of each frame's atoms that it flags."""
    features, numbers = latent_features(potential, frames)
    system_index = torch.repeat_interleave(torch.tensor([len(a) for a in frames]))
    return {
        name: replica_index(
            domain.indicator(features, numbers, name).to(torch.float64), system_index, len(frames)
        )
        for name in INDICATORS
    }


def calibrate_on_trajectories(
    potential: Potential,
    domain: LatentDomain,
    frames: Sequence[Atoms],
    trajectories: ReferenceTrajectories,
) -> dict[str, CriticalLevel]:
    """Per indicator, the critical level of the model's CLI along the reference trajectories."""
    order = [i for run in trajectories.indices for i in run]
    fractions = flagged_fractions(potential, domain, [frames[i] for i in order])
    shape = (len(trajectories.indices), len(trajectories.times_ps))
    levels = {}
    for name, values in fractions.items():
        cli = cumulative_index(values.reshape(shape).T, trajectories.times_ps)
        levels[name] = calibrate_critical_level(
            trajectories.times_ps, cli, floor_fraction=LEVEL_FLOOR_FRACTION
        )
    return levels


def fit_early_warning(
    potential: Potential, train_frames: Sequence[Atoms], data_frames: Sequence[Atoms] = ()
) -> EarlyWarning:
    """The latent domain of ``potential`` on its ``train_frames`` and, when ``data_frames`` (the
    whole data set they came from) hold reference trajectories, the critical levels on them."""
    domain = fit_latent_domain(potential, train_frames)
    trajectories = reference_trajectories(data_frames) if len(data_frames) else None
    if trajectories is None:
        return EarlyWarning(domain)
    levels = calibrate_on_trajectories(potential, domain, data_frames, trajectories)
    calibration = {
        "trajectories": len(trajectories.indices),
        "frames_per_trajectory": len(trajectories.times_ps),
        "length_ps": float(trajectories.times_ps[-1]),
    }
    return EarlyWarning(domain, levels, calibration)


def attach_early_warning(potential: Potential, early_warning: EarlyWarning) -> None:
    """Keep ``early_warning`` with the model (written by ``save_potential``)."""
    early_warning.domain.check_model(potential)
    attach(potential, ATTACHMENT, early_warning.state_dict())


def fit_and_attach(
    potential: Potential, train_frames: Sequence[Atoms], data_frames: Sequence[Atoms] = ()
) -> EarlyWarning:
    """:func:`fit_early_warning` then :func:`attach_early_warning`; returns what was attached."""
    early_warning = fit_early_warning(potential, train_frames, data_frames)
    attach_early_warning(potential, early_warning)
    return early_warning


def stored_early_warning(potential: Potential) -> EarlyWarning | None:
    """The early warning attached to the model (None: none); refuses one fitted for other
    weights."""
    values = attachment(potential, ATTACHMENT)
    return None if values is None else EarlyWarning.from_state_dict(values)


@dataclass
class ModelFileFit:
    """What :func:`fit_model_file` attached and on what: where the model's training frames were
    found (``located.by == "none"``: the model records none, so every frame was used) and, per
    indicator, the fraction of the atoms of the other frames of the data that it flags (None:
    no other frames)."""

    early_warning: EarlyWarning
    located: TrainingFrames
    n_training_frames: int
    held_out_flagged: dict[str, float] | None


def fit_model_file(model: Path, data: Path, out: Path) -> ModelFileFit:
    """Fit the early warning of the model at ``model`` on its training frames in ``data``
    (recognised by content, as ``evaluate`` and ``stable-train`` find them) and write the model
    with it attached to ``out`` (the caller checks ``out``; ``model`` is never written). A model
    that records no training frames is fitted on every frame of ``data``; one that records
    them is refused when none of them is in ``data``."""
    potential = load_potential(model)
    frames = read_frames(data)
    check_elements(potential, frames, str(model), str(data))
    located = locate_training_frames(potential.metadata, data, frames)
    recorded = "training" in potential.metadata
    if recorded and not located.train:
        raise InputError(
            f"--data {data}: none of the {located.n_model_train} training frames of {model} is "
            "in it; give the data the model was trained on"
        )
    train = [frames[i] for i in located.train] if recorded else frames
    early_warning = fit_and_attach(potential, train, frames)
    held_out = [frames[i] for i in located.held_out] if recorded else []
    flagged = None
    if held_out:
        fractions = flagged_fractions(potential, early_warning.domain, held_out)
        sizes = torch.tensor([len(a) for a in held_out], dtype=torch.float64)
        flagged = {k: float((v * sizes).sum() / sizes.sum()) for k, v in fractions.items()}
    save_potential(potential, out, potential.metadata)
    return ModelFileFit(early_warning, located, len(train), flagged)
