"""Observables and temperature reweighting against analytic answers and ASE's own tools."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.geometry import find_mic
from ase.geometry.rdf import get_rdf
from md_support import rattled
from scipy.spatial.distance import pdist

from stablemd.analysis import dynamics, geometry, structure
from stablemd.analysis.reweighting import (
    effective_sample_size,
    reweight,
    reweighting_weights,
    weighted_average,
)
from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K

ETHANOL = molecule("CH3CH2OH")


def frames_of(atoms_list) -> torch.Tensor:
    return torch.tensor(np.stack([a.positions for a in atoms_list]))


# --- periodic geometry ------------------------------------------------------------------------


TRICLINIC = [[5.0, 0, 0], [2.0, 4.5, 0], [1.0, 1.5, 4.0]]


@pytest.mark.parametrize(
    "cell, pbc",
    [
        (np.diag([5.0, 6.0, 7.0]), [True, True, True]),
        (TRICLINIC, [True, True, True]),
        ([[5.0, 0, 0], [1.5, 4.0, 0], [0, 0, 0]], [True, True, False]),
        ([[5.0, 0, 0.5], [1.5, 4.0, 0.3], [0.5, 0.3, 9.0]], [True, False, True]),
        ([[5.0, 0, 0.5], [1.5, 4.0, 0.3], [0.5, 0.3, 9.0]], [False, True, False]),
    ],
)
def test_minimum_image_is_the_shortest_lattice_image(cell, pbc):
    cell = np.asarray(cell, dtype=float)
    vectors = np.random.default_rng(0).normal(scale=6.0, size=(500, 3))
    got = geometry.minimum_image(
        torch.tensor(vectors), torch.tensor(cell), torch.tensor(pbc)
    ).numpy()
    # the shift is a lattice vector of the periodic rows ...
    periodic = cell[np.asarray(pbc)]
    n = np.linalg.lstsq(periodic.T, (got - vectors).T, rcond=None)[0]
    np.testing.assert_allclose(n, np.round(n), atol=1e-9)
    np.testing.assert_allclose(n.T @ periodic, got - vectors, atol=1e-9)
    # ... and no image within ±7 cells is shorter (brute force)
    grid = np.array(list(itertools.product(range(-7, 8), repeat=len(periodic))))
    shortest = np.linalg.norm(vectors[:, None] + grid @ periodic, axis=-1).min(1)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), shortest, atol=1e-12)
    if all(pbc):
        np.testing.assert_allclose(got, find_mic(vectors, cell, True)[0], atol=1e-12)


# --- h(r) -------------------------------------------------------------------------------------


def test_h_r_hard_histogram_matches_numpy_and_smeared_is_normalised():
    frames = rattled(ETHANOL, 4)
    positions = frames_of(frames)
    r, h = structure.distance_histogram_h_r(positions, r_max=6.0, dr=0.05, sigma=0.0)
    for k, atoms in enumerate(frames):
        distances = pdist(atoms.positions)
        counts, edges = np.histogram(distances, bins=120, range=(0.0, 6.0))
        np.testing.assert_allclose(h[k].numpy(), counts / (len(distances) * 0.05), atol=1e-12)
    np.testing.assert_allclose(r.numpy(), 0.5 * (edges[1:] + edges[:-1]), atol=1e-12)
    _, smeared = structure.distance_histogram_h_r(positions, r_max=10.0)  # METHODS: dr 0.02, σ 0.01
    np.testing.assert_allclose(smeared.sum(-1).numpy() * 0.02, 1.0, atol=1e-9)


def test_h_r_is_invariant_and_differentiable():
    positions = frames_of(rattled(ETHANOL, 2)).requires_grad_(True)
    _, h = structure.distance_histogram_h_r(positions, r_max=6.0)
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))[0]
    moved = positions.detach() @ rotation.T + torch.tensor([1.0, -2.0, 3.0])
    moved = moved[:, torch.randperm(positions.shape[1])]
    _, h_moved = structure.distance_histogram_h_r(moved, r_max=6.0)
    torch.testing.assert_close(h_moved, h.detach(), atol=1e-9, rtol=0)
    weighted = (h * torch.linspace(0, 1, h.shape[-1])).sum()
    (gradient,) = torch.autograd.grad(weighted, positions, retain_graph=True)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    small = positions.detach()[:1, :4].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p: structure.distance_histogram_h_r(p, r_max=4.0, dr=0.05, sigma=0.04)[1], (small,)
    )


# --- RDF --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "crystal, r_max",
    [
        (bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2), 5.5),
        (bulk("Cu", "fcc", a=3.6).repeat(5), 4.0),  # triclinic primitive cell
    ],
)
def test_rdf_matches_ase_get_rdf(crystal, r_max):
    crystal.rattle(0.05, seed=1)
    positions = torch.tensor(crystal.positions)[None]
    r, rdfs = structure.radial_distribution(
        positions, crystal.numbers, crystal.cell[:], r_max=r_max, sigma=0.0
    )
    assert set(rdfs) == set(structure.element_pairs(crystal.numbers))
    for (a, b), g in rdfs.items():
        expected, rr = get_rdf(crystal, r_max, len(r), elements=(a, b))
        np.testing.assert_allclose(g[0].numpy(), expected, atol=1e-9)
        np.testing.assert_allclose(r.numpy(), rr, atol=1e-12)


def test_rdf_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(0)
    length, n_atoms = 15.0, 500
    positions = torch.tensor(rng.uniform(0, length, size=(6, n_atoms, 3)))
    numbers = np.where(np.arange(n_atoms) < 250, 1, 8)
    r, rdfs = structure.radial_distribution(
        positions, numbers, np.eye(3) * length, r_max=7.0, dr=0.1
    )
    far = r > 3.0
    for (a, b), g in rdfs.items():
        mean = g.mean(0)[far]
        expected = (250 - 1) / 250 if a == b else 1.0
        assert mean.mean().item() == pytest.approx(expected, abs=0.01)
        assert (mean - expected).abs().max() < 0.15


def test_rdf_rejects_small_cells_and_molecules():
    box = torch.tensor(bulk("Cu", "fcc", a=3.6, cubic=True).positions)[None]
    with pytest.raises(InputError, match="half the cell height"):
        structure.radial_distribution(box, [29] * 4, np.eye(3) * 3.6, r_max=2.0)
    with pytest.raises(InputError, match="periodic"):
        structure.radial_distribution(box, [29] * 4, r_max=1.0)


# --- bonds and angles -------------------------------------------------------------------------


def test_bond_lengths_and_angles_match_ase_through_the_boundary():
    water = molecule("H2O", vacuum=3.0)
    water.pbc = True
    water.positions[1] += water.cell[0]  # an H one box length away
    bonds = np.array([[0, 1], [0, 2]])
    positions = torch.tensor(water.positions)[None]
    lengths = geometry.bond_lengths(positions, bonds, water.cell[:], water.pbc)
    expected = [water.get_distance(0, 1, mic=True), water.get_distance(0, 2, mic=True)]
    np.testing.assert_allclose(lengths[0].numpy(), expected, atol=1e-12)
    triplets = geometry.angle_triplets(bonds)
    assert triplets.tolist() == [[1, 0, 2]]
    angle = geometry.bond_angles(positions, triplets, water.cell[:], water.pbc)
    assert angle.item() == pytest.approx(water.get_angle(1, 0, 2, mic=True), abs=1e-9)


def test_angle_triplets_and_distributions_of_ethanol():
    from stablemd.systems.system import find_bonds

    bonds = find_bonds(ETHANOL)
    degree = np.bincount(bonds.ravel(), minlength=len(ETHANOL))
    triplets = geometry.angle_triplets(bonds)
    assert len(triplets) == sum(d * (d - 1) // 2 for d in degree)
    frames = frames_of(rattled(ETHANOL, 3))
    angles = geometry.bond_angles(frames, triplets)
    i, j, k = triplets[5].tolist()
    assert angles[0, 5].item() == pytest.approx(
        Atoms(ETHANOL.numbers, frames[0].numpy()).get_angle(i, j, k), abs=1e-9
    )
    theta, density = structure.angular_distribution(frames, triplets)
    assert theta[0].item() == pytest.approx(0.5)
    np.testing.assert_allclose(density.sum(-1).numpy() * 1.0, 1.0, atol=1e-9)
    r, lengths = structure.bond_length_distribution(frames, bonds, r_min=0.5, r_max=2.0)
    np.testing.assert_allclose(lengths.sum(-1).numpy() * 0.02, 1.0, atol=1e-9)


# --- dynamics ---------------------------------------------------------------------------------


def test_vacf_of_harmonic_motion_is_a_cosine():
    n_atoms, n_frames, omega, dt = 12, 400, 0.07, 1.0
    phases = 2 * np.pi * np.arange(n_atoms) / n_atoms  # evenly spaced: the atom average is exact
    t = dt * np.arange(n_frames)
    velocities = np.zeros((n_frames, n_atoms, 3))
    velocities[..., 0] = 2.0 * np.cos(omega * t[:, None] + phases[None, :])
    c = dynamics.vacf(torch.tensor(velocities), window=100)
    np.testing.assert_allclose(c.numpy(), np.cos(omega * dt * np.arange(100)), atol=1e-10)
    raw = dynamics.vacf(torch.tensor(velocities), window=100, normalize=False)  # ⟨v·v⟩ = 4/2
    np.testing.assert_allclose(raw.numpy(), 2.0 * c.numpy(), atol=1e-10)
    with pytest.raises(InputError, match="window"):
        dynamics.vacf(torch.tensor(velocities[:50]), window=100)


def test_msd_matches_direct_loop_and_ballistic_motion():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(30, 2, 5, 3)))  # [frames, replicas, atoms, 3]
    msd = dynamics.mean_squared_displacement(x, remove_drift=False)
    direct = torch.stack(
        [
            ((x[m:] - x[: len(x) - m]) ** 2).sum(-1).mean(-1).mean(0)
            for m in range(len(x))  # average over the F − m origins
        ],
        dim=-1,
    )
    torch.testing.assert_close(msd, direct, atol=1e-10, rtol=0)

    velocity = torch.tensor([0.01, -0.02, 0.005], dtype=torch.float64)  # Å/fs
    clock = 2.0 * torch.arange(50, dtype=torch.float64)  # fs
    ballistic = clock[:, None, None] * velocity + x[0, 0]  # MSD = |v|² t²
    msd = dynamics.mean_squared_displacement(ballistic, remove_drift=False)
    assert msd.shape == (50,)
    torch.testing.assert_close(msd, velocity.pow(2).sum() * clock**2, atol=1e-12, rtol=1e-9)


def test_random_walk_diffusivity_with_unwrapping():
    rng = np.random.default_rng(1)
    true_d, dt, length = 2.5e-4, 1.0, 8.0  # Å²/fs (water-like), fs between frames, box Å
    steps = rng.normal(scale=np.sqrt(2 * true_d * dt), size=(400, 300, 3))
    walk = torch.tensor(np.cumsum(steps, axis=0))
    wrapped = torch.remainder(walk, length)
    cell = np.eye(3) * length
    torch.testing.assert_close(
        dynamics.unwrap_positions(wrapped, cell) - wrapped[:1], walk - walk[:1]
    )
    lags = dt * torch.arange(1, 400, dtype=torch.float64)
    d = dynamics.mean_squared_displacement(wrapped, cell=cell)[..., 1:] / (6.0 * lags)
    estimate = d[..., 10:100].mean().item()
    assert estimate == pytest.approx(true_d, rel=0.05)
    assert dynamics.to_cm2_per_s(estimate) == pytest.approx(estimate * 0.1)


# --- reference observables --------------------------------------------------------------------


def test_reference_observables_average_over_frames():
    from stablemd.systems.system import find_bonds

    frames = rattled(ETHANOL, 5)
    bonds = find_bonds(ETHANOL)
    reference = structure.reference_observables(frames, bonds=bonds, r_max=6.0, chunk=2)
    _, h = structure.distance_histogram_h_r(frames_of(frames), r_max=6.0)
    torch.testing.assert_close(reference.h_r, h.mean(0))
    torch.testing.assert_close(
        reference.bond_lengths, geometry.bond_lengths(frames_of(frames), bonds).mean(0)
    )
    assert reference.rdf is None

    crystal = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat(2)
    boxes = rattled(crystal, 3)
    periodic = structure.reference_observables(boxes, chunk=2)  # r_max: half of the 11.28 Å box
    _, rdfs = structure.radial_distribution(
        frames_of(boxes), crystal.numbers, crystal.cell[:], r_max=5.64
    )
    assert periodic.rdf_r[-1].item() == pytest.approx(5.63)
    assert set(periodic.rdf) == {(11, 11), (11, 17), (17, 17)}
    torch.testing.assert_close(periodic.rdf[(11, 17)], rdfs[(11, 17)].mean(0))

    with pytest.raises(InputError, match="frame 1"):
        structure.reference_observables([ETHANOL, molecule("H2O")])


# --- temperature reweighting ------------------------------------------------------------------


def test_reweighting_a_harmonic_oscillator_to_another_temperature():
    rng = np.random.default_rng(0)
    spring, dof, n = 2.0, 30, 20000  # eV/Å², degrees of freedom, samples
    t1, t2 = 300.0, 330.0
    x = rng.normal(scale=np.sqrt(KB_EV_PER_K * t1 / spring), size=(n, dof))
    energies = 0.5 * spring * (x**2).sum(1)
    average, n_eff = reweight(torch.tensor(energies), torch.tensor(energies), t1, t2)
    weights = reweighting_weights(energies, t1, t2)
    spread = np.sqrt((weights.numpy() * (energies - average.item()) ** 2).sum())
    assert abs(average.item() - 0.5 * dof * KB_EV_PER_K * t2) < 4 * spread / np.sqrt(n_eff)
    assert 1.0 < n_eff.item() < n
    assert weights.sum().item() == pytest.approx(1.0)

    same = reweighting_weights(energies, t1, t1)
    assert effective_sample_size(same).item() == pytest.approx(n)
    torch.testing.assert_close(weighted_average(x, same), torch.tensor(x).mean(0))


def test_reweighting_is_stable_for_large_energies():
    energies = torch.tensor([1.0e5, 1.0e5 + 0.01, 1.0e5 + 0.02], dtype=torch.float64)
    weights = reweighting_weights(energies, 300.0, 600.0)
    assert torch.isfinite(weights).all()
    shifted = reweighting_weights(energies - 1.0e5, 300.0, 600.0)
    torch.testing.assert_close(weights, shifted)
    assert (weights[:-1] < weights[1:]).all()  # heating favours higher energies
