"""Backbone dihedrals φ, ψ and how much of the Ramachandran plane a set of structures covers.

Angles are degrees in [−180, 180), the Ramachandran convention; the sign is IUPAC's (and
ASE's, whose :func:`ase.geometry.get_dihedrals` computes them): looking along the bond j → k
of the quadruple (i, j, k, l), the angle is positive when i must turn clockwise to eclipse l.

Coverage (the uncertainty-biased MD paper's metric for alanine dipeptide, with METHODS §2's
parameters: a quadtree over (φ, ψ) of depth 5, a cell at depth d weighing 1/4^d): the periodic
square [−180°, 180°)² is the root cell; every cell holding a point is split into four, down to
depth ``depth``; the coverage is the summed weight 1/4^d of the occupied leaves, i.e. the area
fraction of the plane inside leaves that hold a point. Refining only where points are, every
occupied leaf sits at the full depth, so the coverage equals the fraction of the 2^depth ×
2^depth grid cells (11.25° wide at depth 5) holding at least one point; that is how it is
computed. Cells are half-open, ``[a, b)``, and the angles periodic: φ = 180° and φ = −180° are
one angle and share a cell. (The paper's full text was not available here: this exact reading of
"weighted quadtree, depth 5, weight 1/4^depth" is the toolkit's, see docs/alanine_dipeptide.md.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.geometry import find_mic, get_dihedrals

from stablemd.core.errors import InputError
from stablemd.core.files import atomic_write

#: Quadtree depth of the coverage (METHODS §2): 4^5 = 1024 cells of 11.25° × 11.25°.
COVERAGE_DEPTH = 5
#: Names of the backbone dihedrals in ``System.dihedrals``.
BACKBONE = ("phi", "psi")
#: |(j − i) × (k − j)| (Å²) below which three atoms count as collinear: no dihedral exists.
COLLINEAR_A2 = 1e-8


def wrap_degrees(angles) -> np.ndarray:
    """Angles (degrees) mapped into [−180, 180)."""
    return (np.asarray(angles, dtype=float) + 180.0) % 360.0 - 180.0


def _positions_and_boxes(frames) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray] | None]]:
    """Positions [F, N, 3] Å and, per frame, (cell, pbc) when periodic (None otherwise)."""
    if len(frames) == 0:
        raise InputError("no frames to take dihedral angles of")
    if isinstance(frames, np.ndarray) or not isinstance(frames[0], Atoms):
        positions = np.asarray(frames, dtype=float)
        if positions.ndim != 3 or positions.shape[-1] != 3:
            raise InputError(f"positions must be [n_frames, n_atoms, 3], got {positions.shape}")
        return positions, [None] * len(positions)
    sizes = {len(atoms) for atoms in frames}
    if len(sizes) > 1:
        raise InputError(f"frames differ in their number of atoms ({sorted(sizes)})")
    positions = np.stack([atoms.positions for atoms in frames])
    boxes = [(atoms.cell.array, atoms.pbc) if atoms.pbc.any() else None for atoms in frames]
    return positions, boxes


def dihedral_angles(frames: Sequence[Atoms] | np.ndarray, atoms4: Sequence[int]) -> np.ndarray:
    """Dihedral angle [F] (degrees, [−180, 180)) of atoms ``atoms4`` = (i, j, k, l) in every frame
    (ASE Atoms, minimum image where periodic, or positions [F, N, 3] Å)."""
    quad = [int(i) for i in atoms4]
    positions, boxes = _positions_and_boxes(frames)
    n_atoms = positions.shape[1]
    if len(quad) != 4 or len(set(quad)) != 4 or not all(0 <= i < n_atoms for i in quad):
        raise InputError(f"dihedral atoms {tuple(quad)}: need 4 distinct atoms of {n_atoms}")
    p = positions[:, quad]  # [F, 4, 3]
    bad = np.flatnonzero(~np.isfinite(p).all(axis=(1, 2)))
    if len(bad):
        raise InputError(f"frame {bad[0]}: non-finite positions of dihedral atoms {tuple(quad)}")
    chain = np.diff(p, axis=1)  # [F, 3, 3]: j − i, k − j, l − k
    for f, box in enumerate(boxes):
        if box is not None:
            chain[f] = find_mic(chain[f], *box)[0]
    planes = np.cross(chain[:, :2], chain[:, 1:])  # normals of (i, j, k) and (j, k, l)
    degenerate = np.flatnonzero((np.linalg.norm(planes, axis=-1) < COLLINEAR_A2).any(axis=1))
    if len(degenerate):
        raise InputError(
            f"frame {degenerate[0]}: three atoms of dihedral {tuple(quad)} are collinear "
            "(no dihedral angle)"
        )
    return wrap_degrees(get_dihedrals(chain[:, 0], chain[:, 1], chain[:, 2]))


def phi_psi(frames: Sequence[Atoms] | np.ndarray, system) -> tuple[np.ndarray, np.ndarray]:
    """φ and ψ [F] (degrees) of ``frames`` in the atom order of ``system`` (a
    :class:`~stablemd.systems.system.System` naming ``phi`` and ``psi`` in its dihedrals)."""
    missing = [name for name in BACKBONE if name not in system.dihedrals]
    if missing:
        raise InputError(f"system {system.name!r} names no {missing[0]} dihedral")
    positions, _ = _positions_and_boxes(frames)
    if positions.shape[1] != len(system.atoms):
        raise InputError(
            f"frames have {positions.shape[1]} atoms, the {system.name} system {len(system.atoms)}"
        )
    phi, psi = (dihedral_angles(frames, system.dihedrals[name]) for name in BACKBONE)
    return phi, psi


def occupied_cells(phi, psi, depth: int = COVERAGE_DEPTH) -> np.ndarray:
    """Distinct quadtree cells [n, 2] (column of φ, row of ψ, each 0 … 2^depth − 1) at ``depth``
    that hold at least one of the points (degrees; any range, taken modulo 360)."""
    if int(depth) != depth or depth < 0:
        raise InputError(f"the quadtree depth must be a whole number ≥ 0, got {depth}")
    phi, psi = np.ravel(phi).astype(float), np.ravel(psi).astype(float)
    if phi.shape != psi.shape:
        raise InputError(f"{len(phi)} φ angles but {len(psi)} ψ angles")
    if not (np.isfinite(phi).all() and np.isfinite(psi).all()):
        raise InputError("non-finite φ or ψ angles have no cell")
    n = 2 ** int(depth)
    # wrapping first puts 180° into the cell of −180°; the modulo catches rounding up to n
    cells = np.floor((wrap_degrees(np.stack([phi, psi], axis=1)) + 180.0) / 360.0 * n)
    return np.unique(cells.astype(np.int64) % n, axis=0).reshape(-1, 2)


def quadtree_coverage(phi, psi, depth: int = COVERAGE_DEPTH) -> float:
    """Fraction in [0, 1] of the (φ, ψ) plane covered by the points: the summed weight 1/4^depth
    of the occupied leaves of the quadtree refined where points are (see the module note)."""
    return len(occupied_cells(phi, psi, depth)) / 4 ** int(depth)


def ramachandran_coverage(frames, system, depth: int = COVERAGE_DEPTH) -> dict | None:
    """The coverage metric of ``frames`` of ``system``, for a loop to log per step:
    ``{"coverage": float, "n": frames, "depth": depth}``; None when ``system`` names no φ and ψ."""
    if not all(name in system.dihedrals for name in BACKBONE):
        return None
    phi, psi = phi_psi(frames, system)
    return {"coverage": quadtree_coverage(phi, psi, depth), "n": len(phi), "depth": int(depth)}


def ramachandran_plot(
    sampled: tuple[np.ndarray, np.ndarray],
    labelled: tuple[np.ndarray, np.ndarray] | None,
    path: str | Path,
    title: str = "",
    depth: int = COVERAGE_DEPTH,
    dpi: int = 150,
    landmarks: dict[str, tuple[float, float]] | None = None,
) -> Path:
    """Ramachandran plot to ``path`` (PNG): the ``sampled`` (φ, ψ) (degrees) as a light 2D
    histogram on the depth-``depth`` quadtree cells, the ``labelled`` ones as points, with their
    coverages in the legend; ``landmarks`` (name → (φ, ψ), e.g. known minima) as labelled
    crosses."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    n = 2 ** int(depth)
    edges = np.linspace(-180.0, 180.0, n + 1)
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.add_subplot()
    phi, psi = (wrap_degrees(np.ravel(x)) for x in sampled)
    coverage = quadtree_coverage(phi, psi, depth)  # refuses non-finite angles
    counts, _, _ = np.histogram2d(phi, psi, bins=[edges, edges])
    shown = np.ma.masked_equal(counts.T, 0)  # empty cells stay white
    norm = LogNorm(vmin=1, vmax=max(2.0, float(counts.max())))  # a single frame stays visible
    mesh = ax.pcolormesh(edges, edges, shown, cmap="Blues", norm=norm)
    fig.colorbar(mesh, ax=ax, label="sampled frames per cell", shrink=0.8)
    label = f"sampled: {len(phi)}, coverage {coverage:.3f}"
    ax.plot([], [], "s", color="tab:blue", alpha=0.6, label=label)
    if labelled is not None and len(np.ravel(labelled[0])):
        lphi, lpsi = (wrap_degrees(np.ravel(x)) for x in labelled)
        label = f"labelled: {len(lphi)}, coverage {quadtree_coverage(lphi, lpsi, depth):.3f}"
        ax.scatter(lphi, lpsi, s=7, color="tab:red", alpha=0.8, edgecolor="none", label=label)
    for name, (x, y) in (landmarks or {}).items():
        x, y = float(wrap_degrees(x)), float(wrap_degrees(y))
        ax.plot(x, y, "+", color="black", ms=9, mew=1.5)
        below = y > 150  # keep the name inside the frame
        offset = (4, -11) if below else (4, 4)
        ax.annotate(name, (x, y), xytext=offset, textcoords="offset points", fontsize=8)
    ticks = np.arange(-180, 181, 60)
    ax.set(xlim=(-180, 180), ylim=(-180, 180), xticks=ticks, yticks=ticks, aspect="equal")
    ax.set_xlabel("φ (°)")
    ax.set_ylabel("ψ (°)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize="small", framealpha=0.8)
    cells = f"cells {360 / n:g}° (quadtree depth {depth})"
    ax.set_title(f"{title}\n{cells}" if title else f"Ramachandran plot, {cells}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
