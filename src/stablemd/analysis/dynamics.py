"""Dynamical observables of trajectories: VACF, unwrapped positions and the MSD, averaged over
time origins (the diffusivity is fitted to the MSD by
:func:`~stablemd.diagnose.stability.diffusion.fit_diffusivity`).

Trajectories are time first: ``[n_frames, ..., n_atoms, 3]`` with any replica dimensions between
time and atoms; positions Å, velocities Å/fs, times fs.
"""

from __future__ import annotations

import torch

from stablemd.analysis.geometry import minimum_image
from stablemd.core.errors import InputError

#: 1 Å²/fs in cm²/s.
A2_PER_FS_IN_CM2_PER_S = 0.1

_F64 = torch.float64


def _origin_averaged_dot(x: torch.Tensor) -> torch.Tensor:
    """C(m) = ⟨x(t)·x(t + m)⟩ over origins t and atoms, [..., F] for x [F, ..., N, 3] (by FFT)."""
    n_frames = x.shape[0]
    spectrum = torch.fft.rfft(x, n=2 * n_frames, dim=0)
    correlation = torch.fft.irfft(spectrum * spectrum.conj(), n=2 * n_frames, dim=0)[:n_frames]
    origins = n_frames - torch.arange(n_frames, dtype=x.dtype)
    per_lag = correlation.sum(-1).mean(-1)  # [F, ...]
    return torch.movedim(per_lag, 0, -1) / origins


def vacf(velocities, window: int = 100, normalize: bool = True) -> torch.Tensor:
    """Velocity autocorrelation ⟨v(t)·v(t + m)⟩ / ⟨v·v⟩ for lags m < ``window`` [..., window].

    ``velocities`` [F, ..., N, 3] (any unit); averaged over all atoms and over every time origin
    t with t + m inside the trajectory; 1 at lag 0 (METHODS: 100-step windows). With
    ``normalize=False`` it is ⟨v(t)·v(t + m)⟩ itself (velocity unit squared), which trajectories
    of different lengths can pool, weighted by their F − m origins.
    """
    velocities = torch.as_tensor(velocities, dtype=_F64)
    if velocities.shape[0] < window:
        raise InputError(f"VACF window {window} is longer than the {velocities.shape[0]} frames")
    correlation = _origin_averaged_dot(velocities)[..., :window]
    return correlation / correlation[..., :1] if normalize else correlation


def unwrap_positions(positions, cell, pbc=None) -> torch.Tensor:
    """Continuous trajectory [F, ..., N, 3] from wrapped positions in a fixed box.

    ``cell`` [3, 3] or [..., 3, 3] for the replica dimensions; assumes no atom moves more than
    half a box length between frames.
    """
    positions = torch.as_tensor(positions, dtype=_F64)
    cell = torch.as_tensor(cell, dtype=_F64).unsqueeze(-3)  # broadcast over atoms
    pbc = torch.ones(3, dtype=torch.bool) if pbc is None else torch.as_tensor(pbc).bool()
    pbc = pbc.unsqueeze(-2) if pbc.dim() > 1 else pbc
    steps = minimum_image(positions[1:] - positions[:-1], cell, pbc)
    return torch.cat([positions[:1], positions[:1] + torch.cumsum(steps, dim=0)])


def mean_squared_displacement(
    positions, cell=None, pbc=None, remove_drift: bool = True
) -> torch.Tensor:
    """MSD(m) = ⟨|r(t + m) − r(t)|²⟩ [..., F] Å² for lags m = 0 … F − 1.

    ``positions`` [F, ..., N, 3] Å, averaged over atoms and the F − m time origins of each lag.
    With ``cell`` the trajectory is unwrapped first; ``remove_drift`` subtracts the mean position
    of the atoms in each frame (centre-of-mass drift of equal-mass atoms).
    """
    x = torch.as_tensor(positions, dtype=_F64)
    if cell is not None:
        x = unwrap_positions(x, cell, pbc)
    if remove_drift:
        x = x - x.mean(dim=-2, keepdim=True)
    x = x - x[:1]  # smaller numbers, same MSD
    n_frames = x.shape[0]
    squares = torch.cumsum(x.pow(2).sum(-1).mean(-1), dim=0)  # [F, ...]
    lags = torch.arange(n_frames)
    before = torch.cat([torch.zeros_like(squares[:1]), squares[:-1]])
    # Σ_{t<F−m} |x_t|² + Σ_{t≥m} |x_t|², per lag m
    sum_squares = squares.flip(0) + (squares[-1] - before)
    origins = (n_frames - lags).to(_F64)
    msd = torch.movedim(sum_squares, 0, -1) / origins - 2.0 * _origin_averaged_dot(x)
    return msd.clamp(min=0.0)


def to_cm2_per_s(diffusivity_a2_per_fs):
    """A diffusivity in Å²/fs expressed in cm²/s."""
    return diffusivity_a2_per_fs * A2_PER_FS_IN_CM2_PER_S
