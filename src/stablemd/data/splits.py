"""Reproducible train/validation/test splits of a set of frames.

``by="random"``: a seeded permutation of all frames. ``by="trajectory"``: whole trajectories
are dealt out in a seeded random order, first to train until it has ``n_train`` frames, then
to validation, then to test; a set takes the first frames (in stored order) of the
trajectories it receives, and the rest of a trajectory that overfills a set is left unused.
So validation and test frames come from trajectories never seen in training: a test of
transfer to new trajectories rather than of interpolation between neighbouring frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stablemd.core.errors import InputError


@dataclass
class Split:
    """Frame indices (sorted) of each set."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict[str, list[int]]:
        return {name: [int(i) for i in getattr(self, name)] for name in ("train", "val", "test")}


def _random(n_frames: int, sizes: list[int], seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n_frames)
    bounds = np.cumsum([0, *sizes])
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _by_trajectory(trajectories: np.ndarray, sizes: list, seed: int) -> list[np.ndarray]:
    """``sizes``: frames of train, val, test (None: every remaining trajectory)."""
    ids = np.random.default_rng(seed).permutation(np.unique(trajectories))
    queue = [np.flatnonzero(trajectories == t) for t in ids]
    sets = []
    for name, size in zip(("train", "val", "test"), sizes, strict=True):
        chosen: list[np.ndarray] = []
        if size is None:
            chosen, queue = queue, []
        while size is not None and sum(len(c) for c in chosen) < size:
            if not queue:
                have = sum(len(c) for c in chosen)
                raise InputError(
                    f"split by trajectory: {name} needs {size} frames but only {have} remain in "
                    f"trajectories not used by earlier sets ({len(ids)} trajectories in all)"
                )
            chosen.append(queue.pop(0))
        sets.append(np.concatenate(chosen)[:size] if chosen else np.array([], dtype=int))
    return sets


def split_indices(
    n_frames: int,
    n_train: int,
    n_val: int,
    n_test: int | None = None,
    seed: int = 0,
    by: str = "random",
    trajectories: Sequence[int] | None = None,
) -> Split:
    """Disjoint train/val/test indices into ``n_frames`` frames (``n_test=None``: all the rest;
    with ``by="trajectory"``, the rest of the unused trajectories). ``trajectories`` gives the
    trajectory id of each frame (needed for ``by="trajectory"``)."""
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test or 0)):
        if value < 0:
            raise InputError(f"{name} must not be negative, got {value}")
    if by == "random":
        n_test = n_frames - n_train - n_val if n_test is None else n_test
        if n_train + n_val + max(n_test, 0) > n_frames or n_test < 0:
            raise InputError(
                f"asked for {n_train} train + {n_val} val + {max(n_test, 0)} test frames "
                f"but there are only {n_frames}"
            )
        sets = _random(n_frames, [n_train, n_val, n_test], seed)
    elif by == "trajectory":
        if trajectories is None or len(trajectories) != n_frames:
            got = "none" if trajectories is None else len(trajectories)
            raise InputError(
                f"split by trajectory needs one trajectory id per frame ({n_frames}), got {got}"
            )
        trajectories = np.asarray(trajectories)
        sets = _by_trajectory(trajectories, [n_train, n_val, n_test], seed)
    else:
        raise InputError(f"unknown split {by!r}; use 'random' or 'trajectory'")
    return Split(*(np.sort(s) for s in sets))
