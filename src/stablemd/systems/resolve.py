"""Which system a command runs: one named, the one a model recorded, or one derived from frames.

The order of preference is the user's name (``--system``, a built-in or a stored system), then
the system recorded in the model file (that of its training frames) unless the frames given
are of another composition, then a system derived from the frames given (``--starts``).
Frames are returned in the chosen system's atom order, matched by bond graph when they come in
another (:meth:`System.align`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from stablemd.core.errors import InputError
from stablemd.systems.molecules import MOLECULES
from stablemd.systems.registry import get_system
from stablemd.systems.system import System

#: Key of the system record in a model file's metadata.
METADATA_KEY = "system"


@dataclass
class ResolvedSystem:
    """The system, the frames in its atom order (None: none given), the order used
    (``frame[order]``; None: they already were in it) and where the system came from."""

    system: System
    frames: list[Atoms] | None
    order: np.ndarray | None
    origin: str


def recorded_system(model_metadata: dict) -> System | None:
    """The system a model file records (of its training frames), or None."""
    record = model_metadata.get(METADATA_KEY)
    return System.from_record(record) if record else None


def record_training_system(frames: list[Atoms], source: str) -> dict | None:
    """The record of the system of a model's training frames (see :meth:`System.record`), or
    None when they hold no single system (several molecules, no topology). Frames of a named
    system (``info["system"]``, as ``data generate`` writes) in its atom order and with its
    bonds keep its named dihedrals (alanine dipeptide's φ and ψ)."""
    named = {a.info.get("system") for a in frames}
    name = named.pop() if len(named) == 1 and None not in named else Path(source).stem
    try:
        system = System.from_frames(str(name), frames, source)
    except InputError:
        return None
    system.dihedrals = _named_dihedrals(system)
    return system.record()


def _named_dihedrals(derived: System) -> dict[str, tuple[int, int, int, int]]:
    """The dihedrals of the built-in molecule named like ``derived`` when its atoms and bonds
    are ``derived``'s in the same order; none otherwise (only molecules name dihedrals, and
    building a water box to find none would cost seconds)."""
    if not MOLECULES.get(derived.name, (None, {}))[1]:
        return {}
    known = get_system(derived.name)
    same_atoms = np.array_equal(known.atoms.numbers, derived.atoms.numbers)
    same_bonds = same_atoms and np.array_equal(known.bonds, derived.bonds)
    return dict(known.dihedrals) if same_bonds else {}


def _same_composition(system: System, atoms: Atoms) -> bool:
    return sorted(system.atoms.numbers.tolist()) == sorted(atoms.numbers.tolist())


def resolve_system(
    name: str | None,
    frames: list[Atoms] | None = None,
    source: str | None = None,
    model_metadata: dict | None = None,
    params: dict | None = None,
    model_name: str = "the model",
) -> ResolvedSystem:
    """The system of a command: ``name`` (with ``params``), else the one ``model_metadata``
    records (unless ``frames`` are of another composition), else derived from ``frames`` (read
    from ``source``); ``frames`` are returned in its atom order. Raises :class:`InputError`
    when there is nothing to take it from."""
    recorded = recorded_system(model_metadata or {}) if name is None else None
    if recorded is not None and frames and not _same_composition(recorded, frames[0]):
        recorded = None  # frames of another structure than the training frames': theirs
    if name is not None:
        system, origin = get_system(name, **(params or {})), f"--system {name}"
    elif recorded is not None:
        system, origin = recorded, f"the training frames recorded in {model_name}"
    elif frames is not None:
        system = System.from_frames(Path(str(source)).stem, frames, str(source))
        origin = f"derived from {source}"
    else:
        raise InputError(
            f"--system: not given, and {model_name} records no system (trained before models "
            "recorded one) and no frames were given: name a system or give --starts"
        )
    if frames is None:
        return ResolvedSystem(system, None, None, origin)
    aligned, order = system.align(frames, str(source))
    return ResolvedSystem(system, aligned, order, origin)
