"""Backbone dihedrals and the quadtree coverage of the Ramachandran plane (alanine dipeptide)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from scipy.spatial.transform import Rotation

from stablemd.analysis.ramachandran import (
    dihedral_angles,
    occupied_cells,
    phi_psi,
    quadtree_coverage,
    ramachandran_coverage,
    ramachandran_plot,
    wrap_degrees,
)
from stablemd.core.errors import InputError
from stablemd.systems import get_system


@pytest.fixture(scope="module")
def dipeptide():
    return get_system("alanine-dipeptide")


def rattled_frames(atoms: Atoms, n: int, scale: float = 0.15, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        moved = atoms.copy()
        moved.positions += rng.normal(scale=scale, size=moved.positions.shape)
        frames.append(moved)
    return frames


def test_dihedral_of_a_built_quadruple_is_its_construction_angle():
    """i = x̂, j = 0, k = ẑ, l = x̂ turned by t about ẑ: the IUPAC dihedral is t (looking along
    j → k, i turns clockwise by t onto l), wrapped into [−180, 180)."""
    t = np.array([0.0, 30.0, 90.0, 179.0, 180.0, 200.0, -100.0, -179.5])
    rad = np.radians(t)
    l_atoms = np.stack([np.cos(rad), np.sin(rad), np.ones_like(rad)], axis=1)
    positions = np.zeros((len(t), 4, 3))
    positions[:, 0] = (1.0, 0.0, 0.0)
    positions[:, 2] = (0.0, 0.0, 1.0)
    positions[:, 3] = l_atoms
    expected = (t + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(dihedral_angles(positions, (0, 1, 2, 3)), expected, atol=1e-9)


def test_dihedrals_agree_with_ase_get_dihedral(dipeptide):
    frames = rattled_frames(dipeptide.atoms, 20, scale=0.3)
    rng = np.random.default_rng(1)
    for _ in range(5):
        quad = tuple(int(i) for i in rng.choice(len(dipeptide.atoms), 4, replace=False))
        ours = dihedral_angles(frames, quad)
        theirs = np.array([a.get_dihedral(*quad) for a in frames])  # ASE: [0, 360)
        np.testing.assert_allclose(np.mod(ours, 360.0), theirs, atol=1e-9)
        assert (ours >= -180).all() and (ours < 180).all()


def test_phi_psi_are_invariant_under_rotation_and_translation_and_mirror_to_minus(dipeptide):
    frames = rattled_frames(dipeptide.atoms, 8, scale=0.2, seed=2)
    phi, psi = phi_psi(frames, dipeptide)
    rotations = Rotation.random(len(frames), random_state=3).as_matrix()
    shift = np.random.default_rng(4).normal(scale=5.0, size=(len(frames), 1, 3))
    moved = np.stack([a.positions @ r.T for a, r in zip(frames, rotations, strict=True)]) + shift
    phi_moved, psi_moved = phi_psi(moved, dipeptide)
    np.testing.assert_allclose(phi_moved, phi, atol=1e-9)
    np.testing.assert_allclose(psi_moved, psi, atol=1e-9)
    # a mirror image (D-alanine) has the opposite dihedrals
    mirrored = moved * np.array([1.0, 1.0, -1.0])
    phi_mirror, psi_mirror = phi_psi(mirrored, dipeptide)
    np.testing.assert_allclose(wrap_degrees(phi_mirror + phi), 0.0, atol=1e-9)
    np.testing.assert_allclose(wrap_degrees(psi_mirror + psi), 0.0, atol=1e-9)


def test_periodic_frames_take_the_minimum_image(dipeptide):
    """A molecule cut by the box walls (atoms wrapped) has the dihedrals of the whole one."""
    atoms = dipeptide.atoms.copy()
    atoms.cell = [9.0, 9.0, 9.0]
    atoms.pbc = True
    whole = phi_psi([atoms], dipeptide)
    atoms.wrap()  # the centred molecule spans the origin: wrapping cuts it
    assert np.ptp(atoms.positions[:, 0]) > 6.0
    np.testing.assert_allclose(phi_psi([atoms], dipeptide), whole, atol=1e-9)


@pytest.mark.parametrize("depth", [0, 1, 3, 5])
def test_one_point_covers_one_cell_of_its_depth(depth):
    assert quadtree_coverage([-60.0], [-45.0], depth) == 4.0**-depth
    # repeating it, or adding a point of the same cell, covers nothing more
    width = 360.0 / 2**depth
    inside = -60.0 - ((-60.0 + 180.0) % width) + 0.5 * width  # the centre of that cell
    assert quadtree_coverage([-60.0, -60.0, inside], [-45.0, -45.0, -45.0], depth) == 4.0**-depth


def test_points_on_every_cell_cover_the_plane_and_a_finer_tree_a_quarter():
    n = 2**5
    centres = -180.0 + (np.arange(n) + 0.5) * 360.0 / n
    phi, psi = (x.ravel() for x in np.meshgrid(centres, centres))
    assert quadtree_coverage(phi, psi, 5) == 1.0
    assert quadtree_coverage(phi, psi, 6) == 0.25  # one point in each 2 × 2 block of children
    assert quadtree_coverage(phi[::2], psi[::2], 5) == 0.5
    assert len(occupied_cells(phi, psi, 5)) == n * n


def test_cells_are_periodic_and_half_open():
    """180° and −180° (and 540°) are one angle, in one cell; a cell's lower edge belongs to it."""
    cells = occupied_cells([180.0, -180.0, 540.0, 0.0], [0.0, 0.0, 0.0, 180.0], 5)
    np.testing.assert_array_equal(cells, [[0, 16], [16, 0]])  # (column of φ, row of ψ)
    assert quadtree_coverage([180.0, -180.0], [-180.0, 180.0], 5) == 1 / 1024
    edge = -180.0 + 360.0 / 32  # lower edge of column 1
    np.testing.assert_array_equal(occupied_cells([edge, edge - 1e-9], [0.0, 0.0], 5)[:, 0], [0, 1])


def test_coverage_metric_of_a_system(dipeptide):
    frames = rattled_frames(dipeptide.atoms, 5, scale=0.3, seed=5)
    metric = ramachandran_coverage(frames, dipeptide)
    phi, psi = phi_psi(frames, dipeptide)
    assert metric == {"coverage": quadtree_coverage(phi, psi), "n": 5, "depth": 5}
    assert 1 / 1024 <= metric["coverage"] <= 5 / 1024
    ethanol = get_system("ethanol")
    assert ramachandran_coverage([ethanol.atoms], ethanol) is None


def test_ramachandran_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(6)
    sampled = (rng.uniform(-180, 180, 500), rng.uniform(-180, 180, 500))
    labelled = (sampled[0][:20], sampled[1][:20])
    path = ramachandran_plot(sampled, labelled, tmp_path / "r.png", landmarks={"C7eq": (-82, 73)})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert not (tmp_path / "r.png.partial").exists()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: dihedral_angles(np.zeros((2, 4, 3)), (0, 1, 2, 3)), "collinear"),
        (lambda s: phi_psi([], s), "no frames"),
        (lambda s: dihedral_angles([s.atoms], (0, 1, 1, 3)), "4 distinct atoms of 22"),
        (lambda s: dihedral_angles([s.atoms], (0, 1, 2, 22)), "4 distinct atoms of 22"),
        (lambda s: phi_psi(np.full((3, 22, 3), np.nan), s), "frame 0: non-finite positions"),
        (lambda s: phi_psi([s.atoms[:21]], s), "frames have 21 atoms, the alanine-dipeptide"),
        (lambda s: phi_psi([s.atoms], get_system("ethanol")), "'ethanol' names no phi"),
        (lambda s: quadtree_coverage([0.0, np.inf], [0.0, 0.0]), "non-finite"),
        (lambda s: quadtree_coverage([0.0], [0.0, 1.0]), "1 φ angles but 2 ψ angles"),
        (lambda s: quadtree_coverage([0.0], [0.0], depth=-1), "depth must be a whole number"),
    ],
)
def test_bad_inputs_are_refused(dipeptide, call, message):
    with pytest.raises(InputError, match=message):
        call(dipeptide)


def test_explore_step_metrics_cover_the_labelled_set_and_the_pool(dipeptide, tmp_path):
    from types import SimpleNamespace

    from ase.calculators.singlepoint import SinglePointCalculator

    from stablemd.data.database import write_frames
    from stablemd.explore.active_learning.coverage import ramachandran_metrics

    assert ramachandran_metrics(get_system("ethanol")) is None  # no φ, ψ: no hook
    frames = rattled_frames(dipeptide.atoms, 6, scale=0.4)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
    write_frames(tmp_path / "train.db", frames[:2])
    pool = SimpleNamespace(candidates=[SimpleNamespace(atoms=a) for a in frames[2:]])
    hook = ramachandran_metrics(dipeptide)
    step = tmp_path / "step-001"
    step.mkdir()
    values = hook(
        SimpleNamespace(step=1, directory=step, train_db=tmp_path / "train.db", pool=pool)
    )
    assert values["labelled"] == ramachandran_coverage(frames[:2], dipeptide)
    assert values["pool"] == ramachandran_coverage(frames[2:], dipeptide)
    assert (values["labelled"]["n"], values["pool"]["n"]) == (2, 4)
    assert (step / "ramachandran.png").read_bytes().startswith(b"\x89PNG")
    start = tmp_path / "step-000"
    values = hook(
        SimpleNamespace(step=0, directory=start, train_db=tmp_path / "train.db", pool=None)
    )
    assert "pool" not in values and not start.exists()  # no pool, nothing to draw
