"""Fingerprints of frames by content, so a copied, moved or regenerated file is recognised and a
stored result is never reused for other inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from ase import Atoms

#: Positions are rounded to this many decimals (Å) before hashing whole sets of frames
#: (:func:`frames_fingerprint`, :func:`labelled_frames_fingerprint`). A copy of a file agrees; a
#: set written to text and read back (extended XYZ keeps 8 decimals) agrees unless one of its
#: numbers lies within that precision of a rounding boundary, which in a large set is likely.
#: These fingerprints decide whether a stored result may be reused, so a false "different" only
#: refuses a reuse; a set is never taken for another.
DECIMALS = 5
#: Energies (eV) and forces (eV/Å) are rounded to this many decimals in
#: :func:`labelled_frames_fingerprint`.
LABEL_DECIMALS = 6
#: :func:`frame_fingerprint` rounds positions to this many decimals (Å): frames closer than that
#: are the same structure.
FRAME_DECIMALS = 4
#: Copies of a frame whose positions differ by at most this (Å) are recognised as the same frame
#: by :func:`frame_fingerprint_candidates` (extended XYZ keeps 8 decimals: 5e-9 Å).
COPY_TOLERANCE_A = 1e-8
#: At most this many coordinates near a rounding boundary are tried both ways (2^16 hashes).
MAX_AMBIGUOUS = 16


def _rounded(values, decimals: int) -> bytes:
    return (np.round(np.asarray(values, dtype=np.float64), decimals) + 0.0).tobytes()


def _update(digest, atoms: Atoms) -> None:
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update(_rounded(atoms.positions, DECIMALS))


def _frame_hash(numbers: np.ndarray, grid_positions: np.ndarray) -> str:
    digest = hashlib.sha256(np.asarray(numbers, dtype=np.int64).tobytes())
    digest.update(grid_positions.astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


def frame_fingerprint(atoms: Atoms) -> str:
    """A short (16 hex digits) SHA-256 of one frame's atomic numbers and positions (rounded to
    ``FRAME_DECIMALS``): the identity of a structure in any file. Find a frame's fingerprint in a
    recorded set with :func:`frame_fingerprint_candidates`, which tolerates a text round trip."""
    grid = np.round(np.asarray(atoms.positions, dtype=np.float64) * 10**FRAME_DECIMALS)
    return _frame_hash(atoms.numbers, grid)


def frame_fingerprint_candidates(atoms: Atoms, tolerance: float = COPY_TOLERANCE_A) -> list[str]:
    """Every :func:`frame_fingerprint` a frame within ``tolerance`` (Å, per coordinate) of
    ``atoms`` can have, its own first.

    Rounding puts two copies that differ by 1e-9 Å on two sides of a boundary now and then (for
    a 9-atom molecule written to extended XYZ, about one frame in 1500); each coordinate that
    close to a boundary is tried rounded both ways, so a copy is always recognised (up to
    ``MAX_AMBIGUOUS`` such coordinates per frame; beyond that only the first are tried).
    """
    scaled = np.asarray(atoms.positions, dtype=np.float64) * 10**FRAME_DECIMALS
    grid = np.round(scaled)
    margin = tolerance * 10**FRAME_DECIMALS
    distance_to_boundary = np.abs(np.abs(scaled - np.floor(scaled)) - 0.5)
    ambiguous = np.argwhere(distance_to_boundary <= margin)[:MAX_AMBIGUOUS]
    candidates = [_frame_hash(atoms.numbers, grid)]
    for mask in range(1, 2 ** len(ambiguous)):
        variant = grid.copy()
        for bit, (i, j) in enumerate(ambiguous):
            if mask >> bit & 1:
                variant[i, j] += 1.0 if grid[i, j] < scaled[i, j] else -1.0
        candidates.append(_frame_hash(atoms.numbers, variant))
    return candidates


def frames_fingerprint(frames: Sequence[Atoms]) -> str:
    """SHA-256 of the atomic numbers and positions of ``frames``, in order."""
    digest = hashlib.sha256()
    for atoms in frames:
        _update(digest, atoms)
    return digest.hexdigest()


def labelled_frames_fingerprint(frames: Sequence[Atoms]) -> str:
    """SHA-256 of everything of ``frames`` (in order) that training depends on: atomic numbers,
    positions, cell, periodicity, and the energy and forces of their calculators (when they
    have one). A copy of a data set agrees (see ``DECIMALS`` for text round trips); the same
    structures with other labels do not."""
    digest = hashlib.sha256()
    for atoms in frames:
        _update(digest, atoms)
        digest.update(_rounded(atoms.cell.array, DECIMALS))
        digest.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
        results = atoms.calc.results if atoms.calc is not None else {}
        for name in ("energy", "forces"):
            if name in results:
                digest.update(name.encode())
                digest.update(_rounded(results[name], LABEL_DECIMALS))
    return digest.hexdigest()
