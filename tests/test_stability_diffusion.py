"""Diffusivity over the stable parts: a random walk's D, frozen replicas left out, checkpoints."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms

from stablemd.analysis.dynamics import to_cm2_per_s
from stablemd.diagnose.stability.diffusion import StableDisplacement, fit_diffusivity
from stablemd.md.starts import state_from_atoms

INTERVAL_FS = 20.0
WINDOW = 10
#: Per-axis variance of one random-walk step (Å²) of each element: D = σ²/(2Δt).
STEP_VARIANCE = {8: 0.01, 1: 0.04}


def _box(n_atoms: int = 60) -> Atoms:
    rng = np.random.default_rng(0)
    numbers = [8] * (n_atoms // 3) + [1] * (n_atoms - n_atoms // 3)
    return Atoms(numbers, rng.uniform(0, 12, (n_atoms, 3)), cell=[12, 12, 12], pbc=True)


def _walk(n_replicas: int, n_frames: int, seed: int = 0) -> torch.Tensor:
    """Random-walk positions [F, R·N, 3] of the replicas of :func:`_box`."""
    state = state_from_atoms([_box()] * n_replicas)
    rng = np.random.default_rng(seed)
    scale = np.sqrt([STEP_VARIANCE[int(z)] for z in state.numbers])[:, None]
    steps = rng.normal(size=(n_frames, *state.positions.shape)) * scale
    steps[0] = 0.0
    return state.positions + torch.as_tensor(np.cumsum(steps, axis=0))


def _observe(observer, frames, active_from=None):
    """Feed ``frames`` to the observer; ``active_from(k)`` gives the active mask of frame k."""
    state = state_from_atoms([_box()] * (frames.shape[1] // len(_box())))
    for k, positions in enumerate(frames):
        active = None if active_from is None else active_from(k)
        observer(replace(state, positions=positions, active=active))


def test_random_walk_gives_its_diffusivity_for_every_element():
    observer = StableDisplacement(WINDOW, INTERVAL_FS)
    _observe(observer, _walk(n_replicas=8, n_frames=300))
    got = observer.diffusivity()
    assert set(got) == {"H", "O"}
    for symbol, z in (("O", 8), ("H", 1)):
        expected = float(to_cm2_per_s(STEP_VARIANCE[z] / (2 * INTERVAL_FS)))
        # 20 O / 40 H walkers × 8 replicas × ~290 origins: a few per cent of noise
        assert got[symbol] == pytest.approx(expected, rel=0.06), symbol
    lags = INTERVAL_FS * np.arange(1, 5)
    assert fit_diffusivity(lags, 6 * 0.5 * lags) == pytest.approx(float(to_cm2_per_s(0.5)))


def test_frozen_replicas_stop_counting_and_short_runs_give_none():
    frames = _walk(n_replicas=2, n_frames=200)
    atoms = len(_box())
    wild = frames.clone()
    wild[120:, atoms:] += 5.0 * torch.arange(80, dtype=torch.float64)[:, None, None]  # replica 1

    def freeze_second_at_120(k):
        return torch.tensor([True, k < 120])

    clean, frozen = StableDisplacement(WINDOW, INTERVAL_FS), StableDisplacement(WINDOW, INTERVAL_FS)
    _observe(clean, frames, freeze_second_at_120)
    _observe(frozen, wild, freeze_second_at_120)
    assert frozen.diffusivity() == clean.diffusivity()
    assert torch.equal(frozen.counts, clean.counts)

    short = StableDisplacement(WINDOW, INTERVAL_FS)
    _observe(short, frames, lambda k: torch.tensor([k < WINDOW, k < WINDOW - 1]))
    assert short.diffusivity() == {"H": None, "O": None}


def test_an_interrupted_observer_resumes_from_its_state():
    frames = _walk(n_replicas=3, n_frames=60)
    whole = StableDisplacement(WINDOW, INTERVAL_FS)
    _observe(whole, frames)
    first, second = StableDisplacement(WINDOW, INTERVAL_FS), StableDisplacement(WINDOW, INTERVAL_FS)
    _observe(first, frames[:25])
    second.load_state_dict(first.state_dict())
    _observe(second, frames[25:])
    assert second.diffusivity() == whole.diffusivity()
