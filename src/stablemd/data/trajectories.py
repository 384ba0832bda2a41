"""Reference trajectories: consecutive MD frames with positions, velocities and labels.

Training on a model's own rollouts (``stablemd train --dynamic``) needs more than labelled
frames: the velocities of each frame, the MD time step and how many MD steps separate two
stored frames. Frames carry them as ASE momenta and the key-value pairs ``trajectory``
(an id), ``step`` (the MD step of the frame) and ``timestep_fs``, which ``stablemd data
generate`` writes and ``stablemd data import --timestep`` adds to external AIMD.

Frames are grouped by trajectory id and ordered by step; a trajectory must have one time
step and evenly spaced steps, and every frame velocities: anything else is refused naming
the file and the frame, because a rollout across a gap or with a wrong time step would be
compared with the wrong reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from stablemd.core.errors import InputError
from stablemd.core.units import FS_IN_ASE_TIME


@dataclass
class Trajectory:
    """One reference trajectory, float64 arrays in eV, Å, fs, amu.

    ``positions``, ``velocities`` (Å/fs), ``forces`` [n_frames, n_atoms, 3]; ``energy``
    [n_frames]; ``frame_indices``: where each frame is in the frame list it was read from.
    Consecutive frames are ``every`` MD steps of ``timestep_fs`` apart.
    """

    trajectory_id: int | str
    frame_indices: list[int]
    numbers: np.ndarray
    masses: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    forces: np.ndarray
    energy: np.ndarray
    timestep_fs: float
    every: int

    def __len__(self) -> int:
        return len(self.frame_indices)

    @property
    def frame_spacing_fs(self) -> float:
        """Time between two consecutive frames, fs."""
        return self.every * self.timestep_fs


def velocities_of(atoms: Atoms) -> np.ndarray:
    """Velocities of ``atoms`` in Å/fs (ASE keeps momenta in amu·Å per its own time unit)."""
    return atoms.get_velocities() * FS_IN_ASE_TIME


def _check_frame(source: str, index: int, atoms: Atoms) -> None:
    where = f"{source}: frame {index}"
    if "momenta" not in atoms.arrays:
        raise InputError(
            f"{where} has no velocities; training on rollouts needs the velocities of "
            "every frame (extxyz momenta, or an ASE trajectory)"
        )
    for key in ("timestep_fs", "step"):
        if key not in atoms.info:
            raise InputError(
                f"{where} has no {key}: not a trajectory frame (import AIMD with "
                "stablemd data import --timestep)"
            )
    if not np.isfinite(atoms.get_momenta()).all():
        raise InputError(f"{where} has non-finite velocities")
    if not float(atoms.info["timestep_fs"]) > 0:
        raise InputError(f"{where}: time step {atoms.info['timestep_fs']} fs is not positive")


def read_trajectories(frames: Sequence[Atoms], source: str) -> list[Trajectory]:
    """The trajectories of ``frames`` (labelled, with velocities and trajectory keys), in the
    order of their first frame; ``source`` names the file in refusals."""
    groups: dict[int | str, list[int]] = {}
    for index, atoms in enumerate(frames):
        _check_frame(source, index, atoms)
        groups.setdefault(atoms.info.get("trajectory", 0), []).append(index)
    return [_trajectory(frames, source, tid, indices) for tid, indices in groups.items()]


def _trajectory(frames, source: str, tid, indices: list[int]) -> Trajectory:
    indices = sorted(indices, key=lambda i: int(frames[i].info["step"]))
    first = frames[indices[0]]
    timestep = float(first.info["timestep_fs"])
    steps = [int(frames[i].info["step"]) for i in indices]
    every = steps[1] - steps[0] if len(steps) > 1 else 1
    for k, i in enumerate(indices):
        atoms = frames[i]
        where = f"{source}: frame {i} (trajectory {tid}, step {steps[k]})"
        if not np.isclose(float(atoms.info["timestep_fs"]), timestep, rtol=1e-9, atol=0):
            raise InputError(
                f"{where} has time step {atoms.info['timestep_fs']} fs, the frames before "
                f"it {timestep} fs: uneven time step"
            )
        if k > 0 and steps[k] - steps[k - 1] != every:
            raise InputError(
                f"{where} is {steps[k] - steps[k - 1]} steps after the frame before it, the "
                f"first frames {every}: uneven time between frames (a missing frame?)"
            )
        if not np.array_equal(atoms.numbers, first.numbers):
            raise InputError(f"{where} has other atoms than the trajectory's first frame")
    if every < 1:
        raise InputError(f"{source}: frame {indices[1]} repeats step {steps[0]}")
    return Trajectory(
        trajectory_id=tid,
        frame_indices=indices,
        numbers=np.asarray(first.numbers),
        masses=first.get_masses(),
        cell=np.asarray(first.get_cell()),
        pbc=np.asarray(first.get_pbc()),
        positions=np.stack([frames[i].positions for i in indices]),
        velocities=np.stack([velocities_of(frames[i]) for i in indices]),
        forces=np.stack([frames[i].calc.results["forces"] for i in indices]),
        energy=np.asarray([frames[i].calc.results["energy"] for i in indices], dtype=float),
        timestep_fs=timestep,
        every=every,
    )


def consecutive_runs(trajectory: Trajectory, keep: set[int]) -> list[Trajectory]:
    """The maximal runs of consecutive frames of ``trajectory`` whose frame indices are in
    ``keep`` (the frames of one set of a split), each as a trajectory of its own."""
    runs, current = [], []
    for k, i in enumerate(trajectory.frame_indices):
        if i in keep:
            current.append(k)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [_subset(trajectory, run) for run in runs]


def _subset(trajectory: Trajectory, frames: list[int]) -> Trajectory:
    sel = np.asarray(frames)
    return Trajectory(
        trajectory_id=trajectory.trajectory_id,
        frame_indices=[trajectory.frame_indices[k] for k in frames],
        numbers=trajectory.numbers,
        masses=trajectory.masses,
        cell=trajectory.cell,
        pbc=trajectory.pbc,
        positions=trajectory.positions[sel],
        velocities=trajectory.velocities[sel],
        forces=trajectory.forces[sel],
        energy=trajectory.energy[sel],
        timestep_fs=trajectory.timestep_fs,
        every=trajectory.every,
    )


def mark_trajectory(
    frames: Sequence[Atoms], source: str, frame_spacing_fs: float, every: int = 1
) -> list[Atoms]:
    """``frames`` of one external trajectory (AIMD), ``frame_spacing_fs`` apart, each ``every``
    MD steps: given the keys ``trajectory`` 0, ``step`` and ``timestep_fs``.

    Every frame must have velocities; frames that carry a ``time`` (fs) must be evenly spaced
    by ``frame_spacing_fs``: the first that is not is refused, named.
    """
    if not frame_spacing_fs > 0:
        raise InputError(f"--timestep {frame_spacing_fs}: must be positive")
    if every < 1:
        raise InputError(f"--every {every}: must be at least 1")
    times = [a.info.get("time") for a in frames]
    for index, atoms in enumerate(frames):
        if "momenta" not in atoms.arrays:
            raise InputError(
                f"{source}: frame {index} has no velocities (extxyz momenta, or an ASE "
                "trajectory); a trajectory for rollouts needs them in every frame"
            )
        if index > 0 and times[index] is not None and times[index - 1] is not None:
            gap = float(times[index]) - float(times[index - 1])
            if not np.isclose(gap, frame_spacing_fs, rtol=1e-6, atol=1e-9):
                raise InputError(
                    f"{source}: frame {index} is {gap:g} fs after frame {index - 1} (its "
                    f"'time'), not --timestep {frame_spacing_fs:g} fs: uneven time step"
                )
    out = []
    for index, atoms in enumerate(frames):
        atoms.info.update(trajectory=0, step=index * every, timestep_fs=frame_spacing_fs / every)
        out.append(atoms)
    return out
