"""Fingerprints of frames by content, so a copied, moved or regenerated file is recognised and a
stored result is never reused for other inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from ase import Atoms

#: Positions are rounded to this many decimals (Å) before hashing, so a frame written to text
#: (extxyz keeps 8) and read back has the same fingerprint.
DECIMALS = 5


def _update(digest, atoms: Atoms) -> None:
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    positions = np.round(np.asarray(atoms.positions, dtype=np.float64), DECIMALS) + 0.0
    digest.update(positions.tobytes())


def frame_fingerprint(atoms: Atoms) -> str:
    """A short (16 hex digits) SHA-256 of one frame's atomic numbers and positions."""
    digest = hashlib.sha256()
    _update(digest, atoms)
    return digest.hexdigest()[:16]


def frames_fingerprint(frames: Sequence[Atoms]) -> str:
    """SHA-256 of the atomic numbers and positions of ``frames``, in order."""
    digest = hashlib.sha256()
    for atoms in frames:
        _update(digest, atoms)
    return digest.hexdigest()
