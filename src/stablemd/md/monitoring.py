"""The two kinds of monitor the MD runner calls, each every ``every`` steps of its own
(concrete ones live in :mod:`stablemd.monitors`).

- A :class:`Criterion` judges: it returns a boolean per replica (True = unstable), and the
  runner freezes the replicas it flags and records its ``name`` as the reason.
- An :class:`Observer` only records (a trajectory, a histogram, samples); it changes nothing.

Both only read the state. A monitor with state of its own (a running average, an open file)
implements ``state_dict``/``load_state_dict`` so that a run resumes exactly from a checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from stablemd.core.errors import InputError
from stablemd.md.state import MDState


class Monitor(ABC):
    """Something the runner calls every ``every`` steps (and on the starting state)."""

    name: ClassVar[str]

    def __init__(self, every: int = 1):
        if every < 1:
            raise InputError(f"{self.name}: every must be at least 1 step, got {every}")
        self.every = int(every)

    def state_dict(self) -> dict | None:
        """What a checkpoint must keep to resume this monitor (None: nothing)."""
        return None

    def load_state_dict(self, state_dict: dict) -> None:  # noqa: B027 (nothing to restore)
        """Restore what :meth:`state_dict` returned."""


class Criterion(Monitor):
    """Judges each replica; the runner freezes the ones flagged."""

    @abstractmethod
    def __call__(self, state: MDState) -> torch.Tensor:
        """Boolean [n_systems]: True where the replica is unstable."""


class Observer(Monitor):
    """Records what it sees; never changes the run."""

    @abstractmethod
    def __call__(self, state: MDState) -> None:
        """Look at the state."""
