"""Bond topology from structures: derived from covalent radii, checked across frames, and
matched between two atom orders by graph isomorphism.

Bonds are pairs closer than ``BOND_SCALE`` × the sum of their covalent radii (ASE's
``natural_cutoffs`` and ``neighbor_list``, minimum image in periodic cells). A frame contradicts
a topology when one of its bonds is longer than ``BREAK_SCALE`` × that sum or a pair that is not
a bond is closer than ``BOND_SCALE`` × it; the margin between the two keeps a hot but intact
molecule from being read as another one. Atom orders are matched with networkx's VF2 on the bond
graphs (elements as node labels), molecule by molecule: like molecules are paired by the
assignment of least total distance between their centres, and among the equivalent matches of
a molecule (a methyl group's hydrogens, say) the one that puts the frame closest to the
reference (RMSD after the best rotation; in periodic cells after centring only) is taken, so
the choice does not depend on the order the atoms came in.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice

import networkx as nx
import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from ase.neighborlist import natural_cutoffs, neighbor_list
from networkx.algorithms.isomorphism import GraphMatcher, categorical_node_match
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

from stablemd.core.errors import InputError

#: Scale on the sum of covalent radii below which two atoms count as bonded.
BOND_SCALE = 1.2
#: Scale beyond which a bond of the reference counts as broken in another frame.
BREAK_SCALE = 1.5
#: Scale below which two atoms are too close for any topology (a clash, a duplicated atom).
CLASH_SCALE = 0.5
#: Equivalent matches of one molecule tried when choosing the closest (3 methyl groups: 216).
MAX_MATCHES = 20000


def find_bonds(atoms: Atoms, scale: float = BOND_SCALE) -> np.ndarray:
    """Pairs (i < j) closer than ``scale`` × the sum of their covalent radii [n_bonds, 2]."""
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=scale))
    keep = i < j
    return np.unique(np.stack([i[keep], j[keep]], axis=1), axis=0).reshape(-1, 2)


def _pairs_within(atoms: Atoms, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) closer than ``scale`` × their covalent radii sum, and their distances (Å)."""
    i, j, d = neighbor_list("ijd", atoms, natural_cutoffs(atoms, mult=scale))
    keep = i < j
    return i[keep], j[keep], d[keep]


def _atom(atoms: Atoms, index: int) -> str:
    return f"{index} ({atoms.get_chemical_symbols()[index]})"


def check_no_clash(atoms: Atoms, where: str) -> None:
    """Refuse a frame with two atoms closer than ``CLASH_SCALE`` × their covalent radii sum,
    naming ``where`` (file and frame) and the atoms."""
    i, j, d = _pairs_within(atoms, CLASH_SCALE)
    if len(i):
        k = int(np.argmin(d))
        limit = CLASH_SCALE * sum(natural_cutoffs(atoms[[int(i[k]), int(j[k])]]))
        raise InputError(
            f"{where}: atoms {_atom(atoms, int(i[k]))} and {_atom(atoms, int(j[k]))} are "
            f"{d[k]:.2f} Å apart, closer than half their covalent radii ({limit:.2f} Å): "
            "no bond topology can be derived"
        )


def check_same_topology(frames: Sequence[Atoms], bonds: np.ndarray, source: str) -> None:
    """Refuse the first frame of ``source`` whose bonds contradict ``bonds`` (of frame 0): a
    clash, a bond stretched beyond ``BREAK_SCALE``, or a new bond within ``BOND_SCALE``."""
    for index, atoms in enumerate(frames):
        where = f"{source}: frame {index}"
        check_no_clash(atoms, where)
        if index == 0:
            continue
        contradiction = topology_contradiction(atoms, bonds)
        if contradiction is not None:
            raise InputError(
                f"{where}: {contradiction}: the fragments bond differently between frames, so "
                "no one topology fits them"
            )


def broken_bond(atoms: Atoms, bonds: np.ndarray) -> str | None:
    """Which bond of ``bonds`` ``atoms`` stretch beyond ``BREAK_SCALE``, or None."""
    known = {(int(a), int(b)) for a, b in bonds}
    i, j, _ = _pairs_within(atoms, BREAK_SCALE)
    broken = sorted(known - set(zip(i.tolist(), j.tolist(), strict=True)))
    if not broken:
        return None
    a, b = broken[0]
    length = atoms.get_distance(a, b, mic=bool(atoms.pbc.any()))
    return (
        f"the bond of atoms {_atom(atoms, a)} and {_atom(atoms, b)} in frame 0 is broken "
        f"({length:.2f} Å)"
    )


def topology_contradiction(atoms: Atoms, bonds: np.ndarray) -> str | None:
    """How ``atoms`` contradict the topology ``bonds`` (a new bond within ``BOND_SCALE``, a bond
    stretched beyond ``BREAK_SCALE``), or None when they keep it."""
    known = {(int(a), int(b)) for a, b in bonds}
    i, j, d = _pairs_within(atoms, BOND_SCALE)
    for a, b, distance in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
        if (a, b) not in known:
            return (
                f"atoms {_atom(atoms, a)} and {_atom(atoms, b)} are bonded ({distance:.2f} Å) "
                "but not in frame 0"
            )
    return broken_bond(atoms, bonds)


def bond_graph(numbers: Sequence[int], bonds: np.ndarray) -> nx.Graph:
    """The bond graph: one node per atom (attribute ``Z``), one edge per bond."""
    graph = nx.Graph()
    graph.add_nodes_from((i, {"Z": int(z)}) for i, z in enumerate(numbers))
    graph.add_edges_from((int(a), int(b)) for a, b in bonds)
    return graph


def _whole(atoms: Atoms, members: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``members`` (Å) made whole across periodic boundaries and centred, and
    their centre."""
    positions = atoms.positions[members]
    if atoms.pbc.any():
        offsets = find_mic(positions - positions[0], atoms.cell, atoms.pbc)[0]
        positions = positions[0] + offsets
    centre = positions.mean(axis=0)
    return positions - centre, centre


def _distance(reference: np.ndarray, candidate: np.ndarray, rotate: bool) -> float:
    """Root sum of squared deviations (Å), after the best proper rotation when ``rotate``."""
    if rotate and len(reference) > 1:
        rotation, _ = Rotation.align_vectors(reference, candidate)
        candidate = rotation.apply(candidate)
    return float(np.sqrt(((reference - candidate) ** 2).sum()))


def _molecules(graph: nx.Graph) -> dict[str, list[list[int]]]:
    """Connected components (sorted atom lists) grouped by a hash of their labelled graph."""
    groups: dict[str, list[list[int]]] = {}
    for component in sorted((sorted(c) for c in nx.connected_components(graph)), key=min):
        key = nx.weisfeiler_lehman_graph_hash(graph.subgraph(component), node_attr="Z")
        groups.setdefault(key, []).append(component)
    return groups


def _pair_molecules(
    reference: Atoms, ours: list[list[int]], frame: Atoms, theirs: list[list[int]]
) -> list[tuple[list[int], list[int]]]:
    """Pairs of like molecules, the frame's closest to the reference's by centre (minimum
    image; an assignment, so it does not depend on the order they came in)."""
    if len(ours) == 1:
        return [(ours[0], theirs[0])]
    ours_centres = np.array([_whole(reference, m)[1] for m in ours])
    theirs_centres = np.array([_whole(frame, m)[1] for m in theirs])
    shifts = (theirs_centres[None] - ours_centres[:, None]).reshape(-1, 3)
    if reference.pbc.any():
        shifts = find_mic(shifts, reference.cell, reference.pbc)[0]
    cost = np.linalg.norm(shifts, axis=1).reshape(len(ours), len(theirs))
    rows, columns = linear_sum_assignment(cost)
    return [(ours[r], theirs[c]) for r, c in zip(rows, columns, strict=True)]


def match_atom_order(
    reference: Atoms, reference_bonds: np.ndarray, frame: Atoms, frame_bonds: np.ndarray
) -> np.ndarray | None:
    """``order`` [n_atoms] with ``frame[order]`` in the atom order of ``reference`` (same elements,
    same bond graph), or None when the bond graphs are not isomorphic. Like molecules are
    paired by position, and within a molecule the closest equivalent match is taken."""
    if len(reference) != len(frame) or len(reference_bonds) != len(frame_bonds):
        return None
    ours = bond_graph(reference.numbers, reference_bonds)
    theirs = bond_graph(frame.numbers, frame_bonds)
    ours_groups, theirs_groups = _molecules(ours), _molecules(theirs)
    if {k: len(v) for k, v in ours_groups.items()} != {k: len(v) for k, v in theirs_groups.items()}:
        return None
    same_element = categorical_node_match("Z", None)
    rotate = not reference.pbc.any()
    order = np.empty(len(reference), dtype=int)
    for key, molecules in ours_groups.items():
        for mine, candidate in _pair_molecules(reference, molecules, frame, theirs_groups[key]):
            matcher = GraphMatcher(ours.subgraph(mine), theirs.subgraph(candidate), same_element)
            matches = list(islice(matcher.isomorphisms_iter(), MAX_MATCHES))
            if not matches:
                return None
            target = _whole(reference, mine)[0]
            best = min(
                matches,
                key=lambda m: _distance(target, _whole(frame, [m[i] for i in mine])[0], rotate),
            )
            order[mine] = [best[i] for i in mine]
    return order


def describe_order(order: np.ndarray, limit: int = 24) -> str:
    """``order`` as text for a person: the moved atoms as ``system←frame`` pairs (the first
    ``limit`` of them, then how many moved in all)."""
    moved = [f"{k}←{int(i)}" for k, i in enumerate(order) if k != i]
    if not moved:
        return "identity"
    more = f", … ({len(moved)} atoms moved)" if len(moved) > limit else ""
    return ", ".join(moved[:limit]) + more
