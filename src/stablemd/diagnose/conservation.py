"""Is a force field conservative? Two direct tests of the forces themselves.

- **Jacobian asymmetry** (Bigi, Langer & Ceriotti 2025, eq. for λ): with
  J_{iα,jβ} = ∂f_{iα}/∂r_{jβ} (eV/Å²) and J_anti = (J − Jᵀ)/2,
  λ = ‖J_anti‖_F / ‖J‖_F (dimensionless). Forces −∂E/∂r have a symmetric Jacobian (minus the
  Hessian), so λ = 0 to rounding; a non-conservative field has λ > 0. Reported per structure,
  per atom (the rows of atom i) and per pair of atoms against their distance r_ij.
- **Closed-loop work** W = ∮ Σ_j f_j · dr_j (eV) along a closed path of the atoms (the
  structure turned once about an axis while deformed smoothly and brought back): zero for
  every conservative field, whatever the path.

Nothing in ASE or PyTorch computes either, so they are written here. All numbers are float64;
a model in another precision is evaluated through a float64 copy.

A *force function* maps a :class:`~stablemd.core.batch.Batch` to forces [n_atoms, 3] eV/Å that
autograd can differentiate with respect to ``batch.positions``; :func:`force_function` makes one
from a saved model (``conservative``: −∂E/∂r, ``direct``: the direct-force head).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from stablemd.analysis.geometry import minimum_image
from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.md.forces import FORCE_KINDS
from stablemd.models.potential import Potential, predict

ForceFunction = Callable[[Batch], torch.Tensor]

_F64 = torch.float64


def force_function(potential: Potential, forces: str = "conservative") -> ForceFunction:
    """Forces [n_atoms, 3] eV/Å of a saved model as a differentiable function of a batch.

    ``forces``: ``conservative`` (−∂E/∂r, with the graph kept so that they can be differentiated
    again) or ``direct`` (the model's direct-force head). The model is used in float64 (a copy is
    made if it is in another precision).
    """
    if forces not in FORCE_KINDS:
        raise InputError(f"unknown forces {forces!r}; choose from {list(FORCE_KINDS)}")
    if forces == "direct" and not potential.supports_direct_forces:
        raise InputError(f"a {potential.kind} model has no direct-force head")
    if next(potential.parameters()).dtype != _F64:
        potential = copy.deepcopy(potential).double()
    potential = potential.eval()
    key = "forces" if forces == "conservative" else "direct_forces"

    def evaluate(batch: Batch) -> torch.Tensor:
        # create_graph: second derivatives of the energy, and the autograd (not the fused,
        # first-order-only) path of the model for the direct head too.
        return predict(potential, batch.to(_F64), ("energy", key), create_graph=True)[key]

    return evaluate


def _as_force_function(source: Potential | ForceFunction, forces: str) -> ForceFunction:
    return force_function(source, forces) if isinstance(source, Potential) else source


def _batch(structures: Sequence[Atoms]) -> Batch:
    if len(structures) == 0:
        raise InputError("no structures given")
    batch = Batch.from_atoms(list(structures), dtype=_F64)
    if not bool(torch.isfinite(batch.positions).all()):
        raise InputError("a structure has non-finite positions")
    return batch


def _finite(values: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(values).all()):
        raise InputError(f"the forces gave a non-finite {what}")
    return values


# ----------------------------------------------------------------------------------------------
# Jacobian asymmetry


@dataclass
class JacobianAsymmetry:
    """λ = ‖J_anti‖_F / ‖J‖_F of the force Jacobian, at three resolutions (float64 arrays).

    Per structure [n_structures]: ``structure_lambda``, ``jacobian_norm`` ‖J‖_F and
    ``antisymmetric_norm`` ‖J_anti‖_F (eV/Å²). ``overall_lambda``: the same ratio with the
    squared norms summed over all structures.

    Per atom [n_atoms of all structures, in order]: ``atom_structure`` (which structure),
    ``atom_numbers``, ``atom_lambda`` = ‖rows iα of J_anti‖ / sqrt((‖rows iα of J‖² +
    ‖columns iα of J‖²)/2): J_anti's rows of atom i hold J's columns of i too, so dividing by
    the rows alone could exceed 1 (untrained PaiNN direct head, ethanol: 1.19 for H); with both
    in the denominator it is at most 1 and the atoms' squared terms add up to the structure's.

    Per unordered pair i < j of one structure [n_pairs]: ``pair_structure``, ``pair_i``,
    ``pair_j`` (atom indices within the structure), ``pair_distance`` r_ij (Å, minimum image),
    ``pair_jacobian_norm`` = sqrt((‖J_ij‖² + ‖J_ji‖²)/2) and ``pair_antisymmetric_norm`` =
    ‖(J_ij − J_jiᵀ)/2‖ (eV/Å², blocks 3×3), and ``pair_lambda``, their ratio. Pairs whose two
    blocks are exactly zero (beyond the model's reach) are left out. The pair terms add up to
    the structure's norms with the diagonal blocks: ‖J‖² = Σ_i ‖J_ii‖² + 2 Σ_{i<j} (pair norm)².
    """

    structure_lambda: np.ndarray
    jacobian_norm: np.ndarray
    antisymmetric_norm: np.ndarray
    overall_lambda: float
    atom_structure: np.ndarray
    atom_numbers: np.ndarray
    atom_lambda: np.ndarray
    pair_structure: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray
    pair_distance: np.ndarray
    pair_jacobian_norm: np.ndarray
    pair_antisymmetric_norm: np.ndarray
    pair_lambda: np.ndarray


def force_jacobians(
    source: Potential | ForceFunction,
    structures: Sequence[Atoms],
    forces: str = "conservative",
) -> list[torch.Tensor]:
    """The Jacobian J [n_s, 3, n_s, 3] (eV/Å²) of each structure, J[i, α, j, β] = ∂f_iα/∂r_jβ.

    All structures are done together: row (k, α) of every structure's Jacobian comes from one
    vector–Jacobian product with ones on the k-th atom of each structure (their forces do not
    depend on each other's atoms), one backward pass after the other. Batching the 3·max(n_s)
    products (``is_grads_batched``) was slower per row on CPU (ethanol, 16 structures: 3.3×;
    a 64-water box: 2.6× with 12 rows a pass) and held a copy of the backward intermediates per
    row (all 576 rows of the water box at once: more than 24 GB).
    """
    evaluate = _as_force_function(source, forces)
    batch = _batch(structures)
    positions = batch.positions.detach().clone().requires_grad_(True)
    work = Batch(positions, batch.numbers, batch.system_index, batch.cell, batch.pbc)
    f = evaluate(work)
    if f.shape != positions.shape:
        raise InputError(f"forces have shape {list(f.shape)}, expected {list(positions.shape)}")
    _finite(f.detach(), "force")
    if not f.requires_grad:
        raise InputError("the forces do not depend on the positions through autograd")
    counts = batch.atoms_per_system
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(batch.n_atoms) - starts[batch.system_index]
    n_max = int(counts.max())
    # Row (k, α): ones at (local atom k, component α) of every structure.
    seeds = torch.zeros(n_max, 3, batch.n_atoms, 3, dtype=_F64)
    atoms = torch.arange(batch.n_atoms)
    for alpha in range(3):
        seeds[local, alpha, atoms, alpha] = 1.0
    rows = torch.stack([
        torch.autograd.grad(f, positions, seed, retain_graph=True)[0]
        for seed in seeds.reshape(3 * n_max, batch.n_atoms, 3)
    ]).reshape(n_max, 3, batch.n_atoms, 3)  # fmt: skip
    _finite(rows, "Jacobian")
    out = []
    for s in range(batch.n_systems):
        n, first = int(counts[s]), int(starts[s])
        out.append(rows[:n, :, first : first + n, :].detach().clone())
    return out


def jacobian_asymmetry(
    source: Potential | ForceFunction,
    structures: Sequence[Atoms],
    forces: str = "conservative",
) -> JacobianAsymmetry:
    """λ of ``source``'s forces at each of ``structures``: a saved model (with ``forces`` =
    ``conservative`` or ``direct``) or any differentiable force function."""
    jacobians = force_jacobians(source, structures, forces)
    structure_lambda, norms, anti_norms = [], [], []
    atom_structure, atom_numbers, atom_lambda = [], [], []
    pairs: dict[str, list] = {k: [] for k in ("s", "i", "j", "r", "norm", "anti")}
    for s, (atoms, jac) in enumerate(zip(structures, jacobians, strict=True)):
        n = len(atoms)
        anti = 0.5 * (jac - jac.permute(2, 3, 0, 1))
        block = jac.square().sum(dim=(1, 3))  # ‖J_ij‖² [n, n]
        anti_block = anti.square().sum(dim=(1, 3))
        total, total_anti = float(block.sum().sqrt()), float(anti_block.sum().sqrt())
        if total == 0.0:
            raise InputError(f"structure {s}: the forces do not change with the positions")
        norms.append(total)
        anti_norms.append(total_anti)
        structure_lambda.append(total_anti / total)
        rows, anti_rows = 0.5 * (block.sum(1) + block.sum(0)), anti_block.sum(1)
        if bool((rows == 0).any()):
            k = int(torch.nonzero(rows == 0)[0])
            raise InputError(f"structure {s}: the force on atom {k} does not change at all")
        atom_structure += [s] * n
        atom_numbers += atoms.numbers.tolist()
        atom_lambda += (anti_rows / rows).sqrt().tolist()
        i, j = torch.triu_indices(n, n, offset=1)
        pair_norm = (0.5 * (block[i, j] + block[j, i])).sqrt()
        keep = pair_norm > 0
        i, j = i[keep], j[keep]
        positions = torch.as_tensor(atoms.positions, dtype=_F64)
        cell = torch.as_tensor(np.asarray(atoms.cell), dtype=_F64)
        pbc = torch.as_tensor(atoms.pbc)
        vectors = minimum_image(positions[j] - positions[i], cell, pbc)
        pairs["s"] += [s] * len(i)
        pairs["i"] += i.tolist()
        pairs["j"] += j.tolist()
        pairs["r"] += vectors.norm(dim=1).tolist()
        pairs["norm"] += pair_norm[keep].tolist()
        pairs["anti"] += anti_block[i, j].sqrt().tolist()
    norms_a, anti_a = np.array(norms), np.array(anti_norms)
    pair_norm_a, pair_anti_a = np.array(pairs["norm"]), np.array(pairs["anti"])
    return JacobianAsymmetry(
        structure_lambda=np.array(structure_lambda),
        jacobian_norm=norms_a,
        antisymmetric_norm=anti_a,
        overall_lambda=float(np.sqrt((anti_a**2).sum() / (norms_a**2).sum())),
        atom_structure=np.array(atom_structure, dtype=np.int64),
        atom_numbers=np.array(atom_numbers, dtype=np.int64),
        atom_lambda=np.array(atom_lambda),
        pair_structure=np.array(pairs["s"], dtype=np.int64),
        pair_i=np.array(pairs["i"], dtype=np.int64),
        pair_j=np.array(pairs["j"], dtype=np.int64),
        pair_distance=np.array(pairs["r"], dtype=np.float64),
        pair_jacobian_norm=pair_norm_a,
        pair_antisymmetric_norm=pair_anti_a,
        pair_lambda=pair_anti_a / pair_norm_a if len(pair_norm_a) else np.zeros(0),
    )


# ----------------------------------------------------------------------------------------------
# Closed-loop work


@dataclass
class LoopPath:
    """A closed path r(t), t ∈ [0, 2π), sampled at ``n_points`` equally spaced t_m = m·2π/M.

    ``positions`` [M, n_atoms, 3] Å and ``tangents`` dr/dt [M, n_atoms, 3] Å per radian of t,
    exact (differentiated analytically); ``structure`` the atoms at t = 0 (numbers, cell, pbc).
    """

    positions: np.ndarray
    tangents: np.ndarray
    structure: Atoms

    @property
    def n_points(self) -> int:
        return int(self.positions.shape[0])

    @property
    def parameter(self) -> np.ndarray:
        """t_m [M], radians."""
        return 2 * np.pi * np.arange(self.n_points) / self.n_points


def _cross_matrix(axis: np.ndarray) -> np.ndarray:
    x, y, z = axis
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def rotation_deformation_loop(
    atoms: Atoms,
    n_points: int = 1000,
    axis: Sequence[float] = (0.0, 0.0, 1.0),
    center: Sequence[float] | None = None,
    turns: int = 1,
    amplitude_A: float = 0.02,
    n_modes: int = 3,
    seed: int = 0,
) -> LoopPath:
    """``atoms`` turned ``turns`` full times about ``axis`` through ``center`` (default: the
    centroid) while deformed, and brought back to where they started.

    r(t) = c + R(turns·t) (r₀ − c + D(t)), D(t) = a Σ_{k=1..n_modes} sin(k t) u_k, with u_k
    random directions in the 3N coordinates (fixed by ``seed``) scaled so that the atom moved
    most by each moves ``amplitude_A`` Å; D(0) = D(2π) = 0, so the path is closed and smooth.
    ``turns = 0`` or ``amplitude_A = 0`` leave out the rotation or the deformation.

    The default amplitude is small on purpose: the work integrand of a neural network grows
    harmonics quickly with the deformation (tiny PaiNN, ethanol, 1000 points: the quadrature
    error of a conservative model's W is 1e-13 of ∮|dW| at 0.02 Å but 2e-7 at 0.05 Å).
    """
    if n_points < 8 or n_points % 2:
        raise InputError(f"a loop needs an even number of points, at least 8, got {n_points}")
    if turns < 0 or amplitude_A < 0 or n_modes < 0:
        raise InputError("turns, amplitude and n_modes must not be negative")
    if turns == 0 and (amplitude_A == 0 or n_modes == 0):
        raise InputError("the loop neither turns nor deforms: it has zero length")
    axis = np.asarray(axis, dtype=np.float64)
    if not np.isfinite(axis).all() or np.linalg.norm(axis) == 0:
        raise InputError(f"the rotation axis must be a finite non-zero vector, got {axis}")
    axis = axis / np.linalg.norm(axis)
    start = atoms.positions.astype(np.float64)
    c = start.mean(0) if center is None else np.asarray(center, dtype=np.float64)
    rng = np.random.default_rng(seed)
    modes = rng.normal(size=(n_modes, *start.shape))
    if n_modes:
        modes *= amplitude_A / np.linalg.norm(modes, axis=2).max(axis=1)[:, None, None]
    t = 2 * np.pi * np.arange(n_points) / n_points
    k = np.arange(1, n_modes + 1)
    displacement = np.einsum("mk,kni->mni", np.sin(np.outer(t, k)), modes)
    displacement_rate = np.einsum("mk,kni->mni", np.cos(np.outer(t, k)) * k, modes)
    body = start - c + displacement  # [M, N, 3], before the rotation
    K = _cross_matrix(axis)
    angle = turns * t
    # Rodrigues: R = I + sin θ K + (1 − cos θ) K²; dR/dt = turns · K R.
    R = np.eye(3) + np.sin(angle)[:, None, None] * K + (1 - np.cos(angle))[:, None, None] * (K @ K)
    rotated = np.einsum("mab,mnb->mna", R, body)
    positions = c + rotated
    tangents = turns * rotated @ K.T + np.einsum("mab,mnb->mna", R, displacement_rate)
    return LoopPath(positions=positions, tangents=tangents, structure=atoms.copy())


@dataclass
class LoopWork:
    """Work of the forces around a closed path.

    ``work_eV`` W = ∮ Σ_j f_j·dr_j, ``work_per_atom_eV`` W / n_atoms, ``path_length_A`` ∮ ‖dr‖
    (in the 3N-dimensional space of all coordinates), ``absolute_work_eV`` ∮ |Σ_j f_j·dr_j/dt| dt
    (the scale W is small against; zero only for forces perpendicular to the path everywhere),
    ``quadrature_error_eV`` |W − W_half|, W_half the same rule on every other point: the error
    of the half rule, far above that of the full one when the points resolve the integrand (so
    a W well above it is real, and a W near it calls for more points),
    ``parameter`` t_m [M] rad and ``cumulative_work_eV`` [M] (work done from t = 0 up to t_m,
    for plots). The periodic trapezoid rule used is exact to rounding for smooth integrands
    once the points resolve the path's highest harmonic.
    """

    work_eV: float
    work_per_atom_eV: float
    path_length_A: float
    absolute_work_eV: float
    quadrature_error_eV: float
    n_atoms: int
    parameter: np.ndarray
    cumulative_work_eV: np.ndarray


#: Atoms of the path's points evaluated together in one pass. Memory grows with them (a
#: conservative model keeps the graph of the pass): 200 points of a 64-water box (38 400 atoms)
#: took more than 21 GB with a small PaiNN.
LOOP_ATOMS_PER_PASS = 2000


def closed_loop_work(
    source: Potential | ForceFunction,
    path: LoopPath,
    forces: str = "conservative",
    atoms_per_pass: int = LOOP_ATOMS_PER_PASS,
) -> LoopWork:
    """W = ∮ Σ_j f_j·dr_j of a saved model's forces (``conservative`` or ``direct``) or any
    force function along ``path`` (:func:`rotation_deformation_loop`), evaluated as many
    points of the path at a time as hold ``atoms_per_pass`` atoms (at least one point)."""
    if atoms_per_pass < 1:
        raise InputError(f"atoms_per_pass must be at least 1, got {atoms_per_pass}")
    evaluate = _as_force_function(source, forces)
    m, n = path.positions.shape[:2]
    chunk = max(1, atoms_per_pass // n)
    if m < 8 or m % 2:
        raise InputError(f"the loop needs an even number of points, at least 8, got {m}")
    if not (np.isfinite(path.positions).all() and np.isfinite(path.tangents).all()):
        raise InputError("the path has non-finite positions or tangents")
    power = np.empty(m)
    base = path.structure
    for first in range(0, m, chunk):
        frames = []
        for p in path.positions[first : first + chunk]:
            frame = base.copy()
            frame.positions = p
            frames.append(frame)
        batch = Batch.from_atoms(frames, dtype=_F64)
        positions = batch.positions.requires_grad_(True)  # a conservative model needs the graph
        work = Batch(positions, batch.numbers, batch.system_index, batch.cell, batch.pbc)
        f = evaluate(work).detach().numpy().reshape(len(frames), n, 3)
        if not np.isfinite(f).all():
            raise InputError(f"the forces are not finite on the path near point {first}")
        power[first : first + len(frames)] = np.einsum(
            "mni,mni->m", f, path.tangents[first : first + len(frames)]
        )
    dt = 2 * np.pi / m
    # Periodic trapezoid rule; the cumulative sum is for plots (its end is W).
    cumulative = np.cumsum(power) * dt
    speed = np.linalg.norm(path.tangents.reshape(m, -1), axis=1)
    return LoopWork(
        work_eV=float(power.sum() * dt),
        work_per_atom_eV=float(power.sum() * dt / n),
        path_length_A=float(speed.sum() * dt),
        absolute_work_eV=float(np.abs(power).sum() * dt),
        quadrature_error_eV=float(abs(power.sum() * dt - power[::2].sum() * 2 * dt)),
        n_atoms=int(n),
        parameter=path.parameter,
        cumulative_work_eV=cumulative,
    )
