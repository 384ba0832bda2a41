"""Stability criteria on hand-built states with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units as ase_units

from stablemd.analysis.structure import distance_histogram_h_r, radial_distribution
from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.md.state import MDState
from stablemd.md.velocities import temperature
from stablemd.monitors.criteria import (
    BondLengthDeviation,
    MinNonbondedDistance,
    NonFinite,
    RDFDeviation,
)
from stablemd.systems import get_system


def make_state(atoms_list, interleave: bool = False) -> MDState:
    """A state with one replica per structure; ``interleave`` stores the replicas' atoms mixed
    (atom 0 of every replica, then atom 1 …), keeping each replica's own order."""
    batch = Batch.from_atoms(atoms_list, dtype=torch.float64)
    masses = torch.as_tensor(np.concatenate([a.get_masses() for a in atoms_list]))
    order = torch.arange(batch.n_atoms)
    if interleave:
        local = order - torch.repeat_interleave(
            torch.cumsum(batch.atoms_per_system, 0) - batch.atoms_per_system,
            batch.atoms_per_system,
        )
        order = torch.argsort(local * batch.n_systems + batch.system_index)
    return MDState(
        positions=batch.positions[order],
        velocities=torch.zeros_like(batch.positions),
        masses=masses[order],
        numbers=batch.numbers[order],
        system_index=batch.system_index[order],
        cell=batch.cell,
        pbc=batch.pbc,
    )


def stretched(atoms, bond, amount):
    """A copy of ``atoms`` with atom ``bond[1]`` moved ``amount`` Å along the bond."""
    atoms = atoms.copy()
    i, j = bond
    direction = atoms.positions[j] - atoms.positions[i]
    atoms.positions[j] += amount * direction / np.linalg.norm(direction)
    return atoms


@pytest.fixture(scope="module")
def ethanol():
    return get_system("ethanol")


@pytest.fixture(scope="module")
def water():
    return get_system("water", n_molecules=8)


@pytest.mark.parametrize("interleave", [False, True])
def test_bond_length_deviation_flags_stretched_replicas(ethanol, interleave):
    moved = ethanol.atoms.copy()
    moved.rotate(70, "z", center="COM")
    moved.translate([3.0, -1.0, 2.0])
    bond = ethanol.bonds[2]
    replicas = [moved, stretched(ethanol.atoms, bond, 0.6), stretched(ethanol.atoms, bond, 0.3)]
    state = make_state(replicas, interleave=interleave)
    evaluation = BondLengthDeviation(ethanol.bonds, ethanol.reference_bond_lengths)
    training = BondLengthDeviation(ethanol.bonds, ethanol.reference_bond_lengths, 0.25)
    np.testing.assert_allclose(evaluation.values(state), [0.0, 0.6, 0.3], atol=1e-9)
    assert evaluation(state).tolist() == [False, True, False]
    assert training(state).tolist() == [False, True, True]


def test_bond_length_deviation_uses_minimum_image_and_flags_nan(water):
    across = water.atoms.copy()
    across.positions[1] += across.cell[0]  # an H one box length away: the same periodic bond
    broken = water.atoms.copy()
    broken.positions[4, 0] = np.nan
    state = make_state([across, broken])
    criterion = BondLengthDeviation(water.bonds, water.reference_bond_lengths)
    assert criterion(state).tolist() == [False, True]


def test_bond_length_deviation_rejects_bonds_outside_the_replica(ethanol):
    criterion = BondLengthDeviation([[0, 20]], [1.0])
    with pytest.raises(InputError, match="bonds"):
        criterion(make_state([ethanol.atoms]))


def test_min_nonbonded_distance_matches_ase_and_fires_through_the_boundary(water):
    atoms = water.atoms
    distances = atoms.get_all_distances(mic=True)
    different = water.molecule_index[:, None] != water.molecule_index[None, :]
    expected = distances[different].min()

    collided = atoms.copy()
    # an H of molecule 1 placed 1.0 Å from the O of molecule 0, through the periodic boundary
    collided.positions[4] = collided.positions[0] + [1.0, 0.0, 0.0] - collided.cell[0]
    state = make_state([atoms, collided])
    criterion = MinNonbondedDistance(water.molecule_index)
    values = criterion.values(state)
    assert values[0].item() == pytest.approx(expected, abs=1e-9)
    assert values[1].item() == pytest.approx(1.0, abs=1e-9)
    assert criterion(state).tolist() == [False, True]


def test_min_nonbonded_distance_single_molecule_never_fires(ethanol):
    criterion = MinNonbondedDistance(ethanol.molecule_index)
    assert criterion(make_state([ethanol.atoms])).tolist() == [False]


def test_non_finite(ethanol):
    state = make_state([ethanol.atoms] * 4)
    state.forces = torch.zeros_like(state.positions)
    state.forces[10, 1] = torch.nan  # replica 1
    state.positions[20, 0] = torch.inf  # replica 2
    state.potential_energy = torch.tensor([0.0, 0.0, 0.0, torch.nan], dtype=torch.float64)
    assert NonFinite()(state).tolist() == [False, True, True, True]


def test_temperature_matches_ase_with_3n_minus_3_dof(ethanol):
    state = make_state([ethanol.atoms] * 2)
    generator = torch.Generator().manual_seed(0)
    state.velocities = 0.01 * torch.randn(state.positions.shape, generator=generator).double()
    atoms = ethanol.atoms.copy()
    atoms.set_velocities(state.velocities[:9].numpy() / ase_units.fs)  # Å/fs to ASE units
    n = len(atoms)
    expected = atoms.get_temperature() * 3 * n / (3 * n - 3)  # ASE counts 3N dof
    # ASE's k_B is CODATA 2014, ours CODATA 2018: they differ by 3.4e-7 relative
    assert temperature(state)[0].item() == pytest.approx(expected, rel=1e-6)


def test_rdf_deviation_fires_at_window_end_and_restores_from_state_dict(water):
    rng = np.random.default_rng(1)
    good = [water.atoms.copy() for _ in range(3)]
    for atoms in good:
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    squeezed = water.atoms.copy()
    squeezed.positions = 0.3 * squeezed.positions  # collapsed into a corner of the box
    r_max = 3.0
    positions = torch.tensor(np.stack([a.positions for a in good]))
    _, reference = radial_distribution(
        positions, water.atoms.numbers, water.atoms.cell[:], r_max=r_max
    )
    reference = {pair: g.mean(0) for pair, g in reference.items()}

    def run(criterion, frames, start_fs):
        verdicts = []
        for k, atoms in enumerate(frames):
            state = make_state([atoms, squeezed])
            state.time_fs = start_fs + 500.0 * k
            verdicts.append(criterion(state).tolist())
        return verdicts

    criterion = RDFDeviation(reference, window_fs=1000.0)
    assert criterion.r_max == pytest.approx(r_max)
    assert run(criterion, good[:2], 0.0) == [[False, False], [False, False]]
    saved = criterion.state_dict()
    assert run(criterion, good[2:], 1000.0) == [[False, True]]
    assert criterion.deviation[0].item() == pytest.approx(0.0, abs=1e-9)  # same frames as ref
    assert criterion.deviation[1].item() > 3.0

    restored = RDFDeviation(reference, window_fs=1000.0)
    restored.load_state_dict(saved)
    assert run(restored, good[2:], 1000.0) == [[False, True]]
    torch.testing.assert_close(restored.deviation, criterion.deviation)


def test_contacts_count_nonbonded_pairs_inside_a_molecule_only_on_request(water):
    folded = water.atoms.copy()
    o, h1, h2 = 0, 1, 2  # molecule 0: its two H atoms brought 1.0 Å apart, O–H bonds kept
    middle = 0.5 * (folded.positions[h1] + folded.positions[h2])
    axis = folded.positions[h2] - folded.positions[h1]
    axis /= np.linalg.norm(axis)
    for h, sign in ((h1, -1), (h2, 1)):
        folded.positions[h] = middle + sign * 0.5 * axis
    bond_length = np.linalg.norm(folded.positions[h1] - folded.positions[o])
    folded.positions[[h1, h2]] = folded.positions[o] + bond_length * (
        folded.positions[[h1, h2]] - folded.positions[o]
    ) / np.linalg.norm(folded.positions[[h1, h2]] - folded.positions[o], axis=1, keepdims=True)
    state = make_state([water.atoms, folded])
    h_h = np.linalg.norm(folded.positions[h1] - folded.positions[h2])
    assert h_h < 1.2
    between = MinNonbondedDistance(water.molecule_index)
    nonbonded = MinNonbondedDistance(water.molecule_index, bonds=water.bonds)
    assert between(state).tolist() == [False, False]
    assert nonbonded(state).tolist() == [False, True]
    assert nonbonded.values(state)[1].item() == pytest.approx(h_h, abs=1e-9)
    # the bonded O–H pairs (0.96–1.0 Å) never count
    assert nonbonded.values(state)[0].item() > 1.4


def test_observables_accept_a_state_with_interleaved_replicas(ethanol, water):
    replicas = [ethanol.atoms, stretched(ethanol.atoms, ethanol.bonds[0], 0.4)]
    frames = torch.tensor(np.stack([a.positions for a in replicas]))
    _, h_state = distance_histogram_h_r(make_state(replicas, interleave=True), r_max=6.0)
    torch.testing.assert_close(h_state, distance_histogram_h_r(frames, r_max=6.0)[1])

    boxes = [water.atoms, water.atoms.copy()]
    boxes[1].positions[0] += 0.2
    positions = torch.tensor(np.stack([a.positions for a in boxes]))
    _, expected = radial_distribution(
        positions, water.atoms.numbers, water.atoms.cell[:], r_max=3.0
    )
    _, got = radial_distribution(make_state(boxes, interleave=True), r_max=3.0)
    for pair, g in expected.items():
        torch.testing.assert_close(got[pair], g)
