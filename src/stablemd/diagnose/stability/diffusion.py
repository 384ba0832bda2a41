"""Diffusivity of each element over the stable part of the replicas (periodic systems).

The mean-squared displacement MSD(τ) is averaged over the atoms of an element, over the
replicas and over every time origin t whose replica is still stable at t + τ, for lags τ up to a
window (1 ps); D = slope / 6 of a straight line fitted to MSD(τ) over the second half of the
window (Einstein relation), which leaves the ballistic start out. The integrators never wrap
positions, so displacements need no unwrapping; each frame's mean position is subtracted
(centre-of-mass drift, as :func:`~stablemd.analysis.dynamics.mean_squared_displacement` does).
A reference trajectory's D fitted over the same lags with :func:`fit_diffusivity` is then
comparable, even where the window is too short for the fully diffusive regime.

Hand-written because it has to follow each replica's stable part and be checkpointed with the
run, which the whole-trajectory MSD functions of :mod:`stablemd.analysis.dynamics` are not.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.data import chemical_symbols

from stablemd.analysis.dynamics import to_cm2_per_s
from stablemd.analysis.geometry import replica_numbers, replica_positions
from stablemd.md.monitoring import Observer
from stablemd.md.state import MDState

#: Longest lag of the MSD (ps).
DIFFUSION_WINDOW_PS = 1.0


def fit_diffusivity(lags_fs: np.ndarray, msd_a2: np.ndarray) -> float:
    """D (cm²/s) from the slope of MSD (Å²) against lag (fs) over the second half of the lags."""
    lags_fs, msd_a2 = np.asarray(lags_fs, float), np.asarray(msd_a2, float)
    half = lags_fs >= lags_fs[-1] / 2
    slope = np.polyfit(lags_fs[half], msd_a2[half], 1)[0]
    return float(to_cm2_per_s(slope / 6.0))


class StableDisplacement(Observer):
    """MSD per element over lags of 1 … ``window`` calls, stable origins only.

    Called every ``every`` steps; ``interval_fs`` is the simulated time between two calls.
    """

    name = "stable_displacement"

    def __init__(self, window: int, interval_fs: float, every: int = 1):
        super().__init__(every)
        if window < 2:
            raise ValueError(f"the MSD window needs at least 2 lags, got {window}")
        self.window = window
        self.interval_fs = float(interval_fs)
        self.history: torch.Tensor | None = None  # [window, R, N, 3], newest last
        self.filled = 0
        self.sums: torch.Tensor | None = None  # [window, n_elements] Å² summed over atoms
        self.counts: torch.Tensor | None = None  # [window, n_elements] atoms summed
        self.elements: torch.Tensor | None = None  # atomic numbers [n_elements]
        self.masks: torch.Tensor | None = None  # atoms of each element [n_elements, N]

    def __call__(self, state: MDState) -> None:
        positions = replica_positions(state).to(torch.float64)
        positions = positions - positions.mean(dim=1, keepdim=True)  # no centre-of-mass drift
        if self.history is None:
            numbers = replica_numbers(state)
            self.elements = torch.unique(numbers)
            self.masks = numbers[None, :] == self.elements[:, None]
            self.history = positions.new_zeros((self.window, *positions.shape))
            self.sums = positions.new_zeros((self.window, len(self.elements)))
            self.counts = torch.zeros_like(self.sums)
        active = state.active
        if bool(active.any()):
            # Activity only ever ends, so every stored frame of an active replica was stable.
            lags = min(self.filled, self.window)
            if lags:
                earlier = self.history[self.window - lags :].flip(0)[:, active]  # lag 1 first
                squared = (positions[active][None] - earlier).pow(2).sum(-1)  # [lags, R', N]
                per_atom = squared.sum(1)  # [lags, N]
                masks = self.masks.to(per_atom.dtype)
                self.sums[:lags] += per_atom @ masks.T
                self.counts[:lags] += int(active.sum()) * masks.sum(1)
        self.history = torch.roll(self.history, -1, dims=0)
        self.history[-1] = positions
        self.filled += 1

    def diffusivity(self) -> dict[str, float | None]:
        """D (cm²/s) per element symbol; None when no replica stayed stable for the window."""
        if self.sums is None:
            return {}
        lags_fs = self.interval_fs * np.arange(1, self.window + 1)
        out: dict[str, float | None] = {}
        for e, z in enumerate(self.elements.tolist()):
            counts = self.counts[:, e].numpy()
            msd = self.sums[:, e].numpy() / np.maximum(counts, 1)
            out[chemical_symbols[z]] = fit_diffusivity(lags_fs, msd) if counts[-1] > 0 else None
        return out

    def state_dict(self) -> dict:
        names = ("history", "filled", "sums", "counts", "elements", "masks")
        return {name: getattr(self, name) for name in names}

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)
