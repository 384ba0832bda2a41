"""Where a model has seen data: the shortest distance between each pair of elements in its
training frames, and a cheap check of a structure against it.

Training frames of MD at some temperature sample each bond and contact down to some shortest
length; closer than that the model has seen no label, and on the steep repulsive wall a model
fitted elsewhere may give any energy, which is how most MLIP trajectories collapse. A distance
more than ``MARGIN`` below the shortest of its element pair in the training frames is therefore
a structure the model does not know. The check is a neighbour list per structure, so it can run
at every force call. It does not see every novelty: an element pair is one number, so for a
model trained on single molecules a short contact between two molecules is judged by the
pair's bonded distance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.neighborlist import neighbor_list

#: Warn below this fraction of the shortest training distance of the element pair (a C–H bond
#: seen down to 0.95 Å warns below 0.86 Å; an O···O contact seen down to 2.4 Å below 2.16 Å).
MARGIN = 0.9


class OutsideTrainingWarning(UserWarning):
    """A structure is far from every training frame of the model."""


def pair_name(z1: int, z2: int) -> str:
    """``H-C``, ``C-O``: the two elements in order of atomic number."""
    low, high = sorted((int(z1), int(z2)))
    return f"{chemical_symbols[low]}-{chemical_symbols[high]}"


def _pairs(atoms: Atoms, cutoff: float):
    """Atom pairs i < j closer than ``cutoff`` (Å), with their distances."""
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    keep = i < j
    return i[keep], j[keep], d[keep]


def shortest_distances(frames: Iterable[Atoms], cutoff: float) -> dict[str, float]:
    """The shortest distance (Å, rounded down to 1e-4) of each element pair closer than
    ``cutoff`` in any of ``frames``; pairs never that close are absent."""
    shortest: dict[int, float] = {}
    for atoms in frames:
        i, j, d = _pairs(atoms, cutoff)
        if len(d) == 0:
            continue
        z = atoms.numbers
        low, high = np.minimum(z[i], z[j]), np.maximum(z[i], z[j])
        codes = low * 1000 + high
        for code in np.unique(codes):
            value = float(d[codes == code].min())
            shortest[int(code)] = min(shortest.get(int(code), np.inf), value)
    return {
        pair_name(code // 1000, code % 1000): float(np.floor(value * 1e4) / 1e4)
        for code, value in sorted(shortest.items())
    }


@dataclass
class CloseContact:
    """The shortest distance (Å) of an element pair, between atoms ``i`` and ``j``, and the
    shortest of that pair in the training frames (``None``: never within the cutoff)."""

    pair: str
    distance: float
    i: int
    j: int
    shortest_in_training: float | None

    def message(self) -> str:
        seen = (
            f"the shortest in the model's training frames is {self.shortest_in_training:.2f} Å"
            if self.shortest_in_training is not None
            else "the training frames have none within the model's cutoff"
        )
        return (
            f"{self.pair} distance {self.distance:.2f} Å (atoms {self.i} and {self.j}) is far "
            f"below what the model was trained on ({seen}); its energy and forces there are an "
            "extrapolation"
        )


def close_contacts(
    atoms: Atoms, shortest: dict[str, float], cutoff: float, margin: float = MARGIN
) -> list[CloseContact]:
    """Element pairs of ``atoms`` closer than ``margin`` times their shortest distance in the
    training frames (``shortest``, within ``cutoff``); one entry per pair, its closest atoms."""
    z = atoms.numbers
    present = sorted(set(z.tolist()))
    possible = [pair_name(a, b) for k, a in enumerate(present) for b in present[k:]]
    thresholds = [margin * shortest.get(name, cutoff) for name in possible]
    i, j, d = _pairs(atoms, max(thresholds))  # only as far as the largest threshold: cheap
    out = []
    names = np.array([pair_name(a, b) for a, b in zip(z[i], z[j], strict=True)], dtype=object)
    for name in sorted(set(names.tolist())):
        seen = shortest.get(name)
        threshold = margin * (cutoff if seen is None else seen)
        mask = (names == name) & (d < threshold)
        if mask.any():
            k = np.flatnonzero(mask)[np.argmin(d[mask])]
            out.append(CloseContact(name, float(d[k]), int(i[k]), int(j[k]), seen))
    return out
