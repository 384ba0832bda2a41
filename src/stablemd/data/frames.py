"""Labelled frames held as tensors, and the collation of index sets into batches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.data.fingerprints import labelled_frames_fingerprint


class FrameSet:
    """Labelled structures (energy eV, forces eV/Å) ready to be batched quickly.

    Built once from ASE ``Atoms`` carrying a calculator with ``energy`` and ``forces``.
    """

    def __init__(self, frames: Sequence[Atoms], dtype: torch.dtype = torch.float32):
        if len(frames) == 0:
            raise InputError("no frames to train or evaluate on")
        self.dtype = dtype
        self.positions = [torch.as_tensor(a.get_positions(), dtype=dtype) for a in frames]
        self.numbers = [torch.as_tensor(a.get_atomic_numbers(), dtype=torch.long) for a in frames]
        self.cells = torch.as_tensor(
            np.stack([np.asarray(a.get_cell()) for a in frames]), dtype=dtype
        )
        self.pbc = torch.as_tensor(np.stack([a.get_pbc() for a in frames]), dtype=torch.bool)
        self.energy = torch.as_tensor([a.calc.results["energy"] for a in frames], dtype=dtype)
        self.forces = [torch.as_tensor(a.calc.results["forces"], dtype=dtype) for a in frames]
        #: what a result computed from these frames depends on (structures and labels, in order)
        self.fingerprint = labelled_frames_fingerprint(frames)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def n_atoms(self) -> torch.Tensor:
        """Number of atoms of each frame [n_frames]."""
        return torch.as_tensor([len(z) for z in self.numbers])

    def elements(self) -> list[int]:
        """Atomic numbers present in any frame."""
        return sorted(set(torch.cat(self.numbers).tolist()))

    def batch(self, indices: Sequence[int]) -> Batch:
        """The frames at ``indices`` as one labelled :class:`Batch`."""
        indices = list(indices)
        sizes = [len(self.numbers[i]) for i in indices]
        return Batch(
            positions=torch.cat([self.positions[i] for i in indices]),
            numbers=torch.cat([self.numbers[i] for i in indices]),
            system_index=torch.repeat_interleave(
                torch.arange(len(indices)), torch.as_tensor(sizes)
            ),
            cell=self.cells[indices],
            pbc=self.pbc[indices],
            energy=self.energy[indices],
            forces=torch.cat([self.forces[i] for i in indices]),
        )

    def batches(self, batch_size: int, order: Sequence[int] | None = None):
        """Consecutive batches of ``batch_size`` frames in ``order`` (default: stored order)."""
        order = list(range(len(self))) if order is None else list(order)
        for start in range(0, len(order), batch_size):
            yield self.batch(order[start : start + batch_size])
