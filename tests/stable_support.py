"""Helpers shared by the StABlE loop tests (no tests here): an untrained small PaiNN, a model's
weights as one vector, and log rows that compare across runs."""

from __future__ import annotations

import math

import torch

from stablemd.data.frames import FrameSet
from stablemd.models.registry import build_potential
from stablemd.training.statistics import fit_energy_scaling


def base_model(frames):
    """An untrained small PaiNN with its energy scale fitted: its MD fails within steps."""
    torch.manual_seed(0)
    model = build_potential("painn", elements=[1, 6, 8], n_features=8, n_interactions=2)
    fit_energy_scaling(model, FrameSet(frames))
    return model


def flat(model) -> torch.Tensor:
    """Every parameter of ``model``, detached, as one vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def comparable(history: list[dict]) -> list[dict]:
    """Log rows without wall times, NaN as None (NaN equals nothing)."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()
         if k != "elapsed_s"}
        for row in history
    ]  # fmt: skip


class Interrupt(Exception):
    """Stands for a kill: raised by :func:`interrupt_in_epoch`."""


def interrupt_in_epoch(trainer, epoch: int, calls: int = 12) -> None:
    """Make ``trainer`` raise :class:`Interrupt` at its ``calls``-th force call in ``epoch``."""
    real_forces, counted = trainer.forces, {"n": 0}

    def forces_until_interrupted(state):
        counted["n"] += trainer.epoch == epoch
        if counted["n"] == calls:
            raise Interrupt
        return real_forces(state)

    trainer.forces = forces_until_interrupted
