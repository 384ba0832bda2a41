"""Jacobian asymmetry λ and closed-loop work: zero for conservative forces, the closed forms of
analytic non-conservative fields, invariance under rotations and permutations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import molecule
from md_support import rattled, single_thread  # noqa: F401
from scipy.spatial.transform import Rotation

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.diagnose.conservation import (
    closed_loop_work,
    force_jacobians,
    jacobian_asymmetry,
    rotation_deformation_loop,
)
from stablemd.models.painn import PaiNN

pytestmark = pytest.mark.usefixtures("single_thread")

Z_CROSS = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)


def tiny_painn(seed: int = 0) -> PaiNN:
    torch.manual_seed(seed)
    return PaiNN([1, 6, 8], cutoff=5.0, n_features=8, n_interactions=1).double().eval()


def ethanol():
    return molecule("CH3CH2OH")


class CyclicCurl:
    """f_i = −k r_i + c ẑ × r_{i+1} (the next atom of the same structure, cyclically).

    J_ii = −k I, J_{i,i+1} = c Z (Z = [ẑ]×), every other block zero; by hand, with n ≥ 3 atoms:
    ‖J‖² = n(3k² + 2c²); the antisymmetric part has blocks ±cZ/2 at (i, i+1) and (i+1, i), so
    ‖J_anti‖² = n c², λ = c / sqrt(3k² + 2c²) for the structure and for every atom (its rows
    and its columns of J each hold −kI and cZ, its rows of J_anti two blocks cZ/2), and each
    coupled pair has norm sqrt((2c² + 0)/2) = c and antisymmetric norm c/√2: λ_ij = 1/√2."""

    def __init__(self, k: float, c: float):
        self.k, self.c = k, c

    def __call__(self, batch: Batch) -> torch.Tensor:
        counts = batch.atoms_per_system
        starts = (torch.cumsum(counts, 0) - counts)[batch.system_index]
        local = torch.arange(batch.n_atoms) - starts
        following = starts + (local + 1) % counts[batch.system_index]
        r = batch.positions
        return -self.k * r + self.c * r[following] @ Z_CROSS.T


class Swirl:
    """f = c ẑ × r on every atom: a pure curl, c eV/Å²."""

    def __init__(self, c: float):
        self.c = c

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.c * batch.positions @ Z_CROSS.T


class Harmonic:
    """f = −k r: conservative (E = ½ k Σ r²)."""

    def __call__(self, batch: Batch) -> torch.Tensor:
        return -0.7 * batch.positions


def test_conservative_model_has_symmetric_jacobian():
    structures = rattled(ethanol(), 3, scale=0.05)
    result = jacobian_asymmetry(tiny_painn(), structures, "conservative")
    assert result.structure_lambda.shape == (3,)
    assert (result.structure_lambda <= 1e-10).all(), result.structure_lambda
    assert (result.atom_lambda <= 1e-9).all()
    assert result.pair_lambda.max() <= 1e-9
    assert (result.jacobian_norm > 1e-3).all()  # a real Jacobian, not an empty one


def test_direct_head_is_not_conservative():
    result = jacobian_asymmetry(tiny_painn(), [ethanol()], "direct")
    assert result.overall_lambda > 0.05
    # ‖(X − Yᵀ)/2‖² ≤ (‖X‖² + ‖Y‖²)/2: no atom's or pair's λ exceeds 1 (the rows of H
    # alone would give 1.19 here).
    assert 0.2 < result.atom_lambda.max() <= 1 and result.pair_lambda.max() <= 1


def test_analytic_field_lambda_matches_closed_form():
    k, c = 1.3, 0.4
    expected = c / math.sqrt(3 * k**2 + 2 * c**2)
    water, ethanol_ = molecule("H2O"), ethanol()  # two sizes in one batch
    result = jacobian_asymmetry(CyclicCurl(k, c), [water, ethanol_])
    np.testing.assert_allclose(result.structure_lambda, expected, rtol=1e-12)
    np.testing.assert_allclose(result.atom_lambda, expected, rtol=1e-12)
    assert result.overall_lambda == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(result.pair_lambda, 1 / math.sqrt(2), rtol=1e-12)
    np.testing.assert_allclose(result.pair_jacobian_norm, c, rtol=1e-12)
    # The coupled pairs are (i, i+1) and the wrap-around (0, n−1), and nothing else.
    for s, n in enumerate((3, 9)):
        mine = result.pair_structure == s
        found = set(zip(result.pair_i[mine].tolist(), result.pair_j[mine].tolist(), strict=True))
        assert found == {(i, i + 1) for i in range(n - 1)} | {(0, n - 1)}
    atoms = ethanol_
    mine = result.pair_structure == 1
    i, j = result.pair_i[mine], result.pair_j[mine]
    distances = np.linalg.norm(atoms.positions[i] - atoms.positions[j], axis=1)
    np.testing.assert_allclose(result.pair_distance[mine], distances, rtol=1e-12)


class OneWay:
    """f_0 = c ẑ × Σ_{j>0} r_j, f_j = −k r_j (one structure): atom 0 feels the others, nobody
    feels atom 0. By hand: the rows of atom 0 hold n − 1 blocks cZ (2c² each) and its columns
    nothing, J_anti's rows of 0 hold n − 1 blocks cZ/2, so λ_0 = sqrt((n−1)c²/2 /
    ((n−1)2c²/2)) = 1/√2; atom j > 0 has rows −kI, columns −kI and cZ, one block cZ/2 in
    J_anti: λ_j = sqrt(c²/2 / ((3k² + 3k² + 2c²)/2)) = c / sqrt(6k² + 2c²)."""

    def __init__(self, k: float, c: float):
        self.k, self.c = k, c

    def __call__(self, batch: Batch) -> torch.Tensor:
        r = batch.positions
        f = -self.k * r
        first = self.c * r[1:].sum(0) @ Z_CROSS.T
        return torch.cat([first[None], f[1:]])


def test_atom_lambda_counts_rows_and_columns():
    k, c = 0.8, 0.5
    result = jacobian_asymmetry(OneWay(k, c), [ethanol()])
    expected = [1 / math.sqrt(2)] + [c / math.sqrt(6 * k**2 + 2 * c**2)] * 8
    np.testing.assert_allclose(result.atom_lambda, expected, rtol=1e-12)


def test_jacobian_of_batch_equals_single_structures():
    structures = [molecule("H2O"), ethanol(), molecule("CH4")]
    model = tiny_painn()
    together = force_jacobians(model, structures, "direct")
    for structure, jac in zip(structures, together, strict=True):
        alone = force_jacobians(model, [structure], "direct")[0]
        torch.testing.assert_close(jac, alone, rtol=1e-12, atol=1e-12)


def test_lambda_is_invariant_under_rotation_and_permutation():
    model = tiny_painn()
    atoms = rattled(ethanol(), 1, scale=0.05, seed=3)[0]
    turned = atoms.copy()
    turned.positions = Rotation.random(random_state=1).apply(atoms.positions) + [0.3, -1.0, 2.0]
    order = np.random.default_rng(2).permutation(len(atoms))
    shuffled = atoms[order]
    base, rotated, permuted = (
        jacobian_asymmetry(model, [a], "direct") for a in (atoms, turned, shuffled)
    )
    assert base.structure_lambda[0] > 0.05
    np.testing.assert_allclose(rotated.structure_lambda, base.structure_lambda, rtol=1e-10)
    np.testing.assert_allclose(rotated.atom_lambda, base.atom_lambda, rtol=1e-9)
    np.testing.assert_allclose(permuted.structure_lambda, base.structure_lambda, rtol=1e-10)
    np.testing.assert_allclose(permuted.atom_lambda, base.atom_lambda[order], rtol=1e-9)

    def by_pair(result, names):
        return {
            tuple(sorted((names[i], names[j]))): value
            for i, j, value in zip(result.pair_i, result.pair_j, result.pair_lambda, strict=True)
        }

    original = by_pair(base, np.arange(len(atoms)))
    relabelled = by_pair(permuted, order)
    assert original.keys() == relabelled.keys()
    for key, value in original.items():
        assert relabelled[key] == pytest.approx(value, rel=1e-9)


def test_loop_tangents_are_the_derivative_of_the_path():
    path = rotation_deformation_loop(ethanol(), n_points=2000, amplitude_A=0.1, turns=1)
    dt = 2 * np.pi / path.n_points
    central = (np.roll(path.positions, -1, 0) - np.roll(path.positions, 1, 0)) / (2 * dt)
    scale = np.abs(path.tangents).max()
    assert np.abs(central - path.tangents).max() < 1e-4 * scale
    assert np.abs(path.positions[0] - ethanol().positions).max() < 1e-12


def test_quadrature_error_estimate_bounds_the_error():
    """At a deformation the points barely resolve, a conservative model's W is pure
    quadrature error, and the half-rule estimate is above it."""
    path = rotation_deformation_loop(ethanol(), n_points=500, amplitude_A=0.05)
    result = closed_loop_work(tiny_painn(), path, "conservative")
    assert abs(result.work_eV) > 1e-7  # the error is visible here ...
    assert result.quadrature_error_eV > abs(result.work_eV)  # ... and the estimate covers it


def test_loop_work_does_not_depend_on_how_many_points_a_pass_holds():
    path = rotation_deformation_loop(ethanol(), n_points=40)
    model = tiny_painn()
    together = closed_loop_work(model, path, "direct")  # all 40 points in one pass
    for atoms in (9, 50):  # one point a pass; 5 points a pass
        apart = closed_loop_work(model, path, "direct", atoms_per_pass=atoms)
        np.testing.assert_allclose(apart.cumulative_work_eV, together.cumulative_work_eV,
                                   rtol=1e-10, atol=1e-14)  # fmt: skip


def test_rotational_field_work_around_a_circle_is_two_pi_r_squared_c():
    from ase import Atoms

    c, radius = 0.37, 1.6
    atom = Atoms("H", positions=[[radius, 0.0, 0.0]])
    path = rotation_deformation_loop(atom, n_points=64, center=(0, 0, 0), amplitude_A=0.0)
    result = closed_loop_work(Swirl(c), path)
    assert result.work_eV == pytest.approx(2 * math.pi * radius**2 * c, rel=1e-12)
    assert result.path_length_A == pytest.approx(2 * math.pi * radius, rel=1e-12)
    assert result.cumulative_work_eV[-1] == pytest.approx(result.work_eV, rel=1e-12)


def test_loop_work_of_conservative_forces_vanishes():
    path = rotation_deformation_loop(ethanol(), n_points=1000)
    analytic = closed_loop_work(Harmonic(), path)
    assert abs(analytic.work_eV) < 1e-12 * analytic.absolute_work_eV
    model = tiny_painn()
    conservative = closed_loop_work(model, path, "conservative")
    assert conservative.absolute_work_eV > 1e-2
    assert abs(conservative.work_eV) < 1e-10 * conservative.absolute_work_eV
    direct = closed_loop_work(model, path, "direct")
    assert abs(direct.work_eV) > 0.1 * direct.absolute_work_eV
    assert direct.quadrature_error_eV < 1e-8 * abs(direct.work_eV)
    assert direct.work_per_atom_eV == pytest.approx(direct.work_eV / 9, rel=1e-14)


def test_bad_inputs_are_refused():
    model = tiny_painn()
    with pytest.raises(InputError, match="unknown forces"):
        jacobian_asymmetry(model, [ethanol()], "both")
    with pytest.raises(InputError, match="zero length"):
        rotation_deformation_loop(ethanol(), turns=0, amplitude_A=0.0)
    with pytest.raises(InputError, match="no structures"):
        jacobian_asymmetry(model, [])
