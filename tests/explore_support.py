"""A tiny explore case: rattled ethanols labelled with ASE's EMT (cheap, and an ASE calculator
that any worker builds from its name), an 8-feature PaiNN trained for two epochs, its
uncertainty fitted. Used by the explore loop tests and their subprocesses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.build import molecule

from stablemd.data.database import write_frames
from stablemd.explore.active_learning.loop import ExploreSettings
from stablemd.explore.uncertainty.workflow import fit_model_uncertainty
from stablemd.oracles.label import label
from stablemd.oracles.registry import get_oracle
from stablemd.training.config import TrainConfig
from stablemd.training.workflow import train_from_database

ORACLE = "ase.calculators.emt:EMT"
#: Two steps of two labels from a pool of two replicas, one training epoch per step.
SETTINGS = dict(
    oracle=ORACLE, budget=4, per_step=2, replicas=2, pool_steps=40, every=10,
    temperature_K=300.0, tau=0.25, stop_uncertainty=None, epochs=1, seed=0,
)  # fmt: skip


def make_case(directory: Path) -> tuple[Path, Path]:
    """(model with an uncertainty, its data) in ``directory``."""
    rng = np.random.default_rng(0)
    calculator = get_oracle(ORACLE)
    frames = []
    for _ in range(30):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(label(atoms, calculator).attach(atoms))
        frames[-1].info["level_of_theory"] = ORACLE
    data = directory / "data.db"
    write_frames(data, frames)
    config = TrainConfig(
        model_options={"n_features": 8, "n_interactions": 1}, max_epochs=2, batch_size=8
    )
    train_from_database(data, 10, 10, config, directory / "bare.pt", progress=False)
    model = directory / "model.pt"
    fit_model_uncertainty(
        directory / "bare.pt", data, model, projections=32, calibration="gaussian"
    )
    return model, data


def settings(**changes) -> ExploreSettings:
    return ExploreSettings(**{**SETTINGS, **changes})
