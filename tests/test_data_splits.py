"""Train/validation/test splits: reproducible, disjoint, trajectory-aware, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from stablemd.core.errors import InputError
from stablemd.data.splits import split_indices


def test_random_split_is_reproducible_disjoint_and_complete():
    split = split_indices(100, 60, 20, seed=3)
    again = split_indices(100, 60, 20, seed=3)
    other = split_indices(100, 60, 20, seed=4)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(split, name), getattr(again, name))
    assert not np.array_equal(split.train, other.train)
    sizes = [len(split.train), len(split.val), len(split.test)]
    assert sizes == [60, 20, 20]
    assert sorted(np.concatenate([split.train, split.val, split.test]).tolist()) == list(range(100))
    assert len(split_indices(100, 60, 20, n_test=5).test) == 5
    assert split.to_dict()["val"] == split.val.tolist()


def test_trajectory_split_keeps_trajectories_apart():
    trajectories = np.repeat(np.arange(6), [10, 12, 8, 10, 9, 11])
    split = split_indices(60, 25, 8, seed=1, by="trajectory", trajectories=trajectories)
    assert len(split.train) == 25 and len(split.val) == 8
    sets = [set(trajectories[getattr(split, name)]) for name in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[2]  # the remaining trajectories form the test set
    # frames of a set are the first frames (a contiguous block) of each of its trajectories
    for t in sets[0]:
        block = np.sort(split.train[trajectories[split.train] == t])
        assert (np.diff(block) == 1).all() and block[0] == np.flatnonzero(trajectories == t)[0]
    again = split_indices(60, 25, 8, seed=1, by="trajectory", trajectories=trajectories)
    np.testing.assert_array_equal(split.test, again.test)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((10, 8, 3), {}, "asked for 8 train \\+ 3 val \\+ 0 test frames but there are only 10"),
        ((10, 5, 2), {"n_test": 4}, "but there are only 10"),
        ((10, -1, 2), {}, "n_train must not be negative"),
        ((10, 2, 2), {"by": "molecule"}, "unknown split 'molecule'"),
        ((10, 2, 2), {"by": "trajectory"}, "needs one trajectory id per frame"),
        ((10, 6, 2), {"by": "trajectory", "trajectories": [0] * 5 + [1] * 5}, "val needs 2"),
    ],
)
def test_impossible_splits_are_input_errors(args, kwargs, message):
    with pytest.raises(InputError, match=message):
        split_indices(*args, **kwargs)
