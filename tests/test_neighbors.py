"""Neighbour lists agree with ASE's, for batches of molecules and for periodic cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from stablemd.core.batch import Batch
from stablemd.core.neighbors import build_neighbor_list

CUTOFF = 2.6


def _rows(i, j, shifts):
    return sorted(zip(i.tolist(), j.tolist(), np.round(shifts, 6).tolist(), strict=True))


def _ase_rows(structures):
    rows, offset = [], 0
    for atoms in structures:
        i, j, shift = neighbor_list("ijS", atoms, CUTOFF)
        rows += _rows(i + offset, j + offset, shift @ np.asarray(atoms.cell))
        offset += len(atoms)
    return sorted(rows)


@pytest.mark.parametrize(
    "structures",
    [
        [molecule("CH3CH2OH"), molecule("H2O"), molecule("C6H6"), molecule("CH3CH2OH")],
        [bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2)), bulk("Cu", "fcc", a=3.6)],
    ],
    ids=["molecules", "periodic"],
)
def test_pairs_match_ase_and_one_direction_halves_them(structures):
    rng = np.random.default_rng(0)
    for atoms in structures:
        atoms.rattle(0.1, rng=rng)
    pairs = build_neighbor_list(Batch.from_atoms(structures, dtype=torch.float64), CUTOFF)
    got = _rows(pairs.centers, pairs.neighbors, pairs.shifts.numpy())
    assert got == _ase_rows(structures)

    half = pairs.one_direction()
    assert 2 * len(half.centers) == len(pairs.centers)
    both_ways = _rows(
        torch.cat([half.centers, half.neighbors]),
        torch.cat([half.neighbors, half.centers]),
        torch.cat([half.shifts, -half.shifts]).numpy(),
    )
    assert both_ways == got


@pytest.mark.parametrize("periodic", [False, True], ids=["molecules", "periodic"])
def test_a_system_with_non_finite_positions_gets_no_pairs(periodic):
    """A replica that blew up between two checks must not stop the neighbour list of the rest."""
    good = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2)) if periodic else molecule("CH3CH2OH")
    broken = good.copy()
    broken.positions[1] = np.nan
    pairs = build_neighbor_list(Batch.from_atoms([broken, good], dtype=torch.float64), CUTOFF)
    assert 1 not in pairs.centers and 1 not in pairs.neighbors
    second = pairs.centers >= len(good)
    got = _rows(
        pairs.centers[second] - len(good), pairs.neighbors[second] - len(good),
        pairs.shifts[second].numpy(),
    )  # fmt: skip
    assert got == _ase_rows([good])
    if periodic:
        assert not bool((~second).any())  # the broken box gets no pairs at all
