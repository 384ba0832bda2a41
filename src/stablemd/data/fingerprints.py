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
#: Energies (eV) and forces (eV/Å) are rounded to this many decimals in
#: :func:`labelled_frames_fingerprint`.
LABEL_DECIMALS = 6


def _rounded(values, decimals: int) -> bytes:
    return (np.round(np.asarray(values, dtype=np.float64), decimals) + 0.0).tobytes()


def _update(digest, atoms: Atoms) -> None:
    digest.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    digest.update(_rounded(atoms.positions, DECIMALS))


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


def labelled_frames_fingerprint(frames: Sequence[Atoms]) -> str:
    """SHA-256 of everything of ``frames`` (in order) that training depends on: atomic numbers,
    positions, cell, periodicity, and the energy and forces of their calculators (when they
    have one). Two copies of a data set, in a database or read back from extended XYZ, agree;
    the same structures with other labels do not."""
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
