"""Observables that StABlE trains against, and their reference values.

A training observable maps frames of one structure — ``positions`` [F, N, 3] Å, ``cell``
[F, 3, 3] and ``pbc`` [F, 3] (or None) — to one row per sample: [F, d] for a global observable
(a sample is a frame), [F, M, d] for a local one (a sample is a molecule of a frame, for the
localized estimator). Built-ins: ``h_r`` (smeared distribution of interatomic distances),
``bond_lengths`` (every bond), ``rdf`` (element-resolved RDFs, concatenated), and
``molecule_bond_length`` (local: mean bond length of each molecule, e.g. O–H in water). Any
``module:function`` with the same signature is a user observable.

References: the observable averaged over a set of frames (e.g. the training set), optionally
reweighted from the temperature of those frames to another one (METHODS §1, N_eff reported),
or read from an ``.npz`` file with a ``reference`` array.
"""

from __future__ import annotations

import importlib
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from stablemd.analysis.geometry import bond_lengths
from stablemd.analysis.reweighting import reweight
from stablemd.analysis.structure import (
    DR_A,
    SIGMA_A,
    distance_histogram_h_r,
    radial_distribution,
    stack_frames,
)
from stablemd.core.errors import InputError
from stablemd.systems.system import System

_F64 = torch.float64


@dataclass
class TrainingObservable:
    """``compute(positions, cell, pbc)`` → [F, d] (global) or [F, M, d] (``local``)."""

    name: str
    compute: Callable[..., torch.Tensor]
    local: bool = False

    def __call__(self, positions, cell=None, pbc=None) -> torch.Tensor:
        values = self.compute(torch.as_tensor(positions, dtype=_F64), cell, pbc)
        expected = 3 if self.local else 2
        if values.dim() != expected or values.shape[0] != len(positions):
            kind = "[n_frames, n_molecules, d]" if self.local else "[n_frames, d]"
            raise InputError(
                f"observable {self.name}: returned {list(values.shape)}, expected {kind}"
            )
        return values

    def samples(self, positions, cell=None, pbc=None) -> torch.Tensor:
        """One row per sample [n_samples, d]; frame-major for local observables."""
        values = self(positions, cell, pbc)
        return values.reshape(-1, values.shape[-1])


def _h_r(r_max: float, dr: float, sigma: float):
    def compute(positions, cell, pbc):
        return distance_histogram_h_r(positions, r_max, dr, sigma, cell, pbc)[1]

    return compute


def _bond_lengths(bonds):
    def compute(positions, cell, pbc):
        return bond_lengths(positions, bonds, cell, pbc)

    return compute


def _rdf(numbers, r_max: float, dr: float, sigma: float):
    def compute(positions, cell, pbc):
        _, rdfs = radial_distribution(positions, numbers, cell, pbc, r_max, dr, sigma)
        return torch.cat([rdfs[pair] for pair in sorted(rdfs)], dim=-1)

    return compute


def _molecule_bond_length(bonds, molecule_index):
    bonds = torch.as_tensor(np.asarray(bonds), dtype=torch.long).reshape(-1, 2)
    molecules = torch.as_tensor(np.asarray(molecule_index), dtype=torch.long)
    owner = molecules[bonds[:, 0]]
    n_molecules = int(molecules.max()) + 1
    per_molecule = torch.bincount(owner, minlength=n_molecules).to(_F64)
    if bool((per_molecule == 0).any()):
        raise InputError("molecule_bond_length: a molecule has no bonds")

    def compute(positions, cell, pbc):
        lengths = bond_lengths(positions, bonds, cell, pbc)  # [F, n_bonds]
        sums = lengths.new_zeros(lengths.shape[0], n_molecules).index_add(1, owner, lengths)
        return (sums / per_molecule)[..., None]

    return compute


OBSERVABLES = ("h_r", "bond_lengths", "rdf", "molecule_bond_length")


def make_observable(
    name: str,
    system: System,
    r_max: float = 10.0,
    dr: float = DR_A,
    sigma: float = SIGMA_A,
) -> TrainingObservable:
    """A built-in observable of ``system`` (see :data:`OBSERVABLES`) or ``module:function``.

    ``r_max``, ``dr`` and ``sigma`` (Å) set the bins of ``h_r`` and ``rdf``.
    """
    numbers = torch.as_tensor(system.atoms.numbers, dtype=torch.long)
    if name == "h_r":
        return TrainingObservable(name, _h_r(r_max, dr, sigma))
    if name == "bond_lengths":
        return TrainingObservable(name, _bond_lengths(system.bonds))
    if name == "rdf":
        return TrainingObservable(name, _rdf(numbers, r_max, dr, sigma))
    if name == "molecule_bond_length":
        compute = _molecule_bond_length(system.bonds, system.molecule_index)
        return TrainingObservable(name, compute, local=True)
    if ":" in name:
        module_name, _, function_name = name.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), function_name)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"observable {name!r}: cannot import it ({exc})") from None
        return TrainingObservable(name, function)
    known = ", ".join(OBSERVABLES)
    raise InputError(f"unknown observable {name!r}; choose one of {known} or module:function")


@dataclass
class ReferenceValue:
    """g_ref [d]; ``effective_samples`` is N_eff after reweighting (the frame count otherwise)."""

    value: torch.Tensor
    effective_samples: float
    source: str


def reference_from_frames(
    observable: TrainingObservable,
    frames: Sequence[Atoms],
    temperature_K: float | None = None,
    target_temperature_K: float | None = None,
    chunk: int = 64,
) -> ReferenceValue:
    """The observable averaged over ``frames``; with both temperatures given, reweighted from
    the frames' ``temperature_K`` to ``target_temperature_K`` using their labelled energies."""
    positions, _, cell, pbc = stack_frames(frames)
    periodic = bool(pbc.any())
    rows = []
    for start in range(0, len(frames), chunk):
        part = slice(start, start + chunk)
        box = (cell[part], pbc[part]) if periodic else (None, None)
        values = observable(positions[part], *box)
        rows.append(values.mean(1) if observable.local else values)  # local: mean per frame
    per_frame = torch.cat(rows)
    if temperature_K is None or target_temperature_K is None:
        return ReferenceValue(per_frame.mean(0), float(len(frames)), f"{len(frames)} frames")
    try:
        energies = torch.as_tensor([a.get_potential_energy() for a in frames], dtype=_F64)
    except RuntimeError:
        raise InputError("reweighting a reference needs frames with labelled energies") from None
    value, n_eff = reweight(per_frame, energies, temperature_K, target_temperature_K)
    source = f"{len(frames)} frames at {temperature_K:g} K reweighted to {target_temperature_K:g} K"
    return ReferenceValue(value, float(n_eff), source)


def reference_from_file(path: Path, size: int) -> ReferenceValue:
    """g_ref from the ``reference`` array of an ``.npz`` file; its length must be ``size``."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a readable .npz file (not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            value = torch.as_tensor(np.asarray(data["reference"], dtype=np.float64))
    except FileNotFoundError:
        raise InputError(f"{path}: no such reference file") from None
    except KeyError:
        raise InputError(f"{path}: no 'reference' array in the file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error):
        raise InputError(f"{path}: not a readable .npz file") from None
    if value.shape != (size,):
        raise InputError(f"{path}: 'reference' has shape {list(value.shape)}, expected [{size}]")
    if not bool(torch.isfinite(value).all()):
        raise InputError(f"{path}: 'reference' has non-finite values")
    return ReferenceValue(value, float("nan"), str(path))
