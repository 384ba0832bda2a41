"""Windows of S consecutive reference frames, batched as replicas of one MD state.

A window starts at any frame that has S − 1 successors in its run of consecutive frames
(:func:`stablemd.data.trajectories.consecutive_runs`), so it never crosses a trajectory
boundary or a frame of another set of the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from stablemd.core.errors import InputError
from stablemd.data.trajectories import Trajectory
from stablemd.md.state import MDState


@dataclass
class WindowBatch:
    """Windows as replicas: ``start`` holds frame 0 (positions, velocities, masses; float64);
    ``forces`` [S, n_atoms, 3] eV/Å the reference forces of every frame; ``energy``
    [n_windows] eV frame 0's reference energies. Frames are ``every`` MD steps of
    ``timestep_fs`` apart."""

    start: MDState
    forces: torch.Tensor
    energy: torch.Tensor
    timestep_fs: float
    every: int

    @property
    def size(self) -> int:
        """Frames per window, S."""
        return int(self.forces.shape[0])


def common_time_step(runs: Sequence[Trajectory], where: str) -> tuple[float, int]:
    """The MD time step (fs) and the MD steps between frames shared by every run."""
    timesteps = {(run.timestep_fs, run.every) for run in runs}
    if len(timesteps) != 1:
        listed = ", ".join(f"{dt:g} fs × {every}" for dt, every in sorted(timesteps))
        raise InputError(f"{where}: trajectories of different time steps ({listed})")
    return timesteps.pop()


def window_batch(runs: Sequence[Trajectory], starts: Sequence[tuple[int, int]], size: int):
    """The windows of ``size`` frames at ``starts`` ((run, first frame) pairs) as one batch."""
    parts = [(runs[r], j) for r, j in starts]
    system_index = torch.repeat_interleave(
        torch.arange(len(parts)), torch.as_tensor([len(run.numbers) for run, _ in parts])
    )

    def cat(values) -> torch.Tensor:
        return torch.cat([torch.as_tensor(v, dtype=torch.float64) for v in values])

    start = MDState(
        positions=cat(run.positions[j] for run, j in parts),
        velocities=cat(run.velocities[j] for run, j in parts),
        masses=cat(run.masses for run, _ in parts),
        numbers=torch.cat([torch.as_tensor(run.numbers, dtype=torch.long) for run, _ in parts]),
        system_index=system_index,
        cell=torch.stack([torch.as_tensor(run.cell, dtype=torch.float64) for run, _ in parts]),
        pbc=torch.stack([torch.as_tensor(run.pbc, dtype=torch.bool) for run, _ in parts]),
    )
    forces = torch.stack([cat(run.forces[j + k] for run, j in parts) for k in range(size)])
    energy = torch.as_tensor([run.energy[j] for run, j in parts], dtype=torch.float64)
    timestep, every = common_time_step([run for run, _ in parts], "windows")
    return WindowBatch(start, forces, energy, timestep, every)


class TrainingWindows:
    """Every window of ``size`` frames in ``runs``; ``batch(indices)`` collates some of them
    (the training set the trainer draws its batches from)."""

    def __init__(self, runs: Sequence[Trajectory], size: int):
        self.runs = list(runs)
        self.size = int(size)
        self.starts = [
            (r, j) for r, run in enumerate(self.runs) for j in range(len(run) - self.size + 1)
        ]
        if not self.starts:
            longest = max((len(run) for run in self.runs), default=0)
            raise InputError(
                f"no window of {self.size} consecutive training frames (the longest run of "
                f"consecutive training frames has {longest}); lower --window-max or train on "
                "whole trajectories (--split-by trajectory)"
            )

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, indices: Sequence[int]) -> WindowBatch:
        return window_batch(self.runs, [self.starts[i] for i in indices], self.size)
